"""Merging tile outputs into one result: exact keep windows, or blended overlaps.

:class:`~unet_transforms.TileGrid` plans the tiles; a :class:`TileMerger` assembles
what the network predicts for them, as tiler splits its ``Tiler`` from its ``Merger``.
The weighting of overlapping predictions is one pluggable function,
:func:`blend_weights`; the post-processing of merged logits (probabilities, labels) is
applied to each part of the result as soon as every tile reaching it has been added.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from ._boxes import intersect, relative, slices
from ._checks import as_int64_if_wide_unsigned, is_int
from ._chunks import ChunkWriter, is_zarr, storage_unit, stored_units, unit_boxes
from ._model import check_flag, numpy_dtype, parse_device
from .config import Configurable
from .functional._mirror import empty_like_shape
from .functional._tile import Box, as_box
from .grid import Tile, TileGrid

__all__ = [
    "Blend",
    "Output",
    "TileMerger",
    "blend_weights",
    "label_dtype",
    "result_dtype",
]

Blend = Literal["crop", "gaussian", "hann"]
"""How overlapping tile outputs are weighted (or a weight tensor of the output tile's size)."""
Output = Literal["logits", "probabilities", "labels"]
"""What the merged logits become."""
_BLENDS = ("crop", "gaussian", "hann")
_OUTPUTS = ("logits", "probabilities", "labels")
_GAUSSIAN_SIGMA_SCALE = 0.125  # MONAI's default for compute_importance_map


def blend_weights(blend: str | torch.Tensor, size: Sequence[int]) -> torch.Tensor | None:
    """The per-pixel weights of one output tile of spatial size ``size``.

    ``"crop"`` has none (``None``): each pixel comes from the one tile whose keep
    window holds it. ``"gaussian"`` is MONAI's
    ``compute_importance_map(size, mode="gaussian", sigma_scale=0.125)``: a product of
    1-D Gaussians with ``sigma = 0.125 * size`` centred on the tile, clamped below at
    its smallest value or ``1e-3``, whichever is larger. ``"hann"`` is the product of
    1-D symmetric Hann windows (zero on the tile's border). A tensor is taken as the
    weights themselves.

    Args:
        blend: ``"crop"``, ``"gaussian"``, ``"hann"`` or a real, finite, non-negative
            tensor of shape ``size``.
        size: Spatial size of an output tile.

    Returns:
        float32 weights of shape ``size`` (float64 for a float64 tensor), or ``None``.

    Raises:
        TypeError: If ``blend`` is neither one of the names nor a real tensor.
        ValueError: If a name is unknown or the tensor's shape or values do not fit.

    Example:
        >>> blend_weights("hann", (3, 5))
        tensor([[0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                [0.0000, 0.5000, 1.0000, 0.5000, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000, 0.0000]])
        >>> blend_weights("gaussian", (4, 4))[0]
        tensor([0.0010, 0.0067, 0.0067, 0.0010])
        >>> blend_weights("crop", (4, 4)) is None
        True
    """
    size = tuple(int(n) for n in size)
    if isinstance(blend, torch.Tensor):
        if not (blend.is_floating_point() or blend.dtype in _INT_DTYPES):
            raise TypeError(f"blend weights must be a real tensor, got dtype {blend.dtype}")
        if tuple(blend.shape) != size:
            raise ValueError(
                f"blend weights must have the output tile's spatial shape {size}, got "
                f"{tuple(blend.shape)}"
            )
        weights = blend.detach().to(
            device="cpu", dtype=torch.float64 if blend.dtype == torch.float64 else torch.float32
        )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("blend weights must be finite and non-negative")
        return weights.clone()
    if not isinstance(blend, str):
        raise TypeError(
            f"blend must be 'crop', 'gaussian', 'hann' or a weight tensor, got "
            f"{type(blend).__name__}"
        )
    if blend not in _BLENDS:
        raise ValueError(
            f"blend must be 'crop', 'gaussian', 'hann' or a weight tensor, got {blend!r}"
        )
    if blend == "crop":
        return None
    axes = []
    for n in size:
        if blend == "gaussian":  # MONAI's arithmetic, in float32 as there
            x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float32)
            axes.append(torch.exp(x**2 / (-2 * (n * _GAUSSIAN_SIGMA_SCALE) ** 2)))
        else:
            axes.append(torch.hann_window(n, periodic=False, dtype=torch.float32))
    weights = axes[0]
    for i, x in enumerate(axes[1:], start=1):  # outer products in MONAI's order
        weights = weights.unsqueeze(-1) * x[(None,) * i]
    if blend == "gaussian":
        weights = weights.clamp(min=max(float(weights.min()), 1e-3))
    return weights


