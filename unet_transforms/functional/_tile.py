"""Cropping a window that may reach outside the image: crop first, then mirror."""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as tvF

from .._checks import check_dense, is_int
from ._mirror import MirrorMode, _mirror_pad_tensor, check_mode, mirror_index

__all__ = [
    "Box",
    "crop_tile",
    "kernel_for",
    "register_kernel",
    "spatial_shape",
    "to_tensor_region",
]

Box = tuple[tuple[int, int], ...]
"""Per-axis ``(start, stop)`` pairs in image coordinates (may reach outside the image)."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_AXES = {2: ("H", "W"), 3: ("D", "H", "W")}
_F = TypeVar("_F", bound=Callable[..., Any])

# Our own kernel registry: torchvision's ``register_kernel`` only accepts torchvision's
# functionals, so ours keep a table per functional, looked up along the input's MRO.
_KERNELS: dict[Callable[..., Any], dict[type, Callable[..., Any]]] = {}


def register_kernel(functional: Callable[..., Any], input_type: type) -> Callable[[_F], _F]:
    """Registers a kernel of one of this library's functionals for an input type.

    Use it to teach :func:`crop_tile` (and so every transform of this library) a custom
    :class:`torchvision.tv_tensors.TVTensor` subclass. The kernel receives the input
    and the functional's arguments and returns the transformed input.

    Args:
        functional: The functional, e.g. :func:`crop_tile`.
        input_type: The type the kernel handles (subclasses included).

    Returns:
        A decorator registering the kernel.

    Example:
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> class Heatmap(tv_tensors.Mask):
        ...     pass
        >>> @register_kernel(crop_tile, Heatmap)
        ... def _crop_heatmap(inpt, box, mode="reflect", fill=None):
        ...     out = crop_tile(inpt.as_subclass(torch.Tensor), box, mode, fill=0)
        ...     return tv_tensors.wrap(out, like=inpt)
        >>> crop_tile(Heatmap(torch.ones(1, 4, 4)), ((-1, 3), (0, 4))).sum().item()
        12.0
    """
    if functional not in _KERNELS:
        raise ValueError(
            f"functional must be one of {sorted(f.__name__ for f in _KERNELS)}, "
            f"got {getattr(functional, '__name__', functional)!r}"
        )
    if not isinstance(input_type, type):
        raise TypeError(f"input_type must be a type, got {input_type!r}")

    def decorator(kernel: _F) -> _F:
        _KERNELS[functional][input_type] = kernel
        return kernel

    return decorator


def kernel_for(functional: Callable[..., Any], input_type: type) -> Callable[..., Any] | None:
    """The kernel of ``functional`` for ``input_type``, or ``None`` when it has none.

    Looked up along the type's MRO as torchvision's ``_get_kernel`` does: a subclass of
    ``tv_tensors.Mask`` (or ``Image``, ``Video``, ...) gets its base class's kernel, but
    the walk stops at ``tv_tensors.TVTensor``, so that a tv_tensor subclass nobody
    registered a kernel for never falls back to the plain-tensor kernel (transforms pass
    it through untouched, as torchvision's do).

    Example:
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> class ClassLabels(tv_tensors.TVTensor):
        ...     pass
        >>> class WeightMap(tv_tensors.Mask):
        ...     pass
        >>> kernel_for(crop_tile, ClassLabels) is None
        True
        >>> kernel_for(crop_tile, WeightMap) is kernel_for(crop_tile, tv_tensors.Mask)
        True
    """
    table = _KERNELS[functional]
    for cls in input_type.__mro__:
        if cls in table:
            return table[cls]
        if cls is tv_tensors.TVTensor:
            break
    return None


def spatial_shape(inpt: Any, ndim: int, name: str = "inpt") -> tuple[int, ...]:
    """Spatial size (last ``ndim`` axes) of a tensor, tv_tensor, PIL image or array."""
    if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
        if ndim != 2:
            raise TypeError(f"{type(inpt).__name__} are 2-D; they cannot follow a {ndim}-D tile")
        return tuple(inpt.canvas_size)
    if isinstance(inpt, tv_tensors.Video) and ndim != 2:
        raise TypeError(
            f"tv_tensors.Video is 2-D (its axes are T, C, H, W); it cannot follow a {ndim}-D "
            "tile: pass volumes as plain tensors (C, D, H, W), tv_tensors.Image or Mask"
        )
    if isinstance(inpt, tv_tensors.Image) and ndim > 2 and inpt.ndim < ndim + 1:
        raise TypeError(
            f"a tv_tensors.Image following a {ndim}-D tile has a channel axis before its "
            f"{ndim} spatial axes, (C, D, H, W); got shape {tuple(inpt.shape)} (a 2-D image?)"
        )
    if isinstance(inpt, PIL.Image.Image):
        if ndim != 2:
            raise TypeError(f"PIL images are 2-D; they cannot follow a {ndim}-D tile")
        return (inpt.height, inpt.width)
    shape = getattr(inpt, "shape", None)
    if shape is None:
        raise TypeError(
            f"{name} must be a tensor, tv_tensor, PIL image or array with .shape, got "
            f"{type(inpt).__name__}"
        )
    if len(shape) < ndim:
        names = ", ".join(_AXES[ndim]) if ndim in _AXES else f"{ndim} spatial axes"
        raise ValueError(
            f"{name} must have at least {ndim} axes (..., {names}), got shape {tuple(shape)}"
        )
    return tuple(int(s) for s in shape[len(shape) - ndim :])


def as_box(box: object, name: str = "box") -> Box:
    """Validates a window: a non-empty sequence of ``(start, stop)`` int pairs.

    Errors name the argument ``name``.
    """
    if type(box) is tuple and box:  # the boxes of Tile records: checked at a glance
        for pair in box:
            if not (
                type(pair) is tuple
                and len(pair) == 2
                and type(pair[0]) is int
                and type(pair[1]) is int
                and _INT64_MIN <= pair[0] < pair[1] <= _INT64_MAX
            ):
                break
        else:
            return box
    if isinstance(box, str | bytes) or not isinstance(box, Sequence) or len(box) == 0:
        raise TypeError(
            f"{name} must be a sequence of (start, stop) int pairs, one per spatial axis, got {box!r}"
        )
    pairs = []
    for axis, pair in enumerate(box):
        if (
            isinstance(pair, str | bytes)
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not (is_int(pair[0]) and is_int(pair[1]))
        ):
            raise TypeError(
                f"{name} must hold (start, stop) int pairs, got {pair!r} for axis {axis}"
            )
        start, stop = operator.index(pair[0]), operator.index(pair[1])
        if stop <= start:
            raise ValueError(
                f"{name} must have stop > start, got ({start}, {stop}) on axis {axis}"
            )
        if start < _INT64_MIN or stop > _INT64_MAX:
            raise ValueError(
                f"{name} must hold int64 coordinates (within [-2**63, 2**63 - 1]), got "
                f"({start}, {stop}) on axis {axis}"
            )
        pairs.append((start, stop))
    return tuple(pairs)


class FillError(ValueError):
    """A fill value that the input's dtype cannot hold; :meth:`named` renames the argument."""

    def __init__(self, fill: object, dtype: object, expected: str, name: str = "fill") -> None:
        self.fill, self.dtype, self.expected = fill, dtype, expected
        shown = (
            repr(fill)
            if len(repr(fill)) <= 40
            else f"{repr(fill)[:20]}...({len(repr(fill))} digits)"
        )
        super().__init__(
            f"{name}={shown} does not fit the input's dtype {dtype}: expected {expected}"
        )

    def named(self, name: str) -> FillError:
        return FillError(self.fill, self.dtype, self.expected, name)


def check_fill_fits(fill: object, dtype: torch.dtype | np.dtype[Any]) -> None:
    """Raises unless ``fill`` is a number that ``dtype`` holds exactly (no wrap-around).

    Floating dtypes take NaN, infinities and finite numbers within their range; integer
    dtypes an integral value in their range; bool 0 or 1. ``dtype`` may be a torch or a
    numpy dtype (PIL images are checked against the numpy dtype they are stored in).
    """
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"fill must be None or a number, got {type(fill).__name__}")
    checked = dtype if isinstance(dtype, torch.dtype) else _torch_dtype(dtype)
    if checked.is_floating_point or checked.is_complex:
        largest = float(torch.finfo(checked).max)
        try:
            too_large = abs(float(fill)) > largest  # NaN compares False: it fits
        except OverflowError:  # an int beyond any Python float
            too_large = True
        if too_large:
            raise FillError(fill, dtype, f"a number within +-{largest:.6g}, inf or nan")
        return
    if checked == torch.bool:
        low, high, expected = 0, 1, "0 or 1"
    else:
        info = torch.iinfo(checked)
        low, high = int(info.min), int(info.max)
        expected = f"an integer in [{low}, {high}]"
    integral = isinstance(fill, numbers.Integral) or float(fill).is_integer()
    if not (integral and low <= fill <= high):  # type: ignore[operator]
        raise FillError(fill, dtype, expected)


