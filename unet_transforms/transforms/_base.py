"""Shared plumbing of the tile transforms: input roles, size checks, validation."""

from __future__ import annotations

import numbers
import operator
from typing import Any

import PIL.Image
import torch
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..functional._mirror import MirrorMode, check_mode
from ..functional._tile import Box, FillError, crop_tile, spatial_shape
from ..geometry import TileGeometry
from ..grid import Align

__all__ = ["LabelRole", "TileTransform"]


class LabelRole:
    """Marks a leaf as a label (the ``target`` of an ``(image, target)`` call)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _is_plain(inpt: object) -> bool:
    return isinstance(inpt, PIL.Image.Image) or (
        isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.TVTensor)
    )


_ALWAYS_TRANSFORMED = (tv_tensors.Image, tv_tensors.Video, tv_tensors.Mask, LabelRole)


def _all_leaves_transformed(inputs: tuple[Any, ...]) -> bool:
    """Whether ``inputs`` are leaves that torchvision's forward would all transform.

    True for image, video and mask tv_tensors and labels, and for one plain tensor
    (with a label) when no image or video is present, as torchvision's rule says.
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


def check_align(align: object) -> Align:
    if align not in ("center", "start"):
        raise ValueError(f"align must be 'center' or 'start', got {align!r}")
    return align


def check_geometry(geometry: object) -> TileGeometry:
    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    return geometry


def check_fill(fill: object, name: str = "mask_fill") -> float | None:
    """``None`` or a number (numpy scalars become Python numbers)."""
    if fill is None:
        return None
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"{name} must be None or a number, got {type(fill).__name__}")
    return operator.index(fill) if isinstance(fill, numbers.Integral) else float(fill)


class TileTransform(v2.Transform):
    """Base of the overlap-tile transforms.

    Roles: a :class:`torchvision.tv_tensors.Mask` is a label; called with two
    positional plain arguments ``(image, target)`` (tensors or PIL images, as
    torchvision datasets' ``transforms=`` argument does), the second is the label. A
    plain tensor label comes back as a ``tv_tensors.Mask`` so that the v2 transforms
    after this one (flips, rotations) move it with the image; torchvision would pass a
    second plain tensor through untouched. A PIL label stays PIL, which torchvision's
    own transforms treat as an image: wrap PIL datasets with
    ``torchvision.datasets.wrap_dataset_for_transforms_v2``.

    Everything else follows torchvision's rules: images, videos, the first plain tensor
    of a sample without an image, PIL images, bounding boxes and key points are
    transformed; other leaves pass through unchanged.
    """

    _transformed_types = (torch.Tensor, PIL.Image.Image, LabelRole)

    def __init__(self, *, mode: MirrorMode, align: Align) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.align = check_align(align)

    @property
    def spatial_ndim(self) -> int:
        """Number of trailing spatial axes the transform works on."""
        return 2

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

    @staticmethod
    def _with_roles(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(inputs) == 2 and _is_plain(inputs[0]) and _is_plain(inputs[1]):
            return (inputs[0], LabelRole(inputs[1]))
        return inputs

    def sample_size(self, *inputs: Any) -> tuple[int, ...]:
        """The spatial size the transform sees for a call with ``inputs``."""
        inputs = self._with_roles(inputs)
        flat, _ = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        needs = self._needs_transform_list(flat)
        return self.spatial_size([x for x, n in zip(flat, needs, strict=True) if n])

    def crop(self, value: Any, box: Box, fill: float | None) -> Any:
        """``crop_tile`` with this transform's mode; a fill the label cannot hold is
        reported as ``mask_fill``."""
        try:
            return crop_tile(value, box, self.mode, fill)
        except FillError as e:
            raise e.named("mask_fill") from None

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
        if isinstance(inpt, LabelRole):
            return inpt.value, True
        return inpt, isinstance(inpt, tv_tensors.Mask)

    def spatial_size(self, flat_inputs: list[Any]) -> tuple[int, ...]:
        """The common spatial size of the inputs to transform; raises if they disagree."""
        ndim = self.spatial_ndim
        size: tuple[int, ...] | None = None
        first: Any = None
        for inpt in flat_inputs:
            value, _ = self.unwrap(inpt)
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