_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


# the dtypes that hold every bfloat16 value (it has no numpy dtype)
_HOLD_BFLOAT16 = frozenset({torch.float32, torch.float64, torch.complex64, torch.complex128})


def _holds(target: Any, dtype: torch.dtype) -> bool:
    """Whether the torch or numpy dtype ``target`` holds every value of ``dtype``
    (numpy's "safe" casting, which covers torch's unsigned dtypes that
    ``torch.promote_types`` refuses)."""
    if target == dtype:
        return True
    if isinstance(target, torch.dtype):
        if target == torch.bfloat16:
            return dtype in (torch.bool, torch.uint8, torch.int8)  # 8 significant bits
        if dtype == torch.bfloat16:
            return target in _HOLD_BFLOAT16
        try:
            return torch.promote_types(dtype, target) == target
        except RuntimeError:  # torch does not promote its uint16, uint32 and uint64
            target = numpy_dtype(target)
    elif dtype == torch.bfloat16:
        return any(np.dtype(target) == numpy_dtype(d) for d in _HOLD_BFLOAT16)
    return bool(np.can_cast(numpy_dtype(dtype), np.dtype(target), "safe"))


def label_dtype(channels: int) -> torch.dtype:
    """The dtype of ``output="labels"`` for ``channels`` classes.

    uint8 up to 256 classes (and for one channel, thresholded to 0/1), int16 up to
    32,768, int32 beyond.

    Example:
        >>> label_dtype(2), label_dtype(300), label_dtype(40000)
        (torch.uint8, torch.int16, torch.int32)
    """
    if channels <= 256:
        return torch.uint8
    return torch.int16 if channels <= 32768 else torch.int32


def result_dtype(
    output: str, channels: int, tile_dtype: torch.dtype, blend: str | torch.Tensor = "crop"
) -> torch.dtype:
    """The dtype of a merged result, from the tiles' dtype.

    ``"crop"`` logits keep the tiles' dtype (each pixel is copied from one tile); blended
    logits and probabilities are computed in at least float32; labels follow
    :func:`label_dtype`.

    Example:
        >>> result_dtype("logits", 3, torch.float16), result_dtype("logits", 3, torch.float16, "hann")
        (torch.float16, torch.float32)
        >>> result_dtype("labels", 3, torch.float32)
        torch.uint8
    """
    if output == "labels":
        return label_dtype(channels)
    crop = isinstance(blend, str) and blend == "crop"
    if output == "logits" and crop:
        return tile_dtype
    if crop and tile_dtype.is_floating_point:
        return tile_dtype
    return torch.promote_types(tile_dtype, torch.float32)


def _post(values: torch.Tensor, output: str, dtype: torch.dtype) -> torch.Tensor:
    """Merged logits ``(C, *spatial)`` (or ``(..., *spatial)`` for logits) as ``output``."""
    if output == "logits":
        return values.to(dtype)
    if output == "probabilities":
        x = values.to(dtype)
        return torch.sigmoid(x) if x.shape[0] == 1 else torch.softmax(x, dim=0)
    if values.shape[0] == 1:
        x = values[0] if values.is_floating_point() else values[0].float()
        return (torch.sigmoid(x) > 0.5).to(dtype)
    return _argmax_channels(values, dtype)