def _torch_dtype(dtype: np.dtype[Any]) -> torch.dtype:
    """The torch dtype of a numpy dtype (byte order ignored)."""
    return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype


def _crop_then_mirror(
    x: Any, box: Sequence[tuple[int, int]], mode: MirrorMode
) -> torch.Tensor | None:
    """The window ``box`` of a tensor or array as a copy of its in-image part,
    mirror-padded, where every mirrored pixel comes from that part (every window inside
    the image or at its border, and every window holding the whole image), else ``None``.

    The path of nearly every tile, so it is kept to the few steps it needs.
    """
    if isinstance(x, torch.Tensor):
        if len(box) > x.ndim:
            return None  # for the message of the general path
        spatial: Sequence[int] = x.shape[x.ndim - len(box) :]
    else:
        spatial = spatial_shape(x, len(box))
    limit = 1 if mode == "reflect" else 0  # reflect does not repeat the edge pixel
    crop: list[slice] = []
    pads: list[tuple[int, int]] = []
    for (a, b), n in zip(box, spatial, strict=True):
        lo, hi = max(a, 0), min(b, n)
        before, after = lo - a, b - hi
        if hi <= lo or (
            (before or after)
            and not (lo == 0 and hi == n)  # the whole axis: mirrored again and again
            and max(before, after) > hi - lo - limit
        ):
            return None
        crop.append(slice(lo, hi))
        pads.append((before, after))
    region = to_tensor_region(x, crop)  # arrays: a copy already
    if any(before or after for before, after in pads):
        return _mirror_pad_tensor(region, tuple(pads), mode)
    return region.clone() if isinstance(x, torch.Tensor) else region


