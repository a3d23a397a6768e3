"""The U-Net paper's random elastic deformation, drawn per tile by the crop transforms."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ._checks import as_int
from .config import Configurable
from .functional._deform import deformation_coords

__all__ = ["Deformation"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return number


def _grid(grid: object) -> int | tuple[int, ...]:
    if isinstance(grid, Sequence) and not isinstance(grid, str):
        if len(grid) not in (2, 3):
            raise ValueError(f"grid must be an int or 2 or 3 ints, got {tuple(grid)!r}")
        points = tuple(as_int("grid", g) for g in grid)
    else:
        points = (as_int("grid", grid),)
    if min(points) < 1:
        raise ValueError(f"grid must be >= 1 point per axis, got {grid!r}")
    return points[0] if len(points) == 1 else points


def _scale(scale: object) -> tuple[float, float]:
    if isinstance(scale, str) or not isinstance(scale, Sequence) or len(scale) != 2:
        raise TypeError(f"scale must be a (low, high) pair of numbers, got {scale!r}")
    low, high = (_number("scale", s) for s in scale)
    if not 0 < low <= high:
        raise ValueError(f"scale must be a range 0 < low <= high, got {tuple(scale)!r}")
    return low, high


class Deformation(Configurable):
    """A random elastic deformation of the tile, with optional rotation, scaling and flips.

    As in the U-Net paper: displacement vectors on a coarse ``grid`` (3 x 3, or 3 x 3 x 3
    in 3-D) drawn from a Gaussian of ``sigma`` pixels, upsampled bicubically over the
    tile's input window. Give it to :class:`~unet_transforms.OverlapTileCrop` or
    :class:`~unet_transforms.PairedTileCrop` as ``deform=``: the tile is then read in
    one resampling from the source image (mirrored outside it), images and labels from
    the same field, so they stay aligned. Every draw comes from torch's global RNG, in
    the crop's ``make_params``.

    Args:
        grid: Coarse grid points per axis: an int, or one per spatial axis.
        sigma: Standard deviation of the displacements at the grid points, in pixels.
        rotation: Rotation in degrees, drawn uniformly from ``[-rotation, rotation]``
            (in 3-D one angle per axis plane).
        scale: ``(low, high)``: a zoom factor drawn uniformly from the range (above 1
            magnifies).
        flip: Mirror each axis of the tile with probability ½.
        interpolation: For images: ``"bilinear"`` or ``"bicubic"`` (2-D only); labels
            are sampled nearest, weight maps bilinear.

    Example:
        >>> import torch
        >>> d = Deformation(sigma=10.0, rotation=15.0)
        >>> d
        Deformation(sigma=10.0, rotation=15.0)
        >>> _ = torch.manual_seed(0)
        >>> tuple(d.sample((572, 572)).shape)  # source coordinates, component first
        (2, 572, 572)
        >>> Deformation(sigma=0.0).sample((2, 3))[1].tolist()  # identity: integers
        [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]
    """

    def __init__(
        self,
        *,
        grid: int | Sequence[int] = 3,
        sigma: float = 10.0,
        rotation: float = 0.0,
        scale: tuple[float, float] | Sequence[float] = (1.0, 1.0),
        flip: bool = False,
        interpolation: Literal["bilinear", "bicubic"] = "bilinear",
    ) -> None:
        self.grid = _grid(grid)
        self.sigma = _number("sigma", sigma)
        self.rotation = _number("rotation", rotation)
        self.scale = _scale(scale)
        if not isinstance(flip, bool):
            raise TypeError(f"flip must be a bool, got {type(flip).__name__} {flip!r}")
        self.flip = flip
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}"
            )
        self.interpolation: Literal["bilinear", "bicubic"] = interpolation

    def check_ndim(self, ndim: int) -> None:
        """Raises ``ValueError`` unless the deformation fits ``ndim`` spatial axes."""
        if isinstance(self.grid, tuple) and len(self.grid) != ndim:
            raise ValueError(
                f"deform.grid must have {ndim} entries for a {ndim}-D geometry, got {self.grid!r}"
            )
        if ndim == 3 and self.interpolation == "bicubic":
            raise ValueError(
                "deform.interpolation must be 'bilinear' for a 3-D geometry (grid_sample has "
                "no tricubic mode), got 'bicubic'"
            )

    def sample(self, size: Sequence[int]) -> torch.Tensor:
        """Draws one deformation of a window of ``size`` from torch's global RNG.

        Only what the configuration makes random is drawn (nothing for the identity).

        Returns:
            ``(ndim, *size)`` float32 source coordinates relative to the window's start
            (see :func:`~unet_transforms.functional.deformation_coords`).
        """
        return deformation_coords(size, **self.make_params(len(size)))

    def make_params(self, ndim: int) -> dict[str, Any]:
        """Draws the random parameters of one deformation from torch's global RNG.

        What :meth:`sample` draws, before it is turned into coordinates: the keyword
        arguments of :func:`~unet_transforms.functional.deformation_coords`, as a
        transform's ``make_params`` gives its kernel's (a crop turns them into a field
        of its own form). Only what the configuration makes random is drawn.

        Args:
            ndim: The number of spatial axes (2 or 3).

        Returns:
            ``{"displacement": (ndim, *grid) tensor or None, "angles": [degrees],
            "scale": float, "flips": [bool per axis] or []}``.

        Raises:
            ValueError: If the deformation does not fit ``ndim`` axes.

        Example:
            >>> import torch
            >>> from unet_transforms.functional import deformation_coords
            >>> d = Deformation(sigma=4.0, rotation=10.0)
            >>> _ = torch.manual_seed(0)
            >>> params = d.make_params(2)
            >>> sorted(params), tuple(params["displacement"].shape)
            (['angles', 'displacement', 'flips', 'scale'], (2, 3, 3))
            >>> _ = torch.manual_seed(0)
            >>> torch.equal(deformation_coords((5, 6), **params), d.sample((5, 6)))
            True
        """
        self.check_ndim(ndim)
        grid = self.grid if isinstance(self.grid, tuple) else (self.grid,) * ndim
        # float32 whatever torch's default dtype is: the same draws for a seed, and no
        # bfloat16 coarse grid (its 8-bit mantissa would round the displacements)
        displacement = (
            torch.randn(ndim, *grid, dtype=torch.float32) * self.sigma if self.sigma > 0 else None
        )
        angles: list[float] = []
        if self.rotation > 0:
            draws = torch.rand(1 if ndim == 2 else 3, dtype=torch.float64)
            angles = ((draws * 2 - 1) * self.rotation).tolist()
        low, high = self.scale
        scale = (
            low + float(torch.rand((), dtype=torch.float64)) * (high - low) if high > low else low
        )
        flips = (torch.rand(ndim, dtype=torch.float32) < 0.5).tolist() if self.flip else []
        return {"displacement": displacement, "angles": angles, "scale": scale, "flips": flips}