def _argmax_channels(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``values.argmax(0).to(dtype)``: the first index of the largest, NaN the largest.

    torch's reductions over a leading axis are slow on the CPU (torch 2.14, 2 x 192²
    float32: ``argmax(0)`` 9 ms, ``max(dim=0).indices`` 0.46 ms), and so are its
    element-wise ops with bool results (``gt`` 43 us, ``masked_fill_`` 250 us, ``isnan``
    + ``any`` 190 us). So the channels are compared one at a time, into float32 (``gt``
    12 us): 1.0 where a channel is strictly larger than the best so far (ties keep the
    first index), times its index, kept by ``maximum`` (later channels have larger
    indices). A NaN, which every comparison loses, is found by the sum and left to
    ``max(dim=0)``, which ranks it first as argmax does; so are other devices.
    """
    if values.dtype == torch.bool:
        values = values.to(torch.uint8)
    values = as_int64_if_wide_unsigned(values)
    channels = values.shape[0]
    if (
        not values.is_cpu
        or channels > 2**24  # float32 holds every index exactly
        or (values.is_floating_point() and bool(values.sum().isnan()))
    ):
        return values.max(dim=0).indices.to(dtype)
    best = values[0]
    index = torch.zeros(best.shape, dtype=torch.float32)
    larger = torch.empty(best.shape, dtype=torch.float32)
    for c in range(1, channels):
        torch.gt(values[c], best, out=larger)
        torch.maximum(index, larger.mul_(c), out=index)
        if c < channels - 1:
            best = torch.maximum(best, values[c])
    return index.to(dtype)


# One axis's intervals, (start, stop) each: a span is one interval in two coordinate
# frames (e.g. in the region and in the output tile); a part is (cell k, k * stride,
# here in the cell, there in the output tile); pairs are (here, there) per tile.
_Span = tuple[tuple[int, int], tuple[int, int]]
_Part = tuple[int, int, tuple[int, int], tuple[int, int]]
_Pairs = tuple[_Span, ...]
_MAX_CACHED = 4096  # tile and cell positions an axis keeps worked out


class _Axis:
    """One axis of a merger's plan: where tiles' windows meet the region and the cells.

    Every window is a product of per-axis intervals, so a tile's parts are the products
    of its per-axis parts: :meth:`TileMerger.add` intersects no boxes. Positions are
    worked out when first asked for and kept (up to ``_MAX_CACHED`` of them: a row of
    tiles shares its positions along every axis but one).
    """

    __slots__ = (
        "_box",
        "_grid",
        "_keys",
        "_tiles",
        "axis",
        "cells",
        "offset",
        "origin",
        "region",
        "size",
        "step",
        "stride",
        "tiles",
    )

    def __init__(
        self, grid: TileGrid, axis: int, stride: int, box: Box, cells: range, tiles: range
    ) -> None:
        g = grid.geometry
        self._grid, self._box, self.axis = grid, box, axis
        self.origin, self.step = grid.origin[axis], g.step[axis]
        self.offset, self.size = g.keep_offset[axis], g.output_size[axis]
        self.stride = stride  # of the grid's C order along this axis
        self.region, self.cells, self.tiles = box[axis], cells, tiles
        self._tiles: dict[int, tuple[_Span, _Span | None, list[_Part]]] = {}
        self._keys: dict[int, _Pairs] = {}

    def _overlapping(self, lo: int, hi: int, window: Literal["keep", "output"]) -> range:
        """The grid's positions along this axis whose ``window`` meets ``[lo, hi)``."""
        box = (*self._box[: self.axis], (lo, hi), *self._box[self.axis + 1 :])
        return self._grid.overlapping(box, window)[self.axis]

    def cell(self, k: int) -> tuple[int, int]:
        """Keep window ``k`` clipped to the region, in image coordinates."""
        start = self.origin + k * self.step
        return max(start, self.region[0]), min(start + self.step, self.region[1])

    def window(self, k: int) -> tuple[int, int]:
        """Keep window ``k`` clipped to the region, in region coordinates."""
        lo, hi = self.cell(k)
        return lo - self.region[0], hi - self.region[0]

    def _output(self, t: int) -> int:
        return self.origin + t * self.step - self.offset  # [lo, lo + size)

    def _part(self, t: int, k: int) -> _Span | None:
        """Where tile ``t``'s output meets cell ``k``: in the cell, in the output tile."""
        lo = self._output(t)
        k0, k1 = self.cell(k)
        p0, p1 = max(k0, lo), min(k1, lo + self.size)
        return ((p0 - k0, p1 - k0), (p0 - lo, p1 - lo)) if p0 < p1 else None

    def tile(self, t: int) -> tuple[_Span, _Span | None, list[_Part]]:
        """Tile position ``t``: its output window inside the region and its keep window
        inside the region (``None`` when outside), each as ``(in the region, in the
        output tile)``, and ``(k, k * stride, here, there)`` for every cell ``k`` its
        output reaches (``here`` in the cell, ``there`` in the output tile)."""
        found = self._tiles.get(t)
        if found is None:
            (r0, r1), lo = self.region, self._output(t)
            a, b = max(lo, r0), min(lo + self.size, r1)
            keep = None
            if t in self.cells:
                k0, k1 = self.cell(t)
                keep = ((k0 - r0, k1 - r0), (k0 - lo, k1 - lo))
            parts = []
            for k in self._overlapping(a, b, "keep") if a < b else ():
                part = self._part(t, k)
                if part is not None:
                    parts.append((k, k * self.stride, *part))
            if len(self._tiles) >= _MAX_CACHED:
                self._tiles.clear()
            found = self._tiles[t] = (((a - r0, b - r0), (a - lo, b - lo)), keep, parts)
        return found

    def key(self, k: int) -> _Pairs:
        """The ``(here, there)`` parts of every tile position reaching cell ``k``, in order."""
        found = self._keys.get(k)
        if found is None:
            parts = (self._part(t, k) for t in self._overlapping(*self.cell(k), "output"))
            if len(self._keys) >= _MAX_CACHED:
                self._keys.clear()
            found = self._keys[k] = tuple(p for p in parts if p is not None)
        return found


