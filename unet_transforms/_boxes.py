"""Box and index arithmetic shared by the grid, the samplers, the merger and the chunk
writer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the kernels import this module: no import of them at run time
    from .functional._tile import Box

__all__ = ["inside", "intersect", "relative", "shift", "slices", "unravel"]


def inside(box: Box, size: Sequence[int]) -> bool:
    """Whether ``box`` lies within an image of spatial ``size`` (no pixel outside it)."""
    return all(lo >= 0 and hi <= n for (lo, hi), n in zip(box, size, strict=True))


def intersect(a: Box, b: Box) -> Box | None:
    """The intersection of two boxes, or ``None`` when they do not meet."""
    box = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b, strict=True))
    return None if any(lo >= hi for lo, hi in box) else box


def shift(box: Box, to: Box) -> Box:
    """``box`` in the coordinates of ``to`` (which holds it)."""
    return tuple((lo - t, hi - t) for (lo, hi), (t, _) in zip(box, to, strict=True))


def slices(box: Box) -> tuple[Any, ...]:
    """``(..., *slices)`` indexing ``box`` in the trailing axes."""
    return (Ellipsis, *(slice(lo, hi) for lo, hi in box))


def relative(box: Box, to: Box) -> tuple[Any, ...]:
    """``(..., *slices)`` of ``box`` in the coordinates of ``to`` (which holds it)."""
    return slices(shift(box, to))


def unravel(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The C-order coordinates of flat ``index`` (``0 <= index < prod(shape)``) in
    ``shape``, as :func:`numpy.unravel_index` gives them, for one Python int."""
    coords = []
    for n in reversed(shape):
        index, c = divmod(index, n)
        coords.append(c)
    return tuple(reversed(coords))
