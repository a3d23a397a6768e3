"""Box arithmetic shared by the merger and the chunk writer."""

from __future__ import annotations

from typing import Any

from .functional._tile import Box

__all__ = ["intersect", "relative"]


def intersect(a: Box, b: Box) -> Box | None:
    """The intersection of two boxes, or ``None`` when they do not meet."""
    box = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b, strict=True))
    return None if any(lo >= hi for lo, hi in box) else box


def relative(box: Box, to: Box) -> tuple[Any, ...]:
    """``(..., *slices)`` of ``box`` in the coordinates of ``to`` (which holds it)."""
    return (
        Ellipsis,
        *(slice(lo - t, hi - t) for (lo, hi), (t, _) in zip(box, to, strict=True)),
    )