class _Cell:
    """A keep window being blended: the parts held so far and how many tiles are to come.

    Parts are summed when the last one arrives, in the order they came: until then a
    window that only a neighbour's border has reached holds that thin strip, not a
    buffer of its own size. A part is ``(here, values, weights)``: its box relative to
    the window, the tile's output there and the weights there. When the merger sums in
    place, in its result, nothing is held.
    """

    __slots__ = ("parts", "position", "remaining")

    def __init__(self, position: tuple[int, ...], remaining: int) -> None:
        self.position = position
        self.parts: list[tuple[Box, torch.Tensor, torch.Tensor]] = []
        self.remaining = remaining

    def merged(self, norm: torch.Tensor) -> torch.Tensor:
        """The weighted average ``sum(weight * output) / sum(weight)`` of the parts.

        Each ``weight * output`` is added with one rounding (``addcmul_``, a fused
        multiply-add), as the merger does when it sums in place.
        """
        lead = self.parts[0][1].shape[: self.parts[0][1].ndim - norm.ndim]
        total = norm.new_zeros((*lead, *norm.shape))
        for here, values, weights in self.parts:
            total[slices(here)].addcmul_(values, weights)
        return total.div_(norm)


_MAX_NORMS = 256  # sums of weights kept: a regular grid has a few patterns (edges, corners)


