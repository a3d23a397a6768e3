"""Shared plumbing of the tile transforms: input roles, size checks, validation."""

from __future__ import annotations

import contextlib
import numbers
import operator
import warnings
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from .._checks import check_dense, is_one_of
from ..config import named_type
from ..functional._mirror import MirrorMode, check_mode
from ..functional._tile import (
    Box,
    FillError,
    check_fill_fits,
    crop_tile,
    kernel_for,
    spatial_shape,
)
from ..geometry import TileGeometry, as_geometry
from ..grid import Align

__all__ = [
    "ImageRole",
    "LabelAsImageWarning",
    "LabelRole",
    "MaskFill",
    "TileTransform",
    "check_mask_fill",
    "label_fill",
]

MaskFill = float | None | dict[type | str, float | None]
"""A transform's ``mask_fill``: one value for every label, or one per label type."""


class LabelAsImageWarning(UserWarning):
    """A paired transform saw two or more ``tv_tensors.Image`` inputs and no label.

    Raised (once per transform instance) by :class:`PairedTileCrop`, and by
    :class:`MirrorExtrapolate` with a ``mask_fill``, when a sample holds two or more
    images and no ``tv_tensors.Mask``: most often a label that ``v2.ToImage()`` turned
    into an Image, which then gets the image's window, and which later v2 transforms
    (``ToDtype(scale=True)``, ``Normalize``) scale and normalise like an image.

    Example:
        >>> import warnings
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> from unet_transforms import PairedTileCrop, TileGeometry
        >>> crop = PairedTileCrop(TileGeometry(14, 6), index=0)
        >>> image = tv_tensors.Image(torch.rand(3, 20, 20))
        >>> label = tv_tensors.Image(torch.zeros(1, 20, 20))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = crop(image, label)
        ...     _ = crop(image, label)  # once per transform
        >>> print(*(w.category.__name__ for w in caught))
        LabelAsImageWarning
    """


