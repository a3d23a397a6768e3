"""Choosing the U-Net tile size that computes the fewest pixels for an image."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from ._checks import as_list_if_1d, is_int
from .geometry import TileGeometry, _UNetArithmetic
from .grid import TileGrid, _image_size

__all__ = ["plan_geometry"]

_SEARCH_STEPS = 1 << 10
"""Most tile counts :func:`plan_geometry` tries per axis (bounds its work)."""


def plan_geometry(
    image_size: int | Sequence[int],
    *,
    max_input_size: int | Sequence[int],
    depth: int = 4,
    convs_per_level: int = 2,
    kernel_size: int = 3,
    ndim: int = 2,
) -> TileGeometry:
    """The valid U-Net geometry that computes the fewest input pixels for an image.

    Every valid input size of a valid-convolution U-Net works with the overlap-tile
    strategy, so the tile size can be chosen to waste the least work. Among the
    :meth:`TileGeometry.unet` geometries whose input fits ``max_input_size`` (the memory
    budget) per axis, this returns the one minimising ``tiles * input area`` (the
    pixels the network reads), ties broken towards fewer tiles. The cost is a product of
    per-axis costs, so each axis is minimised on its own.

    The work is bounded whatever the sizes (milliseconds, even for ``10**9`` pixels and
    budgets): per axis the search tries each tile count at most once, from the fewest
    tiles up, stops by a lower bound on the remaining cost, and tries at most 1024
    tile counts. Networks with ``kernel_size > 1`` stop long before that bound (under
    100 tile counts for axes up to ``10**7`` pixels); when the bound stops the search,
    the chosen size reads at most ``1 + 2 / 1024`` times the fewest pixels on that axis.

    Args:
        image_size: Spatial size of the image (int for square 2-D, or per axis).
        max_input_size: Largest input tile per axis (int or per axis).
        depth: U-Net poolings.
        convs_per_level: Unpadded convolutions per level.
        kernel_size: Convolution kernel size.
        ndim: Spatial axes when sizes are ints (2 or 3).

    Returns:
        The chosen :class:`TileGeometry`.

    Raises:
        ValueError: If no valid input size fits the budget (the message names the
            smallest valid one), a size is not a positive int, or ``depth`` is not in
            ``[0, 62]`` (see :meth:`TileGeometry.unet`).

    Example:
        >>> g = plan_geometry(512, max_input_size=800)
        >>> g, TileGrid(512, g).shape
        (TileGeometry(700, 516, step=512), (1, 1))
    """
    if not is_int(ndim):
        raise TypeError(f"ndim must be an int (2 or 3), got {type(ndim).__name__}")
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    image_size, max_input_size = as_list_if_1d(image_size), as_list_if_1d(max_input_size)
    if isinstance(image_size, Sequence) and not isinstance(image_size, str):
        # a sequence sets the number of axes; an explicit, different ndim is a mistake
        if len(image_size) not in (2, 3) or (ndim != 2 and len(image_size) != ndim):
            expected = "2 or 3 entries" if ndim == 2 else f"{ndim} entries (ndim={ndim})"
            raise ValueError(f"image_size must have {expected}, got {image_size!r}")
        ndim = len(image_size)
    size = _image_size(image_size, ndim)
    given: object = (max_input_size,) * ndim if is_int(max_input_size) else max_input_size
    budget: tuple[int, ...] = ()
    if isinstance(given, Sequence) and len(given) == ndim and all(is_int(c) for c in given):
        budget = tuple(operator.index(c) for c in given)
    if len(budget) != ndim or min(budget) < 1:
        raise ValueError(
            f"max_input_size must be a positive int or {ndim} positive ints, got "
            f"{max_input_size!r}"
        )
    net = _UNetArithmetic(depth, convs_per_level, kernel_size)
    chosen_in: list[int] = []
    for axis, (n, cap) in enumerate(zip(size, budget, strict=True)):
        best = _best_input(net, n, cap)[0]
        if best is None:
            raise ValueError(
                f"no valid U-Net input size fits max_input_size={cap} on axis {axis}; the "
                f"smallest input with an exact tile stride is "
                f"{net.input_for_min_output(net.period)}"
            )
        chosen_in.append(best)
    return TileGeometry.unet(
        input_size=tuple(chosen_in),
        depth=depth,
        convs_per_level=convs_per_level,
        kernel_size=kernel_size,
        ndim=ndim,
    )


def _best_input(net: _UNetArithmetic, size: int, cap: int) -> tuple[int | None, int]:
    """The input size of at most ``cap`` that reads the fewest pixels along one axis,
    and the number of candidates tried.

    The usable inputs are ``first + P * j`` (``P = 2**depth``, ``first`` the smallest
    input with an output of at least ``P``); input ``first + P * j`` steps by
    ``m * P`` with ``m = m_first + j`` and needs ``tiles = ceil(t / m)`` tiles, where
    ``t = ceil(size / P)``. The search walks the tile counts from the fewest (largest
    tiles) up, taking the smallest input for each count, and stops when the lower bound
    ``t * input(m) / m`` of every smaller input (it falls with ``m``) reaches the best
    cost. At most :data:`_SEARCH_STEPS` (``K``) tile counts are tried, so the work is
    bounded whatever the sizes. If that stops the search, the result reads at most
    ``1 + 2 / K`` times the minimum: the first candidate (step ``m1``,
    ``tiles1 = ceil(t / m1)`` tiles) reads less than ``P * min(m1, tiles1)`` pixels
    more than the lower bound ``tiles1 * A + P * t`` of every candidate
    (``A = input(m) - P * m``); the ``K`` distinct steps tried, all at most ``m1``,
    give ``m1 >= K``, hence ``min(m1, tiles1) <= t / K + 1``, and the ``K`` distinct
    tile counts give ``t >= K``. Returns ``None`` if no usable input fits ``cap``.
    """
    period = net.period
    first = net.input_for_min_output(period)
    if first > cap:
        return None, 0
    m_first = (first - net.total_loss) // period  # step of the first input, in periods
    m_low, m_high = m_first, m_first + (cap - first) // period
    t = -(-size // period)  # image size in periods, rounded up

    def candidate(m: int) -> tuple[int, tuple[int, int, int]]:
        """The smallest step with the tile count of step ``m``, and its (cost, tiles, input)."""
        tiles = -(-t // m)
        m = max(m_low, -(-t // tiles))
        inp = first + (m - m_first) * period
        return m, (tiles * inp, tiles, inp)

    m, best = candidate(m_high)
    tried = 1
    while tried < _SEARCH_STEPS:
        m -= 1
        # every step <= m reads at least t * input(m) / m pixels; ties lose on tiles
        if m < m_low or t * (first + (m - m_first) * period) >= best[0] * m:
            break
        m, key = candidate(m)
        best = min(best, key)
        tried += 1
    return best[2], tried


def computed_pixels(image_size: Sequence[int], geometry: TileGeometry) -> int:
    """Input pixels the network reads to segment an image: ``tiles * input area``."""
    return len(TileGrid(image_size, geometry)) * math.prod(geometry.input_size)