class TileMerger(Configurable):
    """Assembles tile outputs into one result: ``add(tile, output)``, then ``result()``.

    Every tile of the :class:`~unet_transforms.TileGrid` that reaches the merged
    ``region`` (the whole image by default) is added once, in any order;
    :meth:`tile_indices` lists them. The result is written into ``out`` (any
    array-like with ``shape``, ``dtype`` and slice assignment: a tensor, a numpy array
    or memory map, a zarr or h5py array) or into a tensor allocated on the first
    :meth:`add`.

    With ``blend="crop"`` (the default) each pixel is copied from the keep window of
    the one tile that owns it: no weights and no accumulation, and with a
    ``TileGeometry.unet`` geometry the result equals one forward pass over the whole
    image. Otherwise overlapping predictions are averaged with the weights of
    :func:`blend_weights`, for outputs that overlap (``step < output_size``, e.g.
    ``TileGeometry(512, 512, step=384)`` for a same-padding network); the weights must
    be positive on the keep window, so ``"hann"`` (zero at the tile's edges) needs a
    keep window off the edges (``step <= output_size - 2``), and without overlap
    ``"gaussian"`` equals ``"crop"`` to float rounding.
    Blended logits or probabilities into a result of the merger's own are summed in
    place and each keep window is divided by its sum of weights (and turned into
    probabilities) once its last tile is added, so nothing else is held. Otherwise
    (labels, or an ``out``) each keep window is summed, post-processed (``output``) and
    written as soon as its last tile is added, so besides the result only the parts of
    the keep windows still open are held (about one row of tiles when adding in grid
    order).

    Args:
        grid: The tile plan.
        blend: ``"crop"``, ``"gaussian"``, ``"hann"`` or a weight tensor of the output
            tile's spatial shape (see :func:`blend_weights`).
        output: ``"logits"`` (the merged outputs), ``"probabilities"`` (softmax over
            the channels, sigmoid for one channel) or ``"labels"`` (argmax per pixel,
            :func:`label_dtype`; one channel: sigmoid > 0.5).
        out: Where to write the result; its shape is ``(*lead, *region_size)``
            (``lead`` the tiles' leading axes, e.g. ``(C,)``), or ``region_size`` for
            labels, and its dtype must hold the result's without loss.
        region: Per-axis ``(start, stop)`` of the part of the image to merge (inside
            the image), e.g. one chunk; defaults to the whole image.
        device: Where an allocated result lives; defaults to the first tile's device.
        resume: Skip the storage units already stored in ``out`` (a zarr array, whose
            units are then stored even when they hold only its fill value): the result
            was written by an earlier, interrupted run of the same prediction. The
            stored units are trusted, not checked.

    Raises:
        TypeError: If ``grid`` is not a TileGrid, ``out`` is not array-like, or
            ``blend``, ``region`` or ``resume`` has the wrong type.
        ValueError: If ``output`` or ``blend`` is unknown, the weights are not positive
            on the keep window, ``region`` is not inside the image, ``out``'s spatial
            shape is not the region's, or ``resume=True`` without a zarr ``out``.

    Shape:
        - tile output: ``(..., *output_size)`` or ``(..., *input_size)`` (a
          same-padding network; centre-cropped to ``output_size``); exactly ``(C,
          *spatial)`` for probabilities and labels.
        - result: ``(..., *region_size)``; ``region_size`` for labels.

    Example:
        >>> import torch
        >>> from unet_transforms import TileGeometry, TileGrid
        >>> grid = TileGrid((5, 7), TileGeometry(6, 4, step=2))
        >>> image = torch.rand(3, 5, 7)
        >>> merger = TileMerger(grid)
        >>> for i in merger.tile_indices():
        ...     merger.add(i, grid.extract(image, i)[..., 1:5, 1:5])
        >>> torch.equal(merger.result(), image)
        True
        >>> blended = TileMerger(grid, blend="gaussian", output="labels")
        >>> for i in blended.tile_indices():
        ...     blended.add(i, grid.extract(image, i)[..., 1:5, 1:5])
        >>> torch.equal(blended.result(), image.argmax(0).byte())
        True
    """

    def __init__(
        self,
        grid: TileGrid,
        *,
        blend: Blend | torch.Tensor = "crop",
        output: Output = "logits",
        out: Any = None,
        region: Sequence[tuple[int, int]] | None = None,
        device: torch.device | str | None = None,
        resume: bool = False,
    ) -> None:
        if not isinstance(grid, TileGrid):
            raise TypeError(f"grid must be a TileGrid, got {type(grid).__name__}")
        if not isinstance(output, str) or output not in _OUTPUTS:
            raise ValueError(
                f"output must be 'logits', 'probabilities' or 'labels', got {output!r}"
            )
        # the constructor's arguments, as given
        self.grid = grid
        self.blend = blend
        self.output = output
        self.out = out
        self.region = region
        self.device = device
        self.resume = check_flag("resume", resume)

        geometry = grid.geometry
        self._weights = blend_weights(blend, geometry.output_size)
        if self._weights is not None:
            keep = tuple(
                slice(e, e + s) for e, s in zip(geometry.keep_offset, geometry.step, strict=True)
            )
            if not bool((self._weights[keep] > 0).all()):
                raise ValueError(
                    f"blend weights must be positive on the keep window (the centre "
                    f"{geometry.step} of the {geometry.output_size} output tile), or pixels "
                    "get no weight at all: use a smaller step, so that the keep window stays "
                    "off the tile's zero-weight edges ('hann' is 0 on them: step <= "
                    "output_size - 2), or blend='gaussian'"
                )
        self._device = parse_device(device)
        self._box = self._check_region(region)
        self._size = tuple(hi - lo for lo, hi in self._box)
        if out is not None:
            self._check_out_type(out)
        self._cells = grid.overlapping(self._box, "keep")
        self._tiles = grid.overlapping(self._box, "keep" if self._weights is None else "output")
        self._open_cells = math.prod(len(r) for r in self._cells)
        self._needed: set[int] | None = None  # the cells to write, when some are stored
        self._writer = self._chunk_writer(out)
        self._pending: dict[int, _Cell] = {}
        self._added: set[int] = set()
        self._lead: tuple[int, ...] | None = None
        self._tile_dtype: torch.dtype | None = None
        self._dtype: torch.dtype | None = None
        self._result: Any = None
        self._device_weights: torch.Tensor | None = None
        self._norms: dict[tuple[_Pairs, ...], torch.Tensor] = {}
        self._in_place = False
        self._axes = tuple(
            # the C-order stride of axis a: its share of a keep window's flat index
            _Axis(
                grid, a, math.prod(grid.shape[a + 1 :]), self._box, self._cells[a], self._tiles[a]
            )
            for a in range(geometry.ndim)
        )

    # ------------------------------------------------------------------ checks
    def _check_region(self, region: object) -> Box:
        whole = tuple((0, n) for n in self.grid.image_size)
        if region is None:
            return whole
        box = as_box(region, "region")
        if len(box) != len(whole) or intersect(box, whole) != box:
            raise ValueError(
                f"region must have {len(whole)} (start, stop) pairs inside the image "
                f"{self.grid.image_size}, got {region!r}"
            )
        return box

    def _check_out_type(self, out: Any) -> None:
        if not (hasattr(out, "shape") and hasattr(out, "dtype") and hasattr(out, "__setitem__")):
            raise TypeError(
                "out must be a tensor or an array-like with .shape, .dtype and slice "
                f"assignment (numpy, memmap, zarr, h5py), got {type(out).__name__}"
            )
        if isinstance(out, np.ndarray) and not out.flags.writeable:
            raise ValueError(
                "out must be writable, got a read-only numpy array (a memmap opened with "
                "mode 'r'? open it with 'r+')"
            )
        strides = (
            out.stride()
            if isinstance(out, torch.Tensor)
            else out.strides
            if isinstance(out, np.ndarray)
            else ()
        )
        if any(stride == 0 and size > 1 for stride, size in zip(strides, out.shape, strict=False)):
            raise ValueError(
                "out must not have elements that share memory (a stride of 0, as expand() or "
                "broadcast_to() give); allocate it with torch.empty or numpy.empty"
            )
        nd = len(self._size)
        shape = tuple(int(s) for s in out.shape)
        if len(shape) < nd or shape[len(shape) - nd :] != self._size:
            raise ValueError(
                f"out must have shape (..., *{self._size}) (the region's size), got {shape}"
            )

    def _check_out(self, out: Any, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        got = tuple(int(s) for s in out.shape)
        if got != shape:
            raise ValueError(f"out must have shape {shape} for output={self.output!r}, got {got}")
        if not _holds(out.dtype, dtype):
            raise TypeError(
                f"out has dtype {out.dtype}, which cannot hold the {self.output} result's "
                f"{dtype} without loss"
            )

    def _position(self, tile: object) -> tuple[int, tuple[int, ...]]:
        """The index and grid position of a Tile or an index (checked)."""
        if isinstance(tile, Tile):
            if tile.index < 0 or self.grid[tile.index] != tile:
                raise ValueError(f"tile must be a tile of the merger's grid, got {tile!r}")
            return tile.index, tile.grid_index
        if not is_int(tile):
            raise TypeError(f"tile must be a Tile or an int index, got {type(tile).__name__}")
        position = self.grid.position(tile)  # type: ignore[arg-type]
        return self.grid.flat_index(position), position

    # ------------------------------------------------------------------ tiles
    def tile_indices(self) -> list[int]:
        """The indices of the tiles that reach the region, in grid (C) order.

        Example:
            >>> from unet_transforms import TileGeometry, TileGrid
            >>> grid = TileGrid((10, 10), TileGeometry(8, 6, step=4))
            >>> TileMerger(grid, region=((0, 3), (0, 10))).tile_indices()
            [0, 1, 2]
            >>> TileMerger(grid, blend="gaussian", region=((0, 3), (0, 10))).tile_indices()
            [0, 1, 2, 3, 4, 5]
        """
        tiles = [self.grid.flat_index(p) for p in itertools.product(*self._tiles)]
        if self._needed is None:
            return tiles
        reaching: set[int] = set()
        for c in self._needed:
            reaching.update(self._reaching(c))
        return [i for i in tiles if i in reaching]

    def _reaching(self, cell: int) -> list[int]:
        """The tiles whose outputs this merger needs for keep window ``cell``."""
        if self._weights is None:
            return [cell]
        box = intersect(self.grid[cell].keep_box, self._box)
        assert box is not None
        return [self.grid.flat_index(p) for p in itertools.product(*self.grid.overlapping(box))]

    def add(self, tile: int | Tile, output: torch.Tensor) -> None:
        """Adds the network's output for one tile.

        Args:
            tile: The tile or its index in the grid.
            output: ``(..., *output_size)``, or ``(..., *input_size)`` from a
                same-padding network (its centre ``output_size`` is used).

        Raises:
            TypeError: If ``output`` is not a real tensor.
            ValueError: If its shape does not fit the grid or the earlier tiles, or the
                tile was added before.
        """
        index, position = self._position(tile)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"output must be a tensor, got {type(output).__name__}")
        if output.is_complex():
            raise TypeError(f"output must be real, got dtype {output.dtype}")
        g = self.grid.geometry
        nd = g.ndim
        size = tuple(output.shape[output.ndim - nd :]) if output.ndim >= nd else ()
        if size not in (g.output_size, g.input_size) or (
            self.output != "logits" and output.ndim != nd + 1
        ):
            lead = "C" if self.output != "logits" else "..."
            raise ValueError(
                f"output must have shape ({lead}, *{g.output_size}) (output_size) or "
                f"({lead}, *{g.input_size}) (input_size) for output={self.output!r}, got "
                f"{tuple(output.shape)}"
            )
        lead_shape = tuple(output.shape[: output.ndim - nd])
        if self._lead is None:
            self._start(lead_shape, output)
        elif lead_shape != self._lead or output.dtype != self._tile_dtype:
            raise ValueError(
                f"output must have the leading shape {self._lead} and dtype "
                f"{self._tile_dtype} of the first tile, got {tuple(output.shape)} "
                f"{output.dtype}"
            )
        if index in self._added:
            raise ValueError(f"tile {index} was added already")
        self._added.add(index)
        if size != g.output_size:  # a same-padding network: its centre output_size
            centre = tuple((m, m + o) for m, o in zip(g.margin, g.output_size, strict=True))
            output = output[relative(centre, tuple((0, n) for n in size))]
        if self._weights is None:
            self._add_keep(index, position, output)
        else:
            self._add_blended(position, output)

    def result(self) -> Any:
        """The merged result (``out`` when given).

        Raises:
            ValueError: If tiles that reach the region are missing.
        """
        if self._open_cells == 0 and self._result is None and self.out is not None:
            return self.out  # resumed with every unit stored already
        if self._open_cells or self._result is None:
            missing = [i for i in self.tile_indices() if i not in self._added]
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise ValueError(
                f"{len(missing)} of {len(missing) + len(self._added)} tiles are missing "
                f"(indices {shown}): add every tile of tile_indices() first"
            )
        return self._result

    # ------------------------------------------------------------------ merging
    def _start(self, lead: tuple[int, ...], first: torch.Tensor) -> None:
        channels = lead[0] if lead else 1
        dtype = result_dtype(self.output, channels, first.dtype, self.blend)
        shape = (*(() if self.output == "labels" else lead), *self._size)
        # blended logits or probabilities into a result of its own (of the dtype they
        # are summed in): the weighted outputs are summed in place, in arrival order as
        # the parts would be (the same values, bit for bit), and each keep window is
        # divided by its sum of weights (and turned into probabilities) once complete
        self._in_place = (
            self._weights is not None
            and self.output in ("logits", "probabilities")
            and self.out is None
        )
        if self.out is not None:
            self._check_out(self.out, shape, dtype)
            self._result = self.out
        else:
            device = self._device or first.device
            self._result = self._allocate(shape, dtype, device, zeros=self._in_place)
        self._lead, self._tile_dtype, self._dtype = lead, first.dtype, dtype

    def _allocate(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, zeros: bool
    ) -> Any:
        with torch.inference_mode(False):  # a normal tensor, usable with autograd
            return empty_like_shape(shape, dtype, device, zeros)

    def _chunk_writer(self, out: Any) -> ChunkWriter | None:
        """Whole-unit writes into a chunked ``out``; with ``resume``, the units to skip."""
        nd = len(self._size)
        plain = out is None or isinstance(out, torch.Tensor | np.ndarray)
        unit = None if plain else storage_unit(out, nd)
        if self.resume and (unit is None or not is_zarr(out)):
            raise ValueError(
                "resume=True needs out= a zarr array (the chunks it has stored tell which "
                f"parts are complete), got {type(out).__name__}"
            )
        if unit is None:
            return None
        done = set()
        if self.resume:
            out = out.with_config({"write_empty_chunks": True})
            done = stored_units(out, nd)
        grid, start = self.grid, tuple(lo for lo, _ in self._box)
        expected: dict[tuple[int, ...], int] = {}
        needed: set[int] = set()
        for coords, box in unit_boxes(self._size, unit):
            if coords in done:
                continue
            image_box = tuple((lo + s, hi + s) for (lo, hi), s in zip(box, start, strict=True))
            cells = grid.overlapping(image_box, "keep")
            expected[coords] = math.prod(len(r) for r in cells)
            if done:
                needed.update(grid.flat_index(p) for p in itertools.product(*cells))
        if done:
            self._needed = needed
            self._open_cells = len(needed)
        return ChunkWriter(out, unit, expected)

    def _write(self, cell: int, box: Box, values: torch.Tensor) -> None:
        """Writes keep window ``cell``'s part ``box`` (region coordinates), post-processed."""
        if self._needed is not None and cell not in self._needed:
            return  # its storage units are stored already
        assert self._dtype is not None  # set by the first add
        values = _post(values, self.output, self._dtype)
        if isinstance(self._result, torch.Tensor):
            self._result[slices(box)] = values.to(self._result.device)
        else:
            if values.dtype == torch.bfloat16:  # no numpy dtype; float32 holds it exactly
                values = values.float()
            if self._writer is not None:
                self._writer.write(box, values.cpu())
            else:
                self._result[slices(box)] = values.cpu().numpy()
        self._open_cells -= 1

    def _add_keep(self, index: int, position: tuple[int, ...], output: torch.Tensor) -> None:
        keep = [axis.tile(p)[1] for axis, p in zip(self._axes, position, strict=True)]
        if all(k is not None for k in keep):  # its keep window meets the region
            here = tuple(k[0] for k in keep if k is not None)
            there = tuple(k[1] for k in keep if k is not None)
            self._write(index, here, output[slices(there)])

    def _add_blended(self, position: tuple[int, ...], output: torch.Tensor) -> None:
        axes = self._axes
        if any(p not in axis.tiles for axis, p in zip(axes, position, strict=True)):
            return  # a tile whose output misses the region
        spans = [axis.tile(p) for axis, p in zip(axes, position, strict=True)]
        assert self._weights is not None
        accumulate = torch.promote_types(output.dtype, torch.float32)
        device = self._result.device if self._in_place else output.device
        weights = self._device_weights
        if weights is None or weights.device != device or weights.dtype != accumulate:
            weights = self._device_weights = self._weights.to(device, accumulate)
        if self._in_place:
            # weight * output added with one rounding (a fused multiply-add), as
            # _Cell.merged adds the held parts: the same values, bit for bit
            there = slices(tuple(span[0][1] for span in spans))
            into = self._result[slices(tuple(span[0][0] for span in spans))]
            into.addcmul_(output[there].to(device, accumulate), weights[there])
        for combo in itertools.product(*(span[2] for span in spans)):
            c = sum(part[1] for part in combo)
            if self._needed is not None and c not in self._needed:
                continue  # its storage units are stored already
            cell = self._pending.get(c)
            if cell is None:
                at = tuple(part[0] for part in combo)
                remaining = math.prod(len(axis.key(k)) for axis, k in zip(axes, at, strict=True))
                cell = self._pending[c] = _Cell(at, remaining)
            if not self._in_place:  # held until the window is complete
                there = slices(tuple(part[3] for part in combo))
                values = output[there].to(accumulate, copy=True)
                cell.parts.append((tuple(part[2] for part in combo), values, weights[there]))
            cell.remaining -= 1
            if cell.remaining == 0:
                del self._pending[c]
                self._complete(c, cell, weights)

    def _complete(self, c: int, cell: _Cell, weights: torch.Tensor) -> None:
        """Divides (in place) or merges and writes keep window ``c`` once complete."""
        norm = self._norm(cell.position, weights)
        box = tuple(axis.window(k) for axis, k in zip(self._axes, cell.position, strict=True))
        if self._in_place:
            window = self._result[slices(box)]
            window.div_(norm.to(window.device))
            if self.output != "logits":
                window.copy_(_post(window, self.output, window.dtype))
            self._open_cells -= 1
        else:
            self._write(c, box, cell.merged(norm))

    def _norm(self, position: tuple[int, ...], weights: torch.Tensor) -> torch.Tensor:
        """The sum of the weights over keep window ``position``, cached by where its
        parts lie (every tile reaching it, in grid order)."""
        key = tuple(axis.key(k) for axis, k in zip(self._axes, position, strict=True))
        norm = self._norms.get(key)
        if norm is None or norm.device != weights.device or norm.dtype != weights.dtype:
            cells = (axis.cell(k) for axis, k in zip(self._axes, position, strict=True))
            size = tuple(hi - lo for lo, hi in cells)
            norm = weights.new_zeros(size)
            for combo in itertools.product(*key):
                here = slices(tuple(h for h, _ in combo))
                norm[here] += weights[slices(tuple(t for _, t in combo))]
            if len(self._norms) >= _MAX_NORMS:
                self._norms.clear()
            self._norms[key] = norm
        return norm
