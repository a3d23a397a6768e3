"""OverlapTileCrop and PairedTileCrop: one tile's windows of images and labels."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torchvision import tv_tensors

from .._checks import is_int, is_one_of
from ..config import Configurable
from ..deformation import Deformation
from ..functional._deform import (
    FactoredField,
    Interpolation,
    deform_factored,
    deformation_coords,
    factored_field,
    interpolation_for,
    plan_resample,
    resample,
)
from ..functional._mirror import MirrorMode
from ..functional._tile import Box, crop_tile, kernel_for
from ..geometry import TileGeometry
from ..grid import Align, Tile, TileGrid, TileIndexError, tile_at
from ..sampling import Sampler, random_window_start
from ._base import MaskFill, TileTransform, check_geometry, check_mask_fill, label_fill

__all__ = ["OverlapTileCrop", "PairedTileCrop"]

TileIndex = int | Literal["random", "all"] | Sampler


def _check_index(index: object) -> TileIndex:
    if isinstance(index, Sampler):
        return index
    if is_one_of(index, ("random", "all")):
        return index  # type: ignore[return-value]
    if not is_int(index):  # bools, floats, arrays, 0-d bool tensors
        raise ValueError(
            "index must be 'random', 'all', an int tile index or a sampler of "
            f"unet_transforms.sampling, got {index!r}"
        )
    return operator.index(index)  # type: ignore[arg-type]


def _check_deform(deform: object, ndim: int) -> Deformation | None:
    if deform is not None and not isinstance(deform, Deformation):
        raise TypeError(
            f"deform must be a unet_transforms.Deformation or None, got {type(deform).__name__}"
        )
    if deform is not None:
        deform.check_ndim(ndim)
    return deform


class OverlapTileCrop(Configurable, TileTransform):
    """Crops the same overlap-tile input window from every input.

    Every input (image and label alike) gets the tile's *input* window
    (``geometry.input_size``), mirror-extrapolated where it reaches outside the image.
    The crop is read from the unpadded image, so the cost is proportional to the tile.

    Inputs follow one rule, the same for every transform of this library (see
    :class:`~unet_transforms.transforms._base.TileTransform`): torchvision's, plus
    ``t(image, target)`` with a plain tensor or PIL target, which is the label (plain
    tensor labels come back as ``tv_tensors.Mask``); numpy arrays are refused there.
    Spatial axes are the trailing ``geometry.ndim`` axes: a 3-D geometry takes plain
    tensors, ``tv_tensors.Image`` ``(C, D, H, W)``, ``Mask`` and ``WeightMap``; PIL
    images, videos, bounding boxes and key points are 2-D only. Bounding boxes and key
    points are translated to the window.

    Args:
        geometry: The :class:`TileGeometry`.
        index: ``"random"``: a fair window: per axis the output window's start is
            uniform over ``[-(out - 1), size - 1]`` (every window that overlaps the
            image, at any pixel offset), so every image pixel, border included, is
            covered with the same probability; drawn from torch's global RNG. A sampler
            of :mod:`unet_transforms.sampling` (:class:`~unet_transforms.sampling.LabelSampler`,
            :class:`~unet_transforms.sampling.WeightedSampler`,
            :class:`~unet_transforms.sampling.ForegroundSampler`): the window centred
            (output index ``out // 2``) on a pixel it draws from the sample's label;
            an int: tile ``index`` of ``TileGrid(size, geometry, align=align)``;
            ``"all"``: every grid tile, stacked on a new leading axis in grid order
            (PIL images, boxes and key points come back as lists).
        mode: ``"reflect"`` or ``"symmetric"``.
        align: Grid alignment for int and ``"all"`` indices: ``"center"`` or ``"start"``.
        deform: A :class:`~unet_transforms.Deformation` drawn per tile (elastic
            displacement, rotation, scaling, flips over the input window), or ``None``.
            The deformed tile is read in one resampling from the source, mirrored by
            ``mode`` wherever the displaced window reaches outside the image; images by
            the deformation's interpolation, masks nearest, weight maps bilinear. A
            zero deformation gives the plain crop exactly. Bounding boxes and key points
            cannot be deformed (``TypeError``).

    Example:
        >>> import torch
        >>> t = OverlapTileCrop(TileGeometry(572, 388), index="all")
        >>> t(torch.rand(3, 500, 700)).shape
        torch.Size([4, 3, 572, 572])
    """

    def __init__(
        self,
        geometry: TileGeometry | Mapping[str, Any],
        *,
        index: TileIndex = "random",
        mode: MirrorMode = "reflect",
        align: Align = "center",
        deform: Deformation | None = None,
    ) -> None:
        super().__init__(mode=mode, align=align)
        self.geometry = check_geometry(geometry)
        self.index = _check_index(index)
        self.deform = _check_deform(deform, self.geometry.ndim)

    @property
    def spatial_ndim(self) -> int:
        return self.geometry.ndim

    def forward(self, *inputs: Any) -> Any:
        if isinstance(self.index, Sampler):  # a sampler may read the whole sample
            with self.index.bound_to(inputs):
                return super().forward(*inputs)
        return super().forward(*inputs)

    def read_maps(self) -> list[Any]:
        return self.index.read_maps() if isinstance(self.index, Sampler) else []

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = self.tile_params(flat_inputs)
        if self.deform is not None:
            for inpt in flat_inputs:
                if isinstance(inpt, tv_tensors.BoundingBoxes | tv_tensors.KeyPoints):
                    raise TypeError(
                        f"{type(self).__name__}(deform=...) cannot move {type(inpt).__name__}: "
                        "deformation resamples pixels; drop the boxes or key points from the "
                        "sample, or crop without deform="
                    )
            # one field per tile, over the input window (labels take its centre part)
            # (factored in 2-D: each leaf computes only the part of the field it reads)
            params["fields"] = [self.draw_field() for _ in params["tiles"]]
        return params

    def draw_field(self) -> torch.Tensor | FactoredField:
        """One deformation's source coordinates over the input window, for
        :meth:`deformed`: kept factored in 2-D (each leaf computes only the part of the
        field it reads, its ``dense()`` is what ``deform.sample`` returns from the same
        draws), dense in 3-D."""
        assert self.deform is not None
        size = self.geometry.input_size
        params = self.deform.make_params(len(size))
        if len(size) == 2:
            return factored_field((size[0], size[1]), **params)
        return deformation_coords(size, **params)

    def tile_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """The tiles of a call: ``{"tiles": [...], "stack": bool}``."""
        size = self.spatial_size(flat_inputs)
        if isinstance(self.index, Sampler):
            labels = [value for value, is_label in map(self.unwrap, flat_inputs) if is_label]
            start = self.index.output_start(size, self.geometry.output_size, labels)
            return {"tiles": [tile_at(self.geometry, start)], "stack": False}
        if self.index == "random":
            start = random_window_start(size, self.geometry.output_size)
            return {"tiles": [tile_at(self.geometry, start)], "stack": False}
        grid = TileGrid(size, self.geometry, align=self.align)
        if self.index == "all":
            return {"tiles": list(grid), "stack": True}
        try:
            return {"tiles": [grid[self.index]], "stack": False}
        except TileIndexError as e:
            raise ValueError(
                f"index={self.index} is outside the grid for image size {size}: {e}"
            ) from e

    def window(self, tile: Tile, inpt: Any) -> tuple[Box, float | None]:
        """The window of ``tile`` a leaf gets, and the fill value outside the image."""
        return tile.input_box, None

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        value, is_label = self.unwrap(inpt)
        fields = params.get("fields") or [None] * len(params["tiles"])
        crops = []
        for tile, field in zip(params["tiles"], fields, strict=True):
            box, fill = self.window(tile, inpt)
            if field is None:
                crops.append(self.crop(value, box, fill))
            else:
                crops.append(self.deformed(value, is_label, tile, box, fill, field))
        if not params["stack"]:
            return self.as_label_if_plain(inpt, crops[0])
        if isinstance(value, torch.Tensor) and not isinstance(
            value, tv_tensors.BoundingBoxes | tv_tensors.KeyPoints
        ):
            stacked = torch.stack([c.as_subclass(torch.Tensor) for c in crops])
            return self.as_label_if_plain(
                inpt,
                tv_tensors.wrap(stacked, like=value)
                if isinstance(value, tv_tensors.TVTensor)
                else stacked,
            )
        return crops

    def deformed(
        self,
        value: Any,
        is_label: bool,
        tile: Tile,
        box: Box,
        fill: float | None,
        field: torch.Tensor | FactoredField,
        as_type: type | None = None,
    ) -> Any:
        """The window ``box`` of ``tile``, deformed by ``field`` (over the input window):
        the source region it reaches is read mirrored (or filled), then sampled once.
        ``as_type`` stands for ``type(value)`` when choosing the interpolation (an array
        read as a ``Mask`` or ``WeightMap``)."""
        origin = tuple(start for start, _ in tile.input_box)
        window = tuple(slice(a - o, b - o) for (a, b), o in zip(box, origin, strict=True))
        interpolation: Interpolation = (
            self.deform.interpolation if self.deform is not None else "bilinear"
        )
        if is_label and not issubclass(as_type or type(value), tv_tensors.Mask):
            interpolation = "nearest"  # a plain or PIL label (Mask types choose their own)
        interpolation = interpolation_for(value, interpolation, as_type)
        if fill is not None and interpolation != "nearest":
            return self.deformed_with_fill(value, tile, box, fill, field, as_type)
        if isinstance(field, FactoredField):
            if _factored_ok(value):
                self.check_fill(value, fill)  # as the crop would, wherever the box lies
                out = deform_factored(
                    value.as_subclass(torch.Tensor),
                    field,
                    window,  # type: ignore[arg-type]
                    origin,
                    interpolation,
                    lambda region: self.crop(value, region, fill),
                )
                if out is not None:
                    if isinstance(value, tv_tensors.TVTensor):
                        return tv_tensors.wrap(out, like=value)
                    return out
            field = field.dense()
        part = field[(slice(None), *window)]
        plan = plan_resample(part, origin, interpolation)
        return resample(self.crop(value, plan.box, fill), part, plan)

    def deformed_with_fill(
        self,
        value: torch.Tensor,
        tile: Tile,
        box: Box,
        fill: float,
        field: torch.Tensor | FactoredField,
        as_type: type | None = None,
    ) -> Any:
        """A label sampled smoothly (a weight map) with a fill: the fill goes exactly where
        a nearest-sampled label's fill goes (pixels whose nearest source pixel lies outside
        the image), and elsewhere the values interpolate the mirrored label, never the
        fill (which would weight valid pixels next to the border by up to the fill)."""
        fill_value = self.check_fill(value, fill)
        values = self.deformed(value, True, tile, box, None, field, as_type)
        # a plain label is sampled nearest: 1 inside the image, the fill 0 outside
        spatial = tuple(value.shape[value.ndim - len(box) :])
        ones = torch.ones((), dtype=torch.uint8).expand(spatial)
        inside = self.deformed(ones, True, tile, box, 0, field)
        filled = values.as_subclass(torch.Tensor).masked_fill(inside == 0, fill_value)
        if isinstance(value, tv_tensors.TVTensor):
            return tv_tensors.wrap(filled, like=value)
        return filled


def _factored_ok(value: Any) -> bool:
    """Whether the factored fast path reads ``value``: a dense CPU tensor that the default
    crop kernel reads (not a registered custom type) with the two spatial axes."""
    return (
        isinstance(value, torch.Tensor)
        and kernel_for(crop_tile, type(value)) is kernel_for(crop_tile, torch.Tensor)
        and value.device.type == "cpu"
        and value.layout == torch.strided
        and value.ndim >= 2
    )


class PairedTileCrop(OverlapTileCrop):
    """Crops an image's input window and its label's aligned output window.

    As :class:`OverlapTileCrop`, but labels get the *output* window
    (``geometry.output_size``) of the same tile: exactly the centre of the image's
    window, which is what a valid-convolution network predicts for it. Labels may get
    ``mask_fill`` outside the image instead of mirrored labels.

    Inputs: as torchvision's v2 transforms, plus ``t(image, target)``: both are
    transformed, a plain tensor or PIL target as the label (a plain tensor label comes
    back as a ``tv_tensors.Mask``, so later v2 transforms keep it aligned). A
    ``tv_tensors.Mask`` (or subclass) is a label anywhere; numpy arrays in an image or
    label role raise ``TypeError``; unregistered tv_tensor subclasses pass through. The
    full rule is on :class:`~unet_transforms.transforms._base.TileTransform`.
    Everything that is not a label (images, videos, plain tensors, PIL images, bounding
    boxes, key points) follows the image window. Two or more ``tv_tensors.Image`` and
    no ``Mask`` warn once (:class:`~unet_transforms.transforms._base.LabelAsImageWarning`).

    Args:
        geometry: The :class:`TileGeometry`.
        index: ``"random"`` (a fair window), a sampler of
            :mod:`unet_transforms.sampling`, an int tile index or ``"all"``, as in
            :class:`OverlapTileCrop`.
        mode: ``"reflect"`` or ``"symmetric"``.
        align: Grid alignment: ``"center"`` or ``"start"``.
        mask_fill: Value for label pixels outside the image (e.g. 255 or -100 as an
            ignore index); ``None`` mirrors labels like images; or one per label type,
            as torchvision's ``fill=``: ``{tv_tensors.Mask: 255, WeightMap: 0.0}``,
            looked up along the label's MRO, then ``"others"``, else mirrored. Bool
            labels get the fill if it is 0 or 1, else ``False``.
        deform: A :class:`~unet_transforms.Deformation`, as in :class:`OverlapTileCrop`:
            one displacement field over the input window; labels take its centre part
            (the output window), so image and label stay aligned, and get ``mask_fill``
            where it reaches outside the image.

    Example:
        >>> import torch
        >>> t = PairedTileCrop(TileGeometry(572, 388), mask_fill=255)
        >>> image, label = t(torch.rand(1, 300, 900), torch.zeros(300, 900, dtype=torch.uint8))
        >>> tuple(image.shape), tuple(label.shape)
        ((1, 572, 572), (388, 388))
    """

    def __init__(
        self,
        geometry: TileGeometry | Mapping[str, Any],
        *,
        index: TileIndex = "random",
        mode: MirrorMode = "reflect",
        align: Align = "center",
        mask_fill: MaskFill | Mapping[type | str, float | None] = None,
        deform: Deformation | None = None,
    ) -> None:
        super().__init__(geometry, index=index, mode=mode, align=align, deform=deform)
        self.mask_fill = check_mask_fill(mask_fill)

    @property
    def pairs_labels(self) -> bool:
        return True

    def window(self, tile: Tile, inpt: Any) -> tuple[Box, float | None]:
        if self.unwrap(inpt)[1]:
            return tile.output_box, label_fill(self.mask_fill, inpt)
        return tile.input_box, None