class _Role:
    """A leaf whose role the call's position decided (see :class:`TileTransform`)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class LabelRole(_Role):
    """Marks a leaf as a label (the ``target`` of an ``(image, target)`` call)."""


class ImageRole(_Role):
    """Marks a plain tensor as the image of an ``(image, target)`` call whose target is a
    ``tv_tensors.Image`` or ``Video`` (torchvision would pass the plain tensor through)."""


# leaves that take torchvision's "image" slot: a plain tensor next to one is not transformed
_IMAGE_LEAVES = (tv_tensors.Image, tv_tensors.Video, PIL.Image.Image, ImageRole)


def _is_plain(inpt: object) -> bool:
    return isinstance(inpt, PIL.Image.Image) or (
        isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.TVTensor)
    )


def _is_array(inpt: object) -> bool:
    """A numpy array or array-like (memmap, zarr, dask, h5py): not a tensor, not a scalar."""
    if isinstance(inpt, np.ndarray):
        return True
    # tensors first: reading .shape of a strided nested tensor raises RuntimeError
    return (
        not isinstance(inpt, torch.Tensor | PIL.Image.Image | np.generic)
        and hasattr(inpt, "__array__")
        and hasattr(inpt, "shape")
    )


def _handled(inpt: object) -> bool:
    """Whether the transforms transform a leaf (torchvision's ``_transformed_types``).

    Roles, PIL images, plain tensors and tv_tensors with a ``crop_tile`` kernel (along
    the MRO, as torchvision's dispatch: subclasses of ``Mask`` are masks); any other
    tv_tensor passes through untouched, as torchvision's transforms pass it.
    """
    if type(inpt) is torch.Tensor or isinstance(inpt, _Role | PIL.Image.Image):
        return True
    if isinstance(inpt, tv_tensors.TVTensor):
        return kernel_for(crop_tile, type(inpt)) is not None
    return isinstance(inpt, torch.Tensor)


_ALWAYS_TRANSFORMED = (tv_tensors.Image, tv_tensors.Video, tv_tensors.Mask, _Role)


def _all_leaves_transformed(inputs: tuple[Any, ...]) -> bool:
    """Whether ``inputs`` are leaves that torchvision's forward would all transform.

    True for image, video and mask tv_tensors (subclasses included) and roles, and for
    one plain tensor (with a label) when no image or video is present, as torchvision's
    rule says.
    """
    plain = 0
    for inpt in inputs:
        if isinstance(inpt, _ALWAYS_TRANSFORMED):
            continue
        if type(inpt) is torch.Tensor:
            plain += 1
            continue
        return False
    return plain == 0 or (
        plain == 1 and not any(isinstance(i, tv_tensors.Image | tv_tensors.Video) for i in inputs)
    )


def _array_error(transform: object, inpt: Any, where: str) -> TypeError:
    what = f"{type(inpt).__module__.split('.')[0]}.{type(inpt).__name__}"
    return TypeError(
        f"{type(transform).__name__} does not transform numpy arrays or array-likes: got a "
        f"{what} of shape {tuple(getattr(inpt, 'shape', ()))} as {where}. Convert it first: "
        "torch.from_numpy(x) for (C, H, W) images and (H, W) labels, v2.ToImage() for "
        "(H, W, C) images (as torchvision reads arrays); TiledDataset converts arrays itself"
    )


def check_align(align: object) -> Align:
    if not is_one_of(align, ("center", "start")):
        raise ValueError(f"align must be 'center' or 'start', got {align!r}")
    return cast(Align, align)


def check_geometry(geometry: object) -> TileGeometry:
    return as_geometry(geometry)


def check_fill(fill: object, name: str = "mask_fill") -> float | None:
    """``None`` or a number (numpy scalars become Python numbers)."""
    if fill is None:
        return None
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"{name} must be None or a number, got {type(fill).__name__}")
    return operator.index(fill) if isinstance(fill, numbers.Integral) else float(fill)


def check_mask_fill(fill: object) -> MaskFill:
    """``None``, a number, or a mapping from label types (or ``"others"``) to either.

    A mapping comes back as a new ``dict`` (the caller's is never modified); keys are
    subclasses of ``tv_tensors.Mask``, the labels a fill applies to, their dotted names
    as configs write them (``"torchvision.tv_tensors.Mask"``,
    ``"unet_transforms.WeightMap"``), or ``"others"``.
    """
    if not isinstance(fill, Mapping):
        if fill is not None and (isinstance(fill, bool) or not isinstance(fill, numbers.Real)):
            raise TypeError(
                "mask_fill must be None, a number or a mapping from label types to numbers "
                f"(e.g. {{tv_tensors.Mask: 255}}), got {type(fill).__name__}"
            )
        return check_fill(fill)
    checked: dict[type | str, float | None] = {}
    for key, value in fill.items():
        given = key
        if isinstance(key, str) and key != "others":
            with contextlib.suppress(ValueError):  # an unknown name is refused below
                key = named_type(key)  # as configs write it: "torchvision.tv_tensors.Mask"
        if key != "others" and not isinstance(key, type):
            raise TypeError(
                "mask_fill keys must be label types (tv_tensors.Mask or a subclass), their "
                "names as configs write them ('torchvision.tv_tensors.Mask', "
                f"'unet_transforms.WeightMap') or 'others', got {given!r}"
            )
        if isinstance(key, type) and not issubclass(key, tv_tensors.Mask):
            raise ValueError(
                f"mask_fill keys must be tv_tensors.Mask or a subclass of it (only labels "
                f"are filled) or 'others', got {key.__name__}"
            )
        name = repr(key) if isinstance(key, str) else key.__name__
        checked[key] = check_fill(value, f"mask_fill[{name}]")
    return checked


def label_fill(mask_fill: MaskFill, inpt: Any) -> float | None:
    """The fill of one label leaf: the entry of its type's first class in ``mask_fill``
    along its MRO (so a ``Mask`` subclass without its own entry takes ``Mask``'s), else
    ``"others"``, else ``None`` (mirrored). The target of an ``(image, target)`` call is
    looked up as ``tv_tensors.Mask``, the type it comes back as."""
    if not isinstance(mask_fill, dict):
        return mask_fill
    kind = tv_tensors.Mask if isinstance(inpt, LabelRole) else type(inpt)
    for cls in kind.__mro__:
        if cls in mask_fill:
            return mask_fill[cls]
    return mask_fill.get("others")


def _fill_for(value: Any, fill: float | None) -> float | None:
    """The fill :meth:`TileTransform.crop` gives ``value``: 0 for a bool label whose
    ``fill`` is not 0 or 1."""
    if fill is not None and fill not in (0, 1) and _is_bool(value):
        return 0
    return fill


def _is_bool(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    if isinstance(value, PIL.Image.Image):
        return value.mode == "1"
    return str(getattr(value, "dtype", "")) == "bool"  # numpy, memmap, zarr, h5py arrays


class TileTransform(v2.Transform):
    """Base of the overlap-tile transforms.

    Inputs, one rule: a leaf is transformed as torchvision's v2 transforms would
    transform it (images, videos, masks, bounding boxes, key points, PIL images, the
    first plain tensor of a sample without an image, video or PIL image), with one
    addition for the call ``t(image, target)`` with two positional arguments, as
    torchvision datasets' ``transforms=`` makes it: both are transformed, the first with
    the image window, and a plain tensor or PIL target is the label (a plain tensor
    label comes back as a ``tv_tensors.Mask``, so that later v2 transforms such as flips
    move it with the image; a PIL label stays PIL). A ``tv_tensors.Mask`` (or subclass)
    is a label anywhere.

    - Numpy arrays (and array-likes) are never transformed: one that would be (either
      argument of ``t(image, target)``, or the first plain leaf of a sample without an
      image) raises ``TypeError``; elsewhere it passes through, as in torchvision.
    - A plain tensor or array that passes through although it has the spatial size of
      the transformed inputs (a label or weights that would come back uncropped)
      raises ``TypeError``, except a sampler's weight map (``WeightedSampler``).
    - tv_tensor subclasses are dispatched along their MRO, as torchvision does: a
      subclass of ``Mask`` or ``Image`` is transformed as its base class; a subclass of
      ``TVTensor`` itself passes through untouched unless a kernel was registered for it
      with :func:`unet_transforms.functional.register_kernel`.
    - A paired transform (labels treated differently from images) that sees two or more
      ``tv_tensors.Image`` inputs and no ``Mask`` warns once with
      :class:`LabelAsImageWarning`.
    """

    _transformed_types = (_handled,)

    def __init__(self, *, mode: MirrorMode, align: Align) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.align = check_align(align)
        self._warned_label_as_image = False

    @property
    def spatial_ndim(self) -> int:
        """Number of trailing spatial axes the transform works on."""
        return 2

    @property
    def pairs_labels(self) -> bool:
        """Whether labels get other windows or values than images (then an Image
        standing in for a label is warned about)."""
        return False

    def forward(self, *inputs: Any) -> Any:
        inputs = self._with_roles(inputs)
        if not _all_leaves_transformed(inputs):
            return super().forward(*inputs)
        # The common call, ``t(image)`` or ``t(image, label)`` with tensors: what
        # torchvision's forward does for it, without flattening a tree of two leaves.
        flat = list(inputs)
        self.check_inputs(flat)
        params = self.make_params(flat)
        outputs = tuple(self.transform(inpt, params) for inpt in flat)
        return outputs if len(outputs) > 1 else outputs[0]

    def _with_roles(self, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(inputs) != 2:
            return inputs
        image, target = inputs
        for inpt, where in ((image, "the image (first argument)"), (target, "the target")):
            if _is_array(inpt):
                raise _array_error(self, inpt, where)
        if _is_plain(target) and (
            _is_plain(image) or isinstance(image, tv_tensors.Image | tv_tensors.Video)
        ):
            return (image, LabelRole(target))
        if type(image) is torch.Tensor and isinstance(target, tv_tensors.Image | tv_tensors.Video):
            return (ImageRole(image), target)
        return inputs

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        """Refuses arrays where a plain tensor would be transformed; warns (once) about
        Images standing in for labels, and refuses maps that would be left behind.
        Called by ``forward`` with every leaf."""
        self._check_arrays(flat_inputs)
        self._check_left_behind(flat_inputs)
        if not self.pairs_labels or self._warned_label_as_image:
            return
        images = sum(isinstance(x, tv_tensors.Image | ImageRole) for x in flat_inputs)
        if images >= 2 and not any(
            isinstance(x, tv_tensors.Mask | LabelRole) for x in flat_inputs
        ):
            self._warned_label_as_image = True
            warnings.warn(
                f"{type(self).__name__} got {images} images (tv_tensors.Image) and no label "
                "(tv_tensors.Mask): a label stored as an Image gets the image's window and no "
                "mask_fill here, and later v2 transforms (ToDtype(scale=True), Normalize) "
                "scale and normalise it like an image. Mark labels as tv_tensors.Mask "
                "(torchvision.datasets.wrap_dataset_for_transforms_v2 does for torchvision "
                "datasets), or apply v2.ToImage() after this transform: called as "
                "(image, target) with plain tensors, it returns the target as a Mask. "
                "(Warned once per transform.)",
                LabelAsImageWarning,
                stacklevel=3,
            )

    def _check_left_behind(self, flat_inputs: list[Any]) -> None:
        """Refuses a plain tensor or array that torchvision's rule passes through
        untouched although it has the spatial size of the inputs transformed: a map
        (a label, weights) that would come back uncropped, out of line with the image's
        window. Plain leaves of other shapes (class vectors, scalars) pass through."""
        loose = [x for x in flat_inputs if type(x) is torch.Tensor or _is_array(x)]
        if not loose or (
            len(loose) == 1
            and type(loose[0]) is torch.Tensor
            and not any(isinstance(x, _IMAGE_LEAVES) for x in flat_inputs)
        ):
            return  # none, or the one plain tensor, which torchvision's rule transforms
        ids = {id(x) for x in loose} - {id(x) for x in self.read_maps()}
        needs = self._needs_transform_list(flat_inputs)
        moved = [x for x, n in zip(flat_inputs, needs, strict=True) if n]
        if not moved:
            return
        size = self.spatial_size(moved)  # raises for what forward would raise for
        first, _ = self.unwrap(moved[0])
        ndim = self.spatial_ndim
        for x, n in zip(flat_inputs, needs, strict=True):
            shape = tuple(getattr(x, "shape", ()))
            if n or id(x) not in ids or len(shape) < ndim or shape[-ndim:] != size:
                continue
            kind = "plain tensor" if isinstance(x, torch.Tensor) else type(x).__name__
            moved_kind = "plain tensor" if type(first) is torch.Tensor else type(first).__name__
            raise TypeError(
                f"{type(self).__name__} got a {kind} of shape {shape}, the spatial size "
                f"of the {moved_kind} it transforms, which torchvision's rule "
                "would pass through untouched (only the first plain tensor of a sample "
                "is transformed), out of line with the window. Mark labels as "
                "tv_tensors.Mask and weights as unet_transforms.WeightMap, or call the "
                "transform as t(image, label) with two arguments; to pass a value of "
                "that shape through on purpose, wrap it in a tv_tensors.TVTensor "
                "subclass of your own (passed through untouched)"
            )

    def read_maps(self) -> list[Any]:
        """Leaves of the sample being transformed that are read, not transformed (a
        sampler's weight map), and so may pass through whatever their size."""
        return []

    def _check_arrays(self, flat_inputs: list[Any]) -> None:
        """torchvision's plain-tensor rule with arrays counted as plain tensors: an array
        in the slot where a plain tensor would be transformed is an error."""
        slot_open = not any(isinstance(x, _IMAGE_LEAVES) for x in flat_inputs)
        for inpt in flat_inputs:
            if not slot_open:
                return
            if type(inpt) is torch.Tensor:
                slot_open = False
            elif _is_array(inpt):
                raise _array_error(
                    self, inpt, "the sample's first plain leaf, which a plain tensor would be"
                )

    def sample_size(self, *inputs: Any) -> tuple[int, ...]:
        """The spatial size the transform sees for a call with ``inputs``."""
        inputs = self._with_roles(inputs)
        flat, _ = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        self._check_arrays(flat)
        needs = self._needs_transform_list(flat)
        return self.spatial_size([x for x, n in zip(flat, needs, strict=True) if n])

    def crop(self, value: Any, box: Box, fill: float | None) -> Any:
        """``crop_tile`` with this transform's mode; a fill the label cannot hold is
        reported as ``mask_fill``. A bool label (no ignore value fits it) takes the fill
        if it is 0 or 1, else ``False``."""
        try:
            return crop_tile(value, box, self.mode, _fill_for(value, fill))
        except FillError as e:
            raise e.named("mask_fill") from None

    @staticmethod
    def check_fill(value: torch.Tensor, fill: float | None) -> float | None:
        """Raises what :meth:`crop` would for ``fill`` on ``value``, without cropping
        (for paths that may not need the fill, so that its errors do not depend on
        where the window lies); returns the fill :meth:`crop` gives ``value``."""
        fill = _fill_for(value, fill)
        if fill is not None:
            try:
                check_fill_fits(fill, value.dtype)
            except FillError as e:
                raise e.named("mask_fill") from None
        return fill

    @staticmethod
    def as_label_if_plain(inpt: Any, out: Any) -> Any:
        """The label of a plain ``(image, target)`` tensor pair comes back as a
        ``tv_tensors.Mask``, so that the v2 transforms after this one (flips, rotations)
        move it with the image: torchvision would pass a second plain tensor through."""
        if isinstance(inpt, LabelRole) and type(inpt.value) is torch.Tensor:
            return out.as_subclass(tv_tensors.Mask)
        return out

    @staticmethod
    def unwrap(inpt: Any) -> tuple[Any, bool]:
        """Returns ``(value, is_label)`` for a leaf."""
        if isinstance(inpt, _Role):
            return inpt.value, isinstance(inpt, LabelRole)
        return inpt, isinstance(inpt, tv_tensors.Mask)

    def spatial_size(self, flat_inputs: list[Any]) -> tuple[int, ...]:
        """The common spatial size of the inputs to transform; raises if they disagree."""
        ndim = self.spatial_ndim
        size: tuple[int, ...] | None = None
        first: Any = None
        for inpt in flat_inputs:
            value, _ = self.unwrap(inpt)
            if isinstance(value, torch.Tensor):
                check_dense(value, f"{type(self).__name__}'s input")
            this = spatial_shape(value, ndim)
            if 0 in this:
                raise ValueError(
                    f"cannot tile an empty input: {type(value).__name__} of shape "
                    f"{_describe(value)}"
                )
            if size is None:
                size, first = this, value
            elif this != size:
                raise ValueError(
                    f"{type(first).__name__} {_describe(first)} and {type(value).__name__} "
                    f"{_describe(value)} differ in their spatial size ({size} vs {this})"
                )
        if size is None:
            raise TypeError(
                f"{type(self).__name__} found nothing to transform: pass a tensor, "
                f"tv_tensor or PIL image"
            )
        return size


def _describe(inpt: Any) -> str:
    if isinstance(inpt, PIL.Image.Image):
        return f"(PIL {inpt.mode} {inpt.width}x{inpt.height})"
    if isinstance(inpt, tv_tensors.BoundingBoxes | tv_tensors.KeyPoints):
        return f"(canvas_size {tuple(inpt.canvas_size)})"
    return str(tuple(getattr(inpt, "shape", ())))
