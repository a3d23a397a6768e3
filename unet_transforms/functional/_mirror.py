"""Mirror extrapolation as index arithmetic: reflections of any width, cost of the output."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from .._checks import check_dense, is_int, is_one_of

__all__ = ["MirrorMode", "mirror_index", "mirror_pad", "normalize_padding", "check_mode"]

MirrorMode = Literal["reflect", "symmetric"]
_MODES = ("reflect", "symmetric")

# numpy dtypes that torch.from_numpy and Tensor.numpy accept; used to allocate big outputs
# through numpy, whose allocator asks the kernel for huge pages (a fresh torch.empty of
# hundreds of MB spends most of its time in page faults), and to copy reversed slices as
# numpy views (negative strides, which torch lacks).
_NUMPY_DTYPES = {
    torch.float64: np.float64,
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.int16: np.int16,
    torch.int8: np.int8,
    torch.uint8: np.uint8,
    torch.uint16: np.uint16,
    torch.uint32: np.uint32,
    torch.uint64: np.uint64,
    torch.bool: np.bool_,
    torch.complex64: np.complex64,
    torch.complex128: np.complex128,
}
_NUMPY_ALLOC_MIN_BYTES = 1 << 20


def check_mode(mode: object) -> MirrorMode:
    """Validates a mirroring mode and returns it."""
    if not is_one_of(mode, _MODES):
        raise ValueError(f"mode must be 'reflect' or 'symmetric', got {mode!r}")
    return mode  # type: ignore[return-value]


def _flat(values: object) -> list[Any]:
    """The leaves of nested sequences (for error messages)."""
    if isinstance(values, Sequence) and not isinstance(values, str | bytes):
        return [leaf for v in values for leaf in _flat(v)]
    return [values]


def mirror_index(
    positions: torch.Tensor | range | Sequence[int], size: int, mode: MirrorMode = "reflect"
) -> torch.Tensor:
    """Maps positions on an infinite mirrored axis to indices into ``[0, size)``.

    ``reflect`` mirrors about the edge pixel (period ``2 * size - 2``), ``symmetric``
    repeats it (period ``2 * size``); both match :func:`numpy.pad` for any width.

    Args:
        positions: Integer positions (may be negative or ``>= size``): a range, an
            integer tensor or a sequence of ints.
        size: Length of the axis (``>= 1``).
        mode: ``"reflect"`` or ``"symmetric"``.

    Returns:
        int64 tensor of indices in ``[0, size)``, same shape as ``positions``.

    Example:
        >>> mirror_index(range(-3, 6), 4).tolist()
        [3, 2, 1, 0, 1, 2, 3, 2, 1]
        >>> mirror_index(range(-3, 6), 4, "symmetric").tolist()
        [2, 1, 0, 0, 1, 2, 3, 3, 2]
    """
    check_mode(mode)
    if not is_int(size):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    size = operator.index(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    limit = 2**63 - 1
    if size > limit // 2:
        raise ValueError(f"size must be below 2**62, got {size}")
    if isinstance(positions, range):
        if not all(-limit <= v <= limit for v in (positions.start, positions.stop)):
            raise ValueError(f"positions must fit in int64, got {positions!r}")
        pos = torch.arange(positions.start, positions.stop, positions.step)
    elif isinstance(positions, torch.Tensor):
        if (
            positions.is_floating_point()
            or positions.is_complex()
            or positions.dtype == torch.bool
        ):
            raise TypeError(f"positions must be integers, got a {positions.dtype} tensor")
        pos = positions.to(torch.int64)
    else:
        try:
            pos = torch.as_tensor(positions)
        except OverflowError as e:
            raise ValueError(f"positions must fit in int64, got {positions!r}") from e
        except (TypeError, ValueError, RuntimeError) as e:
            if any(is_int(v) and not -limit <= v <= limit for v in _flat(positions)):
                raise ValueError(f"positions must fit in int64, got {positions!r}") from e
            raise TypeError(
                f"positions must be a range, a tensor or a sequence of ints, got "
                f"{type(positions).__name__}"
            ) from e
        if pos.is_floating_point() or pos.is_complex() or pos.dtype == torch.bool:
            raise TypeError(f"positions must be integers, got {positions!r}")
        pos = pos.to(torch.int64)
    if mode == "reflect":
        if size == 1:
            return torch.zeros_like(pos)
        period = 2 * size - 2
        m = torch.remainder(pos, period)
        return torch.where(m < size, m, period - m)
    period = 2 * size
    m = torch.remainder(pos, period)
    return torch.where(m < size, m, period - 1 - m)


def normalize_padding(padding: object, name: str = "padding") -> tuple[tuple[int, int], ...]:
    """Validates a sequence of per-axis ``(before, after)`` pairs and returns it as tuples."""
    # the common case, plain non-negative ints, without the checks below
    if (
        isinstance(padding, list | tuple)
        and padding
        and all(
            type(pair) in (tuple, list)
            and len(pair) == 2
            and type(pair[0]) is int
            and type(pair[1]) is int
            and pair[0] >= 0
            and pair[1] >= 0
            for pair in padding
        )
    ):
        return tuple((pair[0], pair[1]) for pair in padding)
    if not isinstance(padding, Sequence) or isinstance(padding, str) or not padding:
        raise TypeError(
            f"{name} must be a non-empty sequence of (before, after) pairs, got {padding!r}"
        )
    pairs = []
    for axis, pair in enumerate(padding):
        if (
            not isinstance(pair, Sequence)
            or isinstance(pair, str)
            or len(pair) != 2
            or not all(is_int(p) for p in pair)
        ):
            raise TypeError(
                f"{name} must be a sequence of (before, after) int pairs, got {pair!r} for "
                f"axis {axis}"
            )
        before, after = (operator.index(p) for p in pair)
        if before < 0 or after < 0:
            raise ValueError(
                f"{name} must be non-negative, got ({before}, {after}) for axis {axis}"
            )
        pairs.append((before, after))
    return tuple(pairs)


def empty_like_shape(
    shape: Sequence[int], dtype: torch.dtype, device: torch.device, zeros: bool = False
) -> torch.Tensor:
    """Allocates an uninitialised tensor (zeros with ``zeros``), through numpy's allocator
    for big CPU buffers (whose zeros are the kernel's fresh pages: no pass to clear)."""
    np_dtype = _NUMPY_DTYPES.get(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type == "cpu" and np_dtype is not None and nbytes >= _NUMPY_ALLOC_MIN_BYTES:
        allocate = np.zeros if zeros else np.empty
        return torch.from_numpy(allocate(tuple(shape), dtype=np_dtype))
    allocate_tensor = torch.zeros if zeros else torch.empty
    return allocate_tensor(tuple(shape), dtype=dtype, device=device)


def mirror_pad(
    x: torch.Tensor,
    padding: Sequence[tuple[int, int]],
    mode: MirrorMode = "reflect",
) -> torch.Tensor:
    """Mirror-extends the trailing ``len(padding)`` axes of a tensor.

    Equals ``numpy.pad(x, [(0, 0)] * lead + padding, mode=mode)`` for every size,
    including pads wider than the axis (the image is mirrored again and again) and axes
    of length 1. Works for any dtype and device, any number of leading axes, never
    round-trips through numpy, and keeps autograd working for float inputs.

    Args:
        x: Tensor ``(..., *spatial)``.
        padding: One ``(before, after)`` pair per trailing axis, in axis order.
        mode: ``"reflect"`` (edge pixel not repeated, numpy's and torch's ``reflect``) or
            ``"symmetric"`` (edge pixel repeated).

    Returns:
        A new tensor ``(..., *[before + size + after])``; ``x`` is not modified. An
        ``Image``, ``Video`` or ``Mask`` (subclasses included) comes back as the same
        type.

    Raises:
        TypeError: If ``x`` is not a tensor of pixels (bounding boxes, key points and
            other tv_tensors than Image, Video and Mask are refused) or ``padding`` is
            not a sequence of int pairs.
        ValueError: On negative pads, an empty padded axis, too many padded axes or an
            unknown mode.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1, 2, 3]])
        >>> mirror_pad(x, [(0, 0), (4, 2)])
        tensor([[1, 2, 3, 2, 1, 2, 3, 2, 1]])
        >>> mirror_pad(x, [(1, 1), (2, 2)], mode="symmetric")
        tensor([[2, 1, 1, 2, 3, 3, 2],
                [2, 1, 1, 2, 3, 3, 2],
                [2, 1, 1, 2, 3, 3, 2]])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_dense(x, "x")
    pads = normalize_padding(padding)
    check_mode(mode)
    n = len(pads)
    if n > x.ndim:
        raise ValueError(
            f"padding has {n} (before, after) pairs but x has only {x.ndim} axes "
            f"(shape {tuple(x.shape)})"
        )
    spatial = tuple(x.shape[x.ndim - n :])
    if 0 in spatial:
        raise ValueError(f"cannot mirror an empty axis: x has shape {tuple(x.shape)}")
    if type(x) is torch.Tensor:
        # no as_subclass view of a plain tensor (nor a detached one in _numpy_view):
        # those tensor objects cost 0.1x the copy floor of the 512² -> 960² pad when
        # the caches are cold (bench_mirror.py, side by side: 1.40-1.44 -> 1.29-1.30)
        return _mirror_pad_tensor(x, pads, mode)
    from torchvision import tv_tensors

    if isinstance(x, tv_tensors.TVTensor) and not isinstance(
        x, tv_tensors.Image | tv_tensors.Video | tv_tensors.Mask
    ):
        raise TypeError(
            f"x must hold pixels (a tensor, Image, Video or Mask), got {type(x).__name__}: "
            "boxes and key points are moved, not mirrored (MirrorExtrapolate moves them)"
        )
    out = _mirror_pad_tensor(x.as_subclass(torch.Tensor), pads, mode)
    if isinstance(x, tv_tensors.TVTensor):
        wrapped: torch.Tensor = tv_tensors.wrap(out, like=x)
        return wrapped
    return out


# dtypes that torch's reflection_pad2d kernel takes on the CPU (bool and uint16-64 not)
_REFLECT_KERNEL_DTYPES = frozenset(
    {
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.complex64,
        torch.complex128,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
    }
)
# Outputs from this size on, with pads of the last axis that add at most a quarter to
# its width, are padded by torch's kernel, which writes each output row once (interior
# and borders together) but computes the source of each border pixel; smaller outputs
# are in the cache anyway, and on wide borders numpy's reversed row copies cost less
# (bench_mirror.py, CPU time to the floor, against _pad_last_two_numpy: 3 x 2048² +
# 92 px float32 level at 1.3x, uint8 2.0x against 2.2x; 4096² uint8 1.47x against
# 1.54x; 512² -> 960² float32 1.2x and more against 1.0-1.1x).
_REFLECT_KERNEL_MIN_BYTES = 8 << 20
# Outputs up to this size (a border tile, say) are padded by the kernel whatever the
# width of their pads: numpy's views, chunks and strip copies cost more Python than the
# whole kernel call (bench_mirror.py's "small" cases: float32 288² from 224², 34 us
# against 100 us; uint8 0.6-0.75x; from about 512 KiB uint8 the kernel is slower).
_REFLECT_KERNEL_SMALL_BYTES = 512 << 10
_REFLECT_KERNEL_WIDTH_PER_PAD = 4  # the last axis at least 4x as wide as its two pads
_reflection_pad2d = torch.ops.aten.reflection_pad2d.out  # into a buffer of ours
_reflection_pad2d_new = torch.ops.aten.reflection_pad2d.default  # into a new tensor
_MAX_ROW_LOOPS = 64  # most outer slices a band is copied slice by slice through numpy
# Bytes of output rows filled per chunk by _fill_last_axis: small enough that a chunk's
# image and output rows are still cached when its strips are written, large enough that
# the three numpy copies per chunk cost little Python (bench_mirror.py: 256 KiB to 2 MiB
# within noise on the large cases, 1-2 MiB best on the small ones).
_CHUNK_BYTES = 1 << 20


def _numpy_view(t: torch.Tensor) -> np.ndarray | None:
    """A numpy view of a CPU tensor (numpy has negative strides, torch has not), if any."""
    if not t.is_cpu or t.dtype not in _NUMPY_DTYPES or t.is_conj() or t.is_neg():
        return None
    return (t.detach() if t.requires_grad else t).numpy()


def _reversed(start: int, count: int) -> slice:
    """``count`` indices from ``start``, last first (``start + count - 1`` down to ``start``)."""
    return slice(start + count - 1, start - 1 if start else None, -1)


def _copy_reversed_rows(rows: np.ndarray, dim: int, start: int, count: int, lo: int) -> None:
    """``rows[..., start + i, ...] = rows[..., lo + count - 1 - i, ...]`` along ``dim``.

    One slice of the ``dim`` outer axes at a time: within a slice the two row ranges are
    disjoint, so numpy copies straight from the reversed view (row by row, memcpy-like)
    instead of through the temporary it makes when the bounds of the whole views
    overlap.
    """
    dst = (slice(start, start + count),)
    src = (_reversed(lo, count),)
    for index in itertools.product(*map(range, rows.shape[:dim])):
        rows[index + dst] = rows[index + src]


def _fill_last_axis(
    rows: np.ndarray, image: np.ndarray, before: int, after: int, shift: int
) -> None:
    """Copies the image into the output rows and mirrors their strips, in one pass.

    ``rows`` is the output over the image's extent along every axis but the last, which
    is padded by ``before`` and ``after`` (each at most one reflection wide). A chunk of
    rows at a time (all leading axes together, about ``_CHUNK_BYTES`` of output): the
    image rows into the interior, then both strips reversed from the same image rows
    (numpy's negative strides, no temporary) while the image rows and the freshly
    written output rows are still in the cache. Each output element is written once.
    """
    size = image.shape[-1]
    # rows[..., i] = image[..., shift + before - 1 - i] for i < before, and
    # rows[..., before + size + i] = image[..., hi + after - 1 - i] for i < after
    hi = size - shift - after
    left = image[..., _reversed(shift, before)]
    right = image[..., _reversed(hi, after)]
    chunks: list[tuple[Any, ...]] = [(...,)]
    if image.ndim >= 2:
        row_bytes = math.prod(rows.shape[:-2]) * rows.shape[-1] * rows.itemsize
        step = max(1, _CHUNK_BYTES // max(1, row_bytes))
        chunks = [(..., slice(r, r + step), slice(None)) for r in range(0, image.shape[-2], step)]
    for chunk in chunks:
        dst = rows[chunk]
        src = image[chunk]
        dst[..., before : before + size] = src
        if before:
            dst[..., :before] = left[chunk]
        if after:
            dst[..., before + size :] = right[chunk]


def _kernel_pads(
    x: torch.Tensor, pads: tuple[tuple[int, int], ...], mode: MirrorMode
) -> list[int] | None:
    """The ``[left, right, top, bottom]`` of torch's reflection_pad2d kernel where it can
    pad ``x`` (reflect, on the CPU, in its dtypes, only the last two axes padded and
    narrower than their pads), else ``None``. Cheapest checks first: this is on the
    path of every border tile."""
    if mode != "reflect" or len(pads) < 2 or not x.is_cpu:
        return None
    (top, bottom), (left, right) = pads[-2:]
    h, w = x.shape[-2:]
    if (
        top >= h
        or bottom >= h
        or left >= w
        or right >= w
        or x.dtype not in _REFLECT_KERNEL_DTYPES
        or x.is_conj()
        or x.is_neg()
        or x.numel() == 0
        or any(any(pad) for pad in pads[:-2])  # so that the output is one block of planes
    ):
        return None
    return [left, right, top, bottom]


def _pad_last_two_numpy(
    x: torch.Tensor, pads: tuple[tuple[int, int], ...], mode: MirrorMode
) -> torch.Tensor | None:
    """The general path below for its most common case, with as little Python as it
    takes: only the last two axes padded, each strip within one reflection, at most
    ``_MAX_ROW_LOOPS`` planes and a numpy view of ``x`` (``None`` otherwise).

    One plane at a time: its image rows and side strips by :func:`_fill_last_axis`,
    then its top and bottom strips as whole rows of the plane in reverse order, while
    the plane is still cached. Each output element is written once.
    """
    if len(pads) < 2 or any(any(pad) for pad in pads[:-2]):
        return None
    image = _numpy_view(x)
    if image is None:
        return None
    (top, bottom), (left, right) = pads[-2:]
    h, w = image.shape[-2:]
    shift = 1 if mode == "reflect" else 0  # reflect does not repeat the edge pixel
    if (
        max(top, bottom) > h - shift
        or max(left, right) > w - shift
        or image.size // (h * w) > _MAX_ROW_LOOPS
    ):
        return None
    rows = np.empty((*image.shape[:-2], h + top + bottom, w + left + right), image.dtype)
    for index in np.ndindex(*image.shape[:-2]):
        plane = rows[index]
        _fill_last_axis(plane[top : top + h], image[index], left, right, shift)
        if top:
            plane[:top] = plane[_reversed(top + shift, top)]
        if bottom:
            plane[top + h :] = plane[_reversed(top + h - shift - bottom, bottom)]
    return torch.from_numpy(rows)


def _mirror_pad_tensor(
    x: torch.Tensor, pads: tuple[tuple[int, int], ...], mode: MirrorMode
) -> torch.Tensor:
    n = len(pads)
    lead = x.ndim - n
    if all(b == 0 and a == 0 for b, a in pads):
        return x.clone()
    if x.requires_grad and torch.is_grad_enabled():
        # Differentiable path: one gather per padded axis.
        out = x
        for axis, (before, after) in enumerate(pads):
            if before or after:
                size = x.shape[lead + axis]
                idx = mirror_index(range(-before, size + after), size, mode).to(x.device)
                out = out.index_select(lead + axis, idx)
        return out
    kernel_pads = _kernel_pads(x, pads, mode)
    large_kernel = False
    if kernel_pads is not None:
        left, right, top, bottom = kernel_pads
        h, w = x.shape[-2:]
        nbytes = x.numel() // (h * w) * (h + top + bottom) * (w + left + right) * x.itemsize
        if nbytes <= _REFLECT_KERNEL_SMALL_BYTES:
            # a small output (a border tile, say): the kernel, and no more Python
            # than it takes to call it
            planes = x if x.ndim == 3 else x.reshape(-1, h, w)
            padded: torch.Tensor = _reflection_pad2d_new(planes, kernel_pads)
            return padded if x.ndim == 3 else padded.view(*x.shape[:-2], *padded.shape[-2:])
        large_kernel = (
            nbytes >= _REFLECT_KERNEL_MIN_BYTES
            and x.is_contiguous()
            and _REFLECT_KERNEL_WIDTH_PER_PAD * (left + right) <= w
        )
    if not large_kernel:
        lean = _pad_last_two_numpy(x, pads, mode)
        if lean is not None:
            return lean
    # The general path (the common case was handled above, by the kernel or by
    # _pad_last_two_numpy, which follows the same steps plane by plane).
    # Copy the image into the centre of the output once, then fill the padded strips
    # axis by axis, last axis first, so that each later strip spans the corners already
    # filled; each output element is written once. A strip no wider than one reflection
    # is a reversed slice next to the edge. Large CPU outputs with narrow reflect pads
    # of the last two axes (and none before) are filled by torch's reflection_pad2d
    # kernel. Otherwise, along the last axis, with numpy views of both tensors, the
    # image and its strips are copied together a chunk of rows at a time
    # (_fill_last_axis); failing that the image is copied in one slice assignment and
    # the strips are flipped straight from it. Along earlier axes a strip is whole rows
    # of the output in reverse order, which numpy copies row by row (torch has no
    # negative strides, and its flip would go through a temporary). Wider strips mirror
    # the image again and again and are gathered by index.
    shape = list(x.shape)
    for axis, (before, after) in enumerate(pads):
        shape[lead + axis] += before + after
    out = empty_like_shape(shape, x.dtype, x.device)
    centre = [slice(None)] * lead + [
        slice(b, b + s) for (b, _), s in zip(pads, x.shape[lead:], strict=True)
    ]
    last = max(axis for axis, pad in enumerate(pads) if any(pad))
    shift = 1 if mode == "reflect" else 0  # reflect does not repeat the edge pixel
    # the image and the last axis's strips in one pass, where they are no wider than
    # one reflection and both tensors have numpy views
    done = n  # axes from here on are filled
    rows = image = None
    if large_kernel:
        assert kernel_pads is not None
        # the last two axes by torch's reflection pad kernel, every leading axis as
        # one axis of planes
        _reflection_pad2d(
            x.reshape(-1, *x.shape[-2:]), kernel_pads, out=out.view(-1, *out.shape[-2:])
        )
        done = n - 2
    elif (
        (rows := _numpy_view(out)) is not None
        and (image := _numpy_view(x)) is not None
        and max(pads[-1]) <= x.shape[-1] - shift
    ):
        _fill_last_axis(rows[tuple(centre[:-1])], image, *pads[-1], shift)
        done = n - 1
    else:
        out[tuple(centre)] = x
    for axis in reversed(range(min(last + 1, done))):
        before, after = pads[axis]
        dim = lead + axis
        size = x.shape[dim]
        # centre along earlier (not yet filled) axes, everything along later ones
        region = centre[:dim] + [slice(None)] * (x.ndim - dim)
        filled = region.copy()
        filled[dim] = slice(before, before + size)
        for start, count, lo in ((0, before, shift), (before + size, after, size - shift - after)):
            if count == 0:
                continue
            region[dim] = slice(start, start + count)
            if count > size - shift:  # wider than one reflection: by index
                src = x if axis == last else out[tuple(filled)]
                idx = mirror_index(range(start - before, start - before + count), size, mode)
                out[tuple(region)] = src.index_select(dim, idx.to(x.device))
            elif axis == last:  # the filled part of the region is the image itself
                out[tuple(region)] = x.narrow(dim, lo, count).flip(dim)
            elif rows is not None and math.prod(x.shape[:dim]) <= _MAX_ROW_LOOPS:
                _copy_reversed_rows(rows[tuple(centre[:dim])], dim, start, count, before + lo)
            else:
                source = filled.copy()
                source[dim] = slice(before + lo, before + lo + count)
                out[tuple(region)] = out[tuple(source)].flip(dim)
    return out
