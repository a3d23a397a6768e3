"""MirrorExtrapolate: mirror-extend images and labels alike."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from .._checks import is_int
from ..config import Configurable
from ..functional._mirror import MirrorMode, normalize_padding
from ..geometry import TileGeometry
from ..grid import Align, TileGrid
from ._base import MaskFill, TileTransform, check_geometry, check_mask_fill, label_fill

__all__ = ["MirrorExtrapolate"]


def parse_padding(padding: object) -> tuple[tuple[int, int], ...]:
    """Per-axis ``(before, after)`` pairs from any accepted padding form.

    Accepts an int (all sides of a 2-D image), torchvision's ``[left/right, top/bottom]``
    or ``[left, top, right, bottom]``, or per-axis ``(before, after)`` pairs (2 or 3).
    """
    if is_int(padding):
        p = operator.index(padding)  # type: ignore[arg-type]
        pairs: Any = ((p, p), (p, p))
    elif isinstance(padding, Sequence) and not isinstance(padding, str):
        if padding and all(is_int(v) for v in padding):
            v = [operator.index(x) for x in padding]
            if len(v) == 1:
                pairs = ((v[0], v[0]), (v[0], v[0]))
            elif len(v) == 2:
                pairs = ((v[1], v[1]), (v[0], v[0]))
            elif len(v) == 4:
                pairs = ((v[1], v[3]), (v[0], v[2]))
            else:
                raise ValueError(
                    "padding as a flat sequence must have 1, 2 ([left/right, top/bottom]) or 4 "
                    f"([left, top, right, bottom]) ints, got {len(v)}: {padding!r}"
                )
        else:
            pairs = padding
            if len(pairs) not in (2, 3):
                raise ValueError(
                    f"padding as (before, after) pairs must have 2 or 3 pairs (one per spatial "
                    f"axis), got {len(pairs)}: {padding!r}"
                )
    else:
        raise TypeError(
            "padding must be an int, a sequence of ints or a sequence of (before, after) "
            f"pairs, got {type(padding).__name__}"
        )
    return normalize_padding(pairs)


class MirrorExtrapolate(Configurable, TileTransform):
    """Mirror-extrapolates the border of images and labels, for any pad width.

    Unlike ``v2.Pad(padding_mode="reflect")``, pads may be wider than the image (the
    image is mirrored again and again, as :func:`numpy.pad` does), ``"symmetric"``
    works for every size, and labels can get an ignore value instead of mirrored
    labels. Bounding boxes and key points are translated, never mirrored.

    Give exactly one of ``padding`` (fixed) and ``geometry`` (pad to the overlap-tile
    canvas ``TileGrid(size, geometry, align=align).padding`` of each input's size).

    Inputs: one rule for every transform of this library (see
    :class:`~unet_transforms.transforms._base.TileTransform` and :class:`PairedTileCrop`);
    labels are ``tv_tensors.Mask`` leaves and the target of ``t(image, target)``.
    Spatial axes are the trailing 2 (or 3, for 3-D padding/geometry) axes.

    Args:
        padding: An int; torchvision's ``[left/right, top/bottom]`` or ``[left, top,
            right, bottom]``; or per-axis ``(before, after)`` pairs (2 or 3 axes).
        geometry: A :class:`TileGeometry` whose overlap-tile canvas to pad to.
        mode: ``"reflect"`` (edge not repeated) or ``"symmetric"`` (edge repeated).
        align: Grid alignment when ``geometry`` is given: ``"center"`` or ``"start"``.
        mask_fill: Value for labels in the extrapolated region (an ignore index);
            ``None`` mirrors labels like images; or one per label type, as in
            :class:`PairedTileCrop`.

    Example:
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> t = MirrorExtrapolate(geometry=TileGeometry(572, 388), align="start")
        >>> image = tv_tensors.Image(torch.rand(3, 512, 512))
        >>> mask = tv_tensors.Mask(torch.zeros(512, 512, dtype=torch.int64))
        >>> out_image, out_mask = t(image, mask)
        >>> tuple(out_image.shape), tuple(out_mask.shape)
        ((3, 960, 960), (960, 960))
    """

    def __init__(
        self,
        padding: int | Sequence[int] | Sequence[tuple[int, int]] | None = None,
        *,
        geometry: TileGeometry | Mapping[str, Any] | None = None,
        mode: MirrorMode = "reflect",
        align: Align = "center",
        mask_fill: MaskFill | Mapping[type | str, float | None] = None,
    ) -> None:
        super().__init__(mode=mode, align=align)
        if (padding is None) == (geometry is None):
            raise ValueError(
                "exactly one of padding and geometry must be given, got "
                f"padding={padding!r} and geometry={geometry!r}"
            )
        self.padding = None if padding is None else parse_padding(padding)
        self.geometry = None if geometry is None else check_geometry(geometry)
        self.mask_fill = check_mask_fill(mask_fill)

    @property
    def pairs_labels(self) -> bool:
        return self.mask_fill is not None

    @property
    def spatial_ndim(self) -> int:
        if self.geometry is not None:
            return self.geometry.ndim
        assert self.padding is not None
        return len(self.padding)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        size = self.spatial_size(flat_inputs)
        if self.geometry is not None:
            padding = TileGrid(size, self.geometry, align=self.align).padding
        else:
            assert self.padding is not None
            padding = self.padding
        box = tuple((-b, n + a) for (b, a), n in zip(padding, size, strict=True))
        return {"box": box, "padding": padding}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        value, is_label = self.unwrap(inpt)
        fill = label_fill(self.mask_fill, inpt) if is_label else None
        return self.as_label_if_plain(inpt, self.crop(value, params["box"], fill))
