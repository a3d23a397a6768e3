"""The overlap-tile plan of one image: where every tile's windows lie."""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ._boxes import unravel
from ._checks import as_list_if_1d, is_int, is_one_of
from ._value import ImmutableValue
from .config import Configurable
from .functional._mirror import MirrorMode, check_mode
from .functional._tile import Box, as_box, crop_tile, spatial_shape
from .geometry import TileGeometry, as_geometry

__all__ = ["Align", "Tile", "TileGrid", "TileIndexError", "Window", "tile_at"]

Align = Literal["center", "start"]
Window = Literal["keep", "output", "input"]
_WINDOWS = ("keep", "output", "input")


class TileIndexError(IndexError, ValueError):
    """A tile index outside the grid (both an ``IndexError`` and a ``ValueError``).

    An ``IndexError`` so that iteration protocols and ``for`` loops over indices work,
    a ``ValueError`` so that it is caught with the other argument errors.

    Example:
        >>> grid = TileGrid((10, 10), TileGeometry(12, 8))
        >>> try:
        ...     grid[4]
        ... except ValueError as e:
        ...     print(type(e).__name__, isinstance(e, IndexError))
        TileIndexError True
    """


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`; boxes are per-axis ``(start, stop)`` in image coordinates.

    Attributes:
        index: Position in the grid's C order (``-1`` for a tile outside any grid).
        grid_index: Per-axis position in the grid.
        input_box: The window the network reads (``input_size``).
        output_box: The window the network predicts (``output_size``), centred in the
            input window; what a training label covers.
        keep_box: The part a crop merge keeps (``step``), centred in the output window;
            keep windows partition the image.

    Example:
        >>> tile = TileGrid((500, 700), TileGeometry(572, 388))[1]
        >>> tile.index, tile.grid_index
        (1, (0, 1))
        >>> tile.input_box, tile.output_box
        (((-230, 342), (258, 830)), ((-138, 250), (350, 738)))
    """

    index: int
    grid_index: tuple[int, ...]
    input_box: Box
    output_box: Box
    keep_box: Box


def tile_at(
    geometry: TileGeometry,
    output_start: Sequence[int],
    *,
    index: int = -1,
    grid_index: tuple[int, ...] = (),
) -> Tile:
    """The tile whose output window starts at ``output_start`` (image coordinates).

    Args:
        geometry: The tile geometry.
        output_start: Per-axis start of the output window.
        index: Grid index to record (``-1`` for a free-standing tile).
        grid_index: Per-axis grid position to record.

    Returns:
        The :class:`Tile` with its three nested windows.

    Example:
        >>> t = tile_at(TileGeometry(572, 388), (0, 100))
        >>> t.input_box, t.output_box
        (((-92, 480), (8, 580)), ((0, 388), (100, 488)))
    """
    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    if (
        isinstance(output_start, str)
        or not isinstance(output_start, Sequence)
        or not all(is_int(s) for s in output_start)
    ):
        raise TypeError(f"output_start must be a sequence of ints, got {output_start!r}")
    if len(output_start) != geometry.ndim:
        raise ValueError(
            f"output_start must have {geometry.ndim} entries, got {tuple(output_start)!r}"
        )
    return _build_tile(geometry, output_start, index, grid_index)


def _build_tile(
    geometry: TileGeometry, output_start: Sequence[int], index: int, grid_index: tuple[int, ...]
) -> Tile:
    """:func:`tile_at` for arguments that are known to be valid."""
    inp, out, keep = [], [], []
    for s, i, o, m, k, e in zip(
        output_start,
        geometry.input_size,
        geometry.output_size,
        geometry.margin,
        geometry.step,
        geometry.keep_offset,
        strict=True,
    ):
        s = operator.index(s)
        out.append((s, s + o))
        inp.append((s - m, s - m + i))
        keep.append((s + e, s + e + k))
    return Tile(index, grid_index, tuple(inp), tuple(out), tuple(keep))


def _image_size(image_size: object, ndim: int) -> tuple[int, ...]:
    image_size = as_list_if_1d(image_size)  # a 1-D numpy array or tensor of sizes
    if is_int(image_size):
        sizes: tuple[Any, ...] = (operator.index(image_size),) * ndim  # type: ignore[arg-type]
    elif isinstance(image_size, Sequence | torch.Size) and not isinstance(image_size, str):
        sizes = tuple(image_size)
    else:
        raise TypeError(
            f"image_size must be an int or a sequence of {ndim} ints, got "
            f"{type(image_size).__name__}"
        )
    if len(sizes) != ndim or not all(is_int(s) for s in sizes):
        raise ValueError(
            f"image_size must have {ndim} ints (geometry.ndim={ndim}), got {image_size!r}"
        )
    sizes = tuple(operator.index(s) for s in sizes)
    if min(sizes) < 1:
        raise ValueError(f"image_size must be positive on every axis, got {sizes}")
    return sizes


class TileGrid(ImmutableValue, Configurable):
    """The overlap-tile plan for one image: the single place where windows are computed.

    Per axis the grid has ``ceil(size / step)`` tiles. Each tile has three nested,
    centred windows (see :class:`Tile`): keep windows partition ``tiles * step >= size``
    pixels and the overhang is split evenly before and after the image
    (``align="center"``, floor before) or put after it (``align="start"``).

    Args:
        image_size: Spatial size of the image (int for a square 2-D image, or per axis).
        geometry: The :class:`TileGeometry`.
        align: ``"center"`` or ``"start"``.

    Raises:
        TypeError: If ``geometry`` is not a :class:`TileGeometry`.
        ValueError: If the image size is not ``geometry.ndim`` positive ints or ``align``
            is unknown.

    Example:
        >>> grid = TileGrid((512, 512), TileGeometry(572, 388), align="start")
        >>> grid.shape, len(grid), grid.padding, grid.padded_size
        ((2, 2), 4, ((92, 356), (92, 356)), (960, 960))
        >>> grid[1].output_box
        ((0, 388), (388, 776))
    """

    _value_fields = ("image_size", "geometry", "align")
    image_size: tuple[int, ...]
    geometry: TileGeometry
    align: Align
    shape: tuple[int, ...]
    origin: tuple[int, ...]

    def __init__(
        self,
        image_size: int | Sequence[int],
        geometry: TileGeometry | Mapping[str, Any],
        *,
        align: Align = "center",
    ) -> None:
        geometry = as_geometry(geometry)
        if not is_one_of(align, ("center", "start")):
            raise ValueError(f"align must be 'center' or 'start', got {align!r}")
        size = _image_size(image_size, geometry.ndim)
        shape = tuple(math.ceil(n / s) for n, s in zip(size, geometry.step, strict=True))
        overhang = (t * s - n for t, s, n in zip(shape, geometry.step, size, strict=True))
        origin = tuple(-(o // 2) if align == "center" else 0 for o in overhang)
        if math.prod(shape) > sys.maxsize:  # len() could not return it
            raise ValueError(
                f"image_size {size} needs a {shape} grid of {math.prod(shape)} tiles, more "
                f"than {sys.maxsize}: use a larger step"
            )
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "geometry", geometry)
        object.__setattr__(self, "align", align)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "origin", origin)

    # ------------------------------------------------------------------ tiles
    def __len__(self) -> int:
        return math.prod(self.shape)

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> Tile:
        i = self._check_index(index)
        grid_index = unravel(i, self.shape)
        start = [
            o + g * s - e
            for o, g, s, e in zip(
                self.origin, grid_index, self.geometry.step, self.geometry.keep_offset, strict=True
            )
        ]
        return _build_tile(self.geometry, start, i, grid_index)

    def position(self, index: int) -> tuple[int, ...]:
        """The per-axis grid position of tile ``index`` (``self[index].grid_index``,
        without building the tile); :meth:`flat_index` is its inverse.

        Raises:
            TypeError: If ``index`` is not an int.
            TileIndexError: If it is outside the grid.

        Example:
            >>> grid = TileGrid((10, 10), TileGeometry(8, 6, step=4))
            >>> grid.position(5), grid.position(-1), grid.flat_index(grid.position(5))
            ((1, 2), (2, 2), 5)
        """
        return unravel(self._check_index(index), self.shape)

    def _check_index(self, index: object) -> int:
        if not is_int(index):
            raise TypeError(f"tile index must be an int, got {type(index).__name__}")
        i: int = operator.index(index)  # type: ignore[arg-type]
        n = len(self)
        if not -n <= i < n:
            raise TileIndexError(
                f"tile index must be in [{-n}, {n}) for a {self.shape} grid, got {i}"
            )
        return i % n

    # ------------------------------------------------------------------ canvas
    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """Per-axis ``(before, after)`` mirror padding of the canvas holding every input window."""
        first, last = self[0], self[-1]
        return tuple(
            (-a, b - n)
            for (a, _), (_, b), n in zip(
                first.input_box, last.input_box, self.image_size, strict=True
            )
        )

    @property
    def padded_size(self) -> tuple[int, ...]:
        """Spatial size of the mirror-extrapolated canvas."""
        return tuple(b + n + a for (b, a), n in zip(self.padding, self.image_size, strict=True))

    # ------------------------------------------------------------------ extraction
    def _check_image(self, image: Any, name: str) -> None:
        size = spatial_shape(image, self.geometry.ndim, "image")
        if size != self.image_size:
            raise ValueError(
                f"{name} has spatial size {size} (shape {tuple(getattr(image, 'shape', size))}) "
                f"but the grid was planned for {self.image_size}"
            )

    def extract(self, image: Any, index: int, mode: MirrorMode = "reflect") -> Any:
        """The input window ``(..., *input_size)`` of tile ``index``.

        Equal to ``mirror_pad(image, grid.padding)`` cropped to the window, computed from
        the unpadded image (cost proportional to the tile). Numpy arrays, memory maps
        and array-likes (zarr, h5py) are read only where needed and returned as tensors.

        Args:
            image: Tensor/tv_tensor ``(..., *image_size)``, array-like or PIL image.
            index: Tile index (negative counts from the end).
            mode: ``"reflect"`` or ``"symmetric"``.

        Returns:
            The input window.

        Example:
            >>> import torch
            >>> grid = TileGrid(3, TileGeometry(6, 2))
            >>> grid.extract(torch.arange(9).reshape(3, 3), 0)
            tensor([[8, 7, 6, 7, 8, 7],
                    [5, 4, 3, 4, 5, 4],
                    [2, 1, 0, 1, 2, 1],
                    [5, 4, 3, 4, 5, 4],
                    [8, 7, 6, 7, 8, 7],
                    [5, 4, 3, 4, 5, 4]])
        """
        check_mode(mode)
        self._check_image(image, "image")
        return crop_tile(image, self[index].input_box, mode)

    def extract_output(
        self, label: Any, index: int, mode: MirrorMode = "reflect", fill: float | None = None
    ) -> Any:
        """The output window ``(..., *output_size)`` of tile ``index`` of a label.

        Args:
            label: Tensor/tv_tensor ``(..., *image_size)``, array-like or PIL image.
            index: Tile index.
            mode: ``"reflect"`` or ``"symmetric"``.
            fill: Value for pixels outside the image (an ignore index); ``None`` mirrors.

        Returns:
            The output window.

        Example:
            >>> import torch
            >>> grid = TileGrid(3, TileGeometry(6, 2))
            >>> grid.extract_output(torch.arange(9).reshape(3, 3), 3, fill=-1)
            tensor([[ 8, -1],
                    [-1, -1]])
        """
        check_mode(mode)
        self._check_image(label, "label")
        return crop_tile(label, self[index].output_box, mode, fill)

    # ------------------------------------------------------------------ neighbourhoods
    def overlapping(
        self, box: Sequence[tuple[int, int]], window: Window = "output"
    ) -> tuple[range, ...]:
        """Per-axis grid positions of the tiles whose ``window`` intersects ``box``.

        The tiles are the grid's tiles at every combination of the returned positions
        (their C-order indices follow with :meth:`flat_index`). With ``window="keep"``
        these are the tiles that own a pixel of ``box``; with ``"output"`` the tiles
        whose predictions reach into it (what a blending merger needs); with
        ``"input"`` the tiles that read it.

        Args:
            box: Per-axis ``(start, stop)`` in image coordinates (may reach outside).
            window: ``"keep"``, ``"output"`` or ``"input"``.

        Returns:
            One ``range`` of grid positions per axis (empty where no tile intersects).

        Raises:
            TypeError: If ``box`` is not a sequence of int ``(start, stop)`` pairs.
            ValueError: If ``window`` is unknown or ``box`` does not have one pair with
                ``start < stop`` per axis.

        Example:
            >>> grid = TileGrid((10, 10), TileGeometry(8, 6, step=4), align="start")
            >>> grid.shape, grid.overlapping(((0, 4), (4, 5)), "keep")
            ((3, 3), (range(0, 1), range(1, 2)))
            >>> grid.overlapping(((0, 4), (4, 5)), "output")
            (range(0, 2), range(0, 2))
        """
        g = self.geometry
        if not is_one_of(window, _WINDOWS):
            raise ValueError(f"window must be 'keep', 'output' or 'input', got {window!r}")
        box = as_box(box)
        if len(box) != g.ndim:
            raise ValueError(f"box must have {g.ndim} (start, stop) pairs, got {box!r}")
        ranges = []
        for (lo, hi), o, s, e, m, out, inp, n in zip(
            box,
            self.origin,
            g.step,
            g.keep_offset,
            g.margin,
            g.output_size,
            g.input_size,
            self.shape,
            strict=True,
        ):
            # window of position k: [o + k * s + offset, ... + length)
            offset, length = {"keep": (0, s), "output": (-e, out), "input": (-e - m, inp)}[window]
            first = (lo - o - offset - length) // s + 1
            stop = -((o + offset - hi) // s)  # ceil((hi - o - offset) / s)
            ranges.append(range(max(first, 0), max(min(stop, n), max(first, 0))))
        return tuple(ranges)

    def flat_index(self, position: Sequence[int]) -> int:
        """The C-order tile index of a per-axis grid position (the inverse of ``grid_index``).

        Example:
            >>> grid = TileGrid((10, 10), TileGeometry(8, 6, step=4))
            >>> grid.flat_index((1, 2)), grid[5].grid_index
            (5, (1, 2))
        """
        if len(position) != len(self.shape) or not all(
            is_int(p) and 0 <= operator.index(p) < n
            for p, n in zip(position, self.shape, strict=False)
        ):
            raise TileIndexError(
                f"position must have {len(self.shape)} ints inside the {self.shape} grid, "
                f"got {tuple(position)!r}"
            )
        index = 0
        for p, n in zip(position, self.shape, strict=True):
            index = index * n + operator.index(p)
        return index
