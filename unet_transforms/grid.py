"""The overlap-tile plan of one image: where every tile's windows lie."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ._checks import as_list_if_1d, is_int
from .functional._mirror import MirrorMode, check_mode, empty_like_shape
from .functional._tile import Box, crop_tile, spatial_shape
from .geometry import TileGeometry

__all__ = ["Align", "Tile", "TileGrid", "TileIndexError", "tile_at"]

Align = Literal["center", "start"]


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
        keep_box: The part used when stitching (``step``), centred in the output window.

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
    if len(output_start) != geometry.ndim:
        raise ValueError(
            f"output_start must have {geometry.ndim} entries, got {tuple(output_start)!r}"
        )
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


@dataclass(frozen=True, init=False)
class TileGrid:
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
        TypeError: If ``geometry`` is not a :class:`TileGeometry` or a size is not an int.
        ValueError: If the image size does not have ``geometry.ndim`` positive entries or
            ``align`` is unknown.

    Example:
        >>> grid = TileGrid((512, 512), TileGeometry(572, 388), align="start")
        >>> grid.shape, len(grid), grid.padding, grid.padded_size
        ((2, 2), 4, ((92, 356), (92, 356)), (960, 960))
        >>> grid[1].output_box
        ((0, 388), (388, 776))
    """

    image_size: tuple[int, ...]
    geometry: TileGeometry
    align: Align
    shape: tuple[int, ...] = field(init=False, compare=False)
    origin: tuple[int, ...] = field(init=False, compare=False, repr=False)

    def __init__(
        self, image_size: int | Sequence[int], geometry: TileGeometry, *, align: Align = "center"
    ) -> None:
        if not isinstance(geometry, TileGeometry):
            raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
        if align not in ("center", "start"):
            raise ValueError(f"align must be 'center' or 'start', got {align!r}")
        size = _image_size(image_size, geometry.ndim)
        shape = tuple(math.ceil(n / s) for n, s in zip(size, geometry.step, strict=True))
        overhang = (t * s - n for t, s, n in zip(shape, geometry.step, size, strict=True))
        origin = tuple(-(o // 2) if align == "center" else 0 for o in overhang)
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
        grid_index = tuple(int(v) for v in _unravel(i, self.shape))
        start = [
            o + g * s - e
            for o, g, s, e in zip(
                self.origin, grid_index, self.geometry.step, self.geometry.keep_offset, strict=True
            )
        ]
        return tile_at(self.geometry, start, index=i, grid_index=grid_index)

    def _check_index(self, index: object) -> int:
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"tile index must be an int, got {type(index).__name__}")
        i: int = operator.index(index)
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
        size = spatial_shape(image, self.geometry.ndim)
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

    # ------------------------------------------------------------------ stitching
    def keep_slices(
        self, index: int, tile_size: Sequence[int]
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Where tile ``index``'s kept pixels come from and go to.

        Args:
            index: Tile index.
            tile_size: Spatial size of the network's output for the tile: ``output_size``
                (valid convolutions) or ``input_size`` (same padding).

        Returns:
            ``(source, destination)``: per-axis slices into the tile's output and into
            the image. Only the part of the keep window inside the image is returned.

        Example:
            >>> grid = TileGrid(5, TileGeometry(8, 4), align="start")
            >>> grid.keep_slices(1, (4, 4))
            ((slice(0, 4, None), slice(0, 1, None)), (slice(0, 4, None), slice(4, 5, None)))
        """
        g = self.geometry
        tile_size = tuple(tile_size)
        if tile_size == g.output_size:
            offset = g.keep_offset
        elif tile_size == g.input_size:
            offset = tuple(m + e for m, e in zip(g.margin, g.keep_offset, strict=True))
        else:
            raise ValueError(
                f"tile outputs must have spatial size {g.output_size} (output_size) or "
                f"{g.input_size} (input_size), got {tile_size}"
            )
        tile = self[index]
        src, dst = [], []
        for (a, b), n, off in zip(tile.keep_box, self.image_size, offset, strict=True):
            lo, hi = max(a, 0), min(b, n)
            dst.append(slice(lo, hi))
            src.append(slice(off + lo - a, off + hi - a))
        return tuple(src), tuple(dst)

    def stitch(self, outputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Assembles tile outputs into the full-size result ``(..., *image_size)``.

        Each tile contributes its keep window; every image pixel comes from exactly one
        tile and the overhang outside the image is dropped.

        Args:
            outputs: Tensor ``(len(grid), ..., *output_size)`` in grid order (a
                valid-convolution network), or ``(len(grid), ..., *input_size)`` (a
                same-padding network); a sequence of per-tile tensors also works.

        Returns:
            The stitched tensor, with the dtype and device of the outputs.

        Raises:
            ValueError: If the number of tiles or their shape does not match the grid.

        Example:
            >>> import torch
            >>> grid = TileGrid((5, 7), TileGeometry(6, 4, step=2))
            >>> image = torch.rand(3, 5, 7)
            >>> tiles = [grid.extract(image, i)[..., 1:5, 1:5] for i in range(len(grid))]
            >>> torch.equal(grid.stitch(tiles), image)
            True
        """
        n = len(self)
        ndim = self.geometry.ndim
        if isinstance(outputs, torch.Tensor):
            count, shapes = outputs.shape[0] if outputs.ndim else 0, {tuple(outputs.shape[1:])}
        elif isinstance(outputs, Sequence) and all(isinstance(t, torch.Tensor) for t in outputs):
            count, shapes = len(outputs), {tuple(t.shape) for t in outputs}
        else:
            raise TypeError(
                f"outputs must be a tensor or a sequence of tensors, got {type(outputs).__name__}"
            )
        expected = (
            f"(len(grid)={n}, ..., *{self.geometry.output_size}) or "
            f"(len(grid)={n}, ..., *{self.geometry.input_size})"
        )
        shape = next(iter(shapes)) if len(shapes) == 1 else None
        if (
            count != n
            or shape is None
            or len(shape) < ndim
            or tuple(shape[-ndim:]) not in (self.geometry.output_size, self.geometry.input_size)
        ):
            got = (
                tuple(outputs.shape)
                if isinstance(outputs, torch.Tensor)
                else f"{count} tiles of shapes {sorted(shapes)}"
            )
            raise ValueError(f"outputs must have shape {expected}, got {got}")
        lead = shape[: len(shape) - ndim]
        first = outputs[0]
        result = empty_like_shape((*lead, *self.image_size), first.dtype, first.device)
        for i in range(n):
            self._paste(result, i, outputs[i])  # shapes checked above, once
        return result

    def paste(
        self,
        result: torch.Tensor,
        index: int,
        tile_output: torch.Tensor,
        *,
        tile_size: Sequence[int] | None = None,
    ) -> None:
        """Writes tile ``index``'s keep window from ``tile_output`` into ``result`` in place.

        ``result`` is ``(..., *image_size)`` and ``tile_output`` is ``(..., *output_size)``
        or ``(..., *input_size)`` with leading axes that broadcast to ``result``'s; used
        by :meth:`stitch` and tiled inference.

        Raises:
            TypeError: If ``result`` or ``tile_output`` is not a tensor.
            ValueError: If their shapes do not fit the grid or each other.

        Example:
            >>> import torch
            >>> grid = TileGrid(4, TileGeometry(4, 2))
            >>> result = torch.zeros(4, 4)
            >>> grid.paste(result, 0, torch.ones(2, 2))
            >>> int(result.sum())
            4
        """
        self._check_paste(result, tile_output, tile_size)
        self._paste(result, index, tile_output)

    def _check_paste(
        self, result: torch.Tensor, tile_output: torch.Tensor, tile_size: Sequence[int] | None
    ) -> None:
        ndim = self.geometry.ndim
        for name, x in (("result", result), ("tile_output", tile_output)):
            if not isinstance(x, torch.Tensor) or x.ndim < ndim:
                raise TypeError(
                    f"{name} must be a tensor with at least {ndim} axes, got "
                    f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
                )
        if tuple(result.shape[result.ndim - ndim :]) != self.image_size:
            raise ValueError(
                f"result must have shape (..., *{self.image_size}) (the image size), got "
                f"{tuple(result.shape)}"
            )
        lead = tuple(result.shape[: result.ndim - ndim])
        tile_lead = tuple(tile_output.shape[: tile_output.ndim - ndim])
        try:  # as assignment broadcasts: extra leading axes of size 1 are allowed
            both = tuple(torch.broadcast_shapes(tile_lead, lead))  # type: ignore[no-untyped-call]
            extra = len(both) - len(lead)
            fits = both[extra:] == lead and all(n == 1 for n in both[:extra])
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"tile_output {tuple(tile_output.shape)} must have leading axes that "
                f"broadcast to result's {lead} (result {tuple(result.shape)})"
            )
        size = tuple(tile_output.shape[tile_output.ndim - ndim :])
        if tile_size is not None and tuple(tile_size) != size:
            raise ValueError(
                f"tile_size {tuple(tile_size)} must be tile_output's spatial size {size}"
            )

    def _paste(self, result: torch.Tensor, index: int, tile_output: torch.Tensor) -> None:
        """:meth:`paste` without the shape checks, for callers that made them once."""
        ndim = self.geometry.ndim
        src, dst = self.keep_slices(index, tile_output.shape[tile_output.ndim - ndim :])
        to: tuple[Any, ...] = (Ellipsis, *dst)
        frm: tuple[Any, ...] = (Ellipsis, *src)
        result[to] = tile_output[frm]


def _unravel(i: int, shape: tuple[int, ...]) -> Iterator[int]:
    strides = list(itertools.accumulate(reversed(shape[1:]), operator.mul, initial=1))[::-1]
    for stride, n in zip(strides, shape, strict=True):
        yield (i // stride) % n