def to_tensor_region(x: Any, region: Sequence[slice]) -> torch.Tensor:
    """Reads ``x[..., *region]`` as a tensor; arrays read only that region (memmap, zarr)."""
    index: tuple[Any, ...] = (Ellipsis, *region)
    if isinstance(x, torch.Tensor):
        return x.as_subclass(torch.Tensor)[index]
    arr = torch_compatible(np.asarray(x[index]))
    # a private, writable copy: memmaps and read-only arrays must not be shared
    return torch.from_numpy(np.array(arr, copy=True, order="C"))


def _result_dtype(x: Any) -> np.dtype[Any]:
    """The numpy dtype an array-like's crop has (after :func:`torch_compatible`)."""
    return torch_compatible(np.empty(0, dtype=np.dtype(x.dtype))).dtype


def torch_compatible(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order (the only one torch has); dtype and values unchanged.

    uint16 and uint32 stay unsigned (torch.uint16/uint32), as tensors do: widening them
    to int32/int64 made ``v2.ToDtype(..., scale=True)`` divide by the wider type's
    maximum, 32768 times too dark for 16-bit images.
    """
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _crop_tensor(
    x: Any, box: Sequence[tuple[int, int]], mode: MirrorMode = "reflect", fill: float | None = None
) -> torch.Tensor:
    """Tensor/array kernel: the window ``box`` of the trailing axes, mirrored or filled outside.

    ``box`` has been validated by :func:`crop_tile`, the only way kernels are reached.
    """
    check_mode(mode)
    if fill is None:
        cropped = _crop_then_mirror(x, box, mode)
        if cropped is not None:
            return cropped
    spatial = spatial_shape(x, len(box))
    if 0 in spatial:
        raise ValueError(f"cannot crop from an empty image of shape {tuple(x.shape)}")
    lead = tuple(int(s) for s in x.shape[: len(x.shape) - len(box)])
    inside = [a >= 0 and b <= n for (a, b), n in zip(box, spatial, strict=True)]
    if fill is not None:
        check_fill_fits(fill, x.dtype if isinstance(x, torch.Tensor) else _result_dtype(x))
    if all(inside):
        region = to_tensor_region(x, [slice(a, b) for a, b in box])
        return region.clone() if isinstance(x, torch.Tensor) else region
    window = tuple(b - a for a, b in box)
    if fill is not None:
        # outside the image: the fill value; inside: a plain copy of the intersection
        src = to_tensor_region(
            x, [slice(max(a, 0), min(b, n)) for (a, b), n in zip(box, spatial, strict=True)]
        )
        # a float fill for float images: torch converts a big int through int64
        value = float(fill) if src.dtype.is_floating_point else fill
        out = torch.full((*lead, *window), value, dtype=src.dtype, device=src.device)
        if all(max(a, 0) < min(b, n) for (a, b), n in zip(box, spatial, strict=True)):
            dst = [
                slice(max(a, 0) - a, min(b, n) - a) for (a, b), n in zip(box, spatial, strict=True)
            ]
            out[(Ellipsis, *dst)] = src  # type: ignore[index]
        return out
    # a window reaching further than one reflection of its in-image part: crop the
    # smallest region holding every mirrored source pixel, then gather
    indices: list[torch.Tensor | None] = []
    region_slices = []
    for (a, b), n, ok in zip(box, spatial, inside, strict=True):
        if ok:
            indices.append(None)
            region_slices.append(slice(a, b))
            continue
        idx = mirror_index(range(a, b), n, mode)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        indices.append(idx - lo)
        region_slices.append(slice(lo, hi))
    out = to_tensor_region(x, region_slices)
    first = len(lead)
    for axis, gather in enumerate(indices):
        if gather is not None:
            out = out.index_select(first + axis, gather.to(out.device))
    return out


def crop_tile(
    inpt: Any,
    box: Sequence[tuple[int, int]],
    mode: MirrorMode = "reflect",
    fill: float | None = None,
) -> Any:
    """Crops a window of the trailing spatial axes, mirror-extrapolating outside the image.

    The window is read from the unpadded image: the cost is proportional to the
    window, not the image. Pixels outside the image are mirrored (as
    :func:`mirror_pad` would) or, with ``fill`` set, take that value.

    Supported inputs: plain tensors and ``Image``/``Video``/``Mask`` tv_tensors (any
    number of leading axes; ``len(box)`` trailing spatial axes), numpy arrays and
    array-likes with ``.shape`` and slicing (memmap, zarr, h5py; returned as a tensor,
    only the needed region is read), PIL images (returned as PIL), and 2-D
    ``BoundingBoxes``/``KeyPoints`` (translated, never mirrored; as torchvision's crop
    does, boxes are clamped to the window and key points outside it are kept, for
    ``v2.SanitizeBoundingBoxes``/``v2.SanitizeKeyPoints`` to remove).

    Args:
        inpt: The input.
        box: Per-axis ``(start, stop)`` window in image coordinates.
        mode: ``"reflect"`` or ``"symmetric"``.
        fill: Value for pixels outside the image (e.g. an ignore index for labels);
            ``None`` mirrors them.

    Returns:
        The window, of the same type as the input (arrays come back as tensors of the
        same dtype, in native byte order).

    Raises:
        TypeError: For unsupported input types.
        ValueError: For a box that does not match the input's spatial axes, an empty
            window or image, or an unknown mode.

    Example:
        >>> import torch
        >>> x = torch.arange(4).reshape(1, 4)
        >>> crop_tile(x, ((0, 1), (-2, 6)))
        tensor([[2, 1, 0, 1, 2, 3, 2, 1]])
        >>> crop_tile(x, ((0, 1), (-2, 6)), fill=-1)
        tensor([[-1, -1,  0,  1,  2,  3, -1, -1]])
    """
    box = as_box(box)
    if isinstance(inpt, torch.Tensor):
        check_dense(inpt, "inpt")
    kernel = kernel_for(crop_tile, type(inpt))
    if kernel is not None:
        return kernel(inpt, box, mode, fill)
    if isinstance(inpt, tv_tensors.TVTensor):
        raise TypeError(
            f"crop_tile has no kernel for {type(inpt).__name__}, a tv_tensor subclass: register "
            f"one with unet_transforms.functional.register_kernel(crop_tile, "
            f"{type(inpt).__name__}) (the transforms pass such inputs through untouched)"
        )
    if hasattr(inpt, "shape") and hasattr(inpt, "__getitem__"):
        return _crop_tensor(inpt, box, mode, fill)
    raise TypeError(
        f"inpt must be a tensor, tv_tensor, PIL image or array for crop_tile, got "
        f"{type(inpt).__name__}"
    )


_KERNELS[crop_tile] = {}


@register_kernel(crop_tile, torch.Tensor)
@register_kernel(crop_tile, tv_tensors.Image)
@register_kernel(crop_tile, tv_tensors.Video)
@register_kernel(crop_tile, tv_tensors.Mask)
def _crop_plain_or_tv_tensor(
    inpt: torch.Tensor, box: Box, mode: MirrorMode = "reflect", fill: float | None = None
) -> torch.Tensor:
    out = _crop_tensor(inpt.as_subclass(torch.Tensor), box, mode, fill)
    if isinstance(inpt, tv_tensors.TVTensor):
        wrapped: torch.Tensor = tv_tensors.wrap(out, like=inpt)
        return wrapped
    return out


@register_kernel(crop_tile, PIL.Image.Image)
def _crop_pil(
    inpt: PIL.Image.Image, box: Box, mode: MirrorMode = "reflect", fill: float | None = None
) -> PIL.Image.Image:
    # Crop the raw band values (what np.asarray reads) and rebuild the image from them
    # in the same mode: no colour conversion, whatever the mode (CMYK, YCbCr, I;16B...).
    arr = np.asarray(inpt)
    if fill is not None:
        check_fill_fits(fill, arr.dtype)  # e.g. -1 does not fit an I;16 (uint16) image
    x = torch.from_numpy(np.array(torch_compatible(arr), copy=True))
    if x.ndim == 3:  # (H, W, bands): crop the two leading axes
        out = _crop_tensor(x.permute(2, 0, 1), box, mode, fill).permute(1, 2, 0)
    else:
        out = _crop_tensor(x, box, mode, fill)
    raw = np.ascontiguousarray(out.numpy().astype(arr.dtype, copy=False))
    size = (raw.shape[1], raw.shape[0])
    if inpt.mode == "1":
        image = PIL.Image.fromarray(raw)  # bool pixels; "1" stores them packed
    else:
        image = PIL.Image.frombytes(inpt.mode, size, raw.tobytes())
    if inpt.mode in ("P", "PA") and inpt.palette is not None:
        palette_mode = inpt.palette.mode  # "RGB" or "RGBA"
        palette = inpt.getpalette(palette_mode)
        if palette is not None:
            image.putpalette(palette, palette_mode)
    image.info = inpt.info.copy()  # as PIL's own crop does (transparency, dpi, ...)
    return image


def _top_left_size(box: Box) -> tuple[int, int, int, int]:
    if len(box) != 2:
        raise TypeError(f"bounding boxes and key points are 2-D; got a {len(box)}-D window")
    (top, bottom), (left, right) = box
    return top, left, bottom - top, right - left


@register_kernel(crop_tile, tv_tensors.BoundingBoxes)
def _crop_boxes(
    inpt: tv_tensors.BoundingBoxes,
    box: Box,
    mode: MirrorMode = "reflect",
    fill: float | None = None,
) -> tv_tensors.BoundingBoxes:
    top, left, height, width = _top_left_size(box)
    out: tv_tensors.BoundingBoxes = tvF.crop(inpt, top=top, left=left, height=height, width=width)
    return out


@register_kernel(crop_tile, tv_tensors.KeyPoints)
def _crop_keypoints(
    inpt: tv_tensors.KeyPoints, box: Box, mode: MirrorMode = "reflect", fill: float | None = None
) -> tv_tensors.KeyPoints:
    top, left, height, width = _top_left_size(box)
    out: tv_tensors.KeyPoints = tvF.crop(inpt, top=top, left=left, height=height, width=width)
    return out
