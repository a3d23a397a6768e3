"""Choosing the U-Net tile size that computes the fewest pixels for an image."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from ._checks import as_list_if_1d, is_int
from .geometry import TileGeometry, _UNetArithmetic
from .grid import TileGrid, _image_size

__all__ = ["plan_geometry"]


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
            smallest valid one), or a size is not a positive int.

    Example:
        >>> g = plan_geometry(512, max_input_size=800)
        >>> g, TileGrid(512, g).shape
        (TileGeometry(700, 516, step=512), (1, 1))
    """
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
    period = 2**depth
    smallest = net.input_for_min_output(period)
    chosen_in: list[int] = []
    for axis, (n, cap) in enumerate(zip(size, budget, strict=True)):
        best: tuple[int, int, int] | None = None  # (cost, tiles, input)
        for inp in net.valid_inputs(cap):
            out = net.forward(inp)
            if out is None or out < period:
                continue
            geometry = TileGeometry.unet(
                input_size=inp,
                depth=depth,
                convs_per_level=convs_per_level,
                kernel_size=kernel_size,
                ndim=2,
            )
            tiles = TileGrid((n, 1), geometry).shape[0]
            key = (tiles * inp, tiles, inp)
            if best is None or key < best:
                best = key
        if best is None:
            raise ValueError(
                f"no valid U-Net input size fits max_input_size={cap} on axis {axis}; the "
                f"smallest input with an exact tile stride is {smallest}"
            )
        chosen_in.append(best[2])
    return TileGeometry.unet(
        input_size=tuple(chosen_in),
        depth=depth,
        convs_per_level=convs_per_level,
        kernel_size=kernel_size,
        ndim=ndim,
    )


def computed_pixels(image_size: Sequence[int], geometry: TileGeometry) -> int:
    """Input pixels the network reads to segment an image: ``tiles * input area``."""
    return len(TileGrid(image_size, geometry)) * math.prod(geometry.input_size)
