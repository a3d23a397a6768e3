"""Elastic deformation of one tile: a coordinate field, then one resampling of the source.

A deformed tile is read in three steps, each cheap and proportional to the tile:
:func:`deformation_coords` builds the field of source coordinates over the window,
:func:`plan_resample` finds the source box those coordinates reach (plus the
interpolation's support), :func:`~unet_transforms.functional.crop_tile` reads that box
mirror-extrapolated from the unpadded image, and :func:`resample` samples it once
(``torch.nn.functional.grid_sample``, or an exact gather for nearest and for integer
coordinates). :func:`deform_tile` chains them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors

from .._boxes import inside
from .._checks import is_int
from ..weightmap import WeightMap
from ._mirror import MirrorMode
from ._tile import Box, crop_tile, torch_compatible

__all__ = [
    "Interpolation",
    "ResamplePlan",
    "cubic_matrix",
    "deform_tile",
    "deformation_coords",
    "plan_resample",
    "resample",
]

Interpolation = Literal["nearest", "bilinear", "bicubic"]
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
# pixels of support before and after the floor of a coordinate, per interpolation
_SUPPORT = {"nearest": (0, 1), "bilinear": (0, 2), "bicubic": (1, 3)}
_CUBIC_A = -0.75  # torch's (and OpenCV's) bicubic coefficient
# PIL modes whose values are indices or bits: never interpolated
_NEAREST_PIL_MODES = ("1", "P", "PA")


def check_interpolation(interpolation: object, name: str = "interpolation") -> Interpolation:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"{name} must be 'nearest', 'bilinear' or 'bicubic', got {interpolation!r}"
        )
    return interpolation  # type: ignore[return-value]


def cubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The ``(n_out, n_in)`` matrix of bicubic upsampling along one axis.

    The weights of ``F.interpolate(mode="bicubic", align_corners=True)`` (cubic
    convolution with ``a = -0.75``, indices clamped at the ends), so that a separable
    product with one matrix per axis upsamples in any number of dimensions.

    Example:
        >>> m = cubic_matrix(3, 5)
        >>> tuple(m.shape), m.sum(dim=1).tolist()
        ((5, 3), [1.0, 1.0, 1.0, 1.0, 1.0])
    """
    if not (is_int(n_in) and is_int(n_out)) or n_in < 1 or n_out < 1:
        raise ValueError(f"n_in and n_out must be ints >= 1, got {n_in!r} and {n_out!r}")
    return _cubic_matrix(int(n_in), int(n_out)).clone()


@functools.lru_cache(maxsize=64)
def _cubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """:func:`cubic_matrix`, cached (tile sizes repeat): callers must not modify it."""
    ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    t = torch.arange(n_out, dtype=torch.float64) * ratio
    base = t.floor()
    f = t - base
    a = _CUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = torch.stack([far(f + 1), near(f), near(1 - f), far(2 - f)], dim=1)
    index = (base.to(torch.int64)[:, None] + torch.arange(-1, 3)).clamp(0, n_in - 1)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.scatter_add_(1, index, weights)
    return m.to(torch.float32)


def _rotation(angles: Sequence[float], ndim: int) -> torch.Tensor:
    """Rotation matrix: one angle (degrees) in 2-D, three (planes (1, 2), (0, 2), (0, 1)) in 3-D."""
    matrix = torch.eye(ndim, dtype=torch.float64)
    planes = [(0, 1)] if ndim == 2 else [(1, 2), (0, 2), (0, 1)]
    for angle, (i, j) in zip(angles, planes, strict=False):
        if angle == 0:
            continue
        r = torch.eye(ndim, dtype=torch.float64)
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        matrix = r @ matrix
    return matrix


def deformation_coords(
    size: Sequence[int],
    *,
    displacement: torch.Tensor | None = None,
    angles: Sequence[float] = (),
    scale: float = 1.0,
    flips: Sequence[bool] = (),
) -> torch.Tensor:
    """Source coordinates of every pixel of a window, relative to the window's start.

    Pixel ``p`` of the window reads the source at
    ``c + R @ F @ (p - c) / scale + d(p)``: ``c`` the window's centre, ``F`` the flips,
    ``R`` the rotation, and ``d`` the coarse ``displacement`` grid upsampled bicubically
    over the window (its corner points on the window's corner pixels), as in the U-Net
    paper. Without a displacement, rotation, scaling or flips the coordinates are the
    window's own integer positions, exactly.

    Args:
        size: The window's size per spatial axis (2 or 3 axes).
        displacement: ``(ndim, *grid)`` displacements in pixels at the coarse grid's
            points (component ``k`` along axis ``k``), or ``None``.
        angles: Rotation in degrees: one angle in 2-D, up to three in 3-D (in the
            planes of axes (1, 2), (0, 2) and (0, 1), applied in that order).
        scale: Zoom factor: above 1 magnifies (reads a smaller source region).
        flips: Per axis, whether to mirror the window about its centre.

    Returns:
        ``(ndim, *size)`` float32 coordinates: component ``k`` (along axis ``k``) first.

    Example:
        >>> deformation_coords((2, 3))[1].tolist()
        [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]
        >>> deformation_coords((2, 3), flips=(False, True))[1].tolist()
        [[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]
    """
    if (
        isinstance(size, str)
        or not isinstance(size, Sequence)
        or len(size) not in (2, 3)
        or not all(is_int(n) and n >= 1 for n in size)
    ):
        raise ValueError(f"size must be 2 or 3 ints >= 1, got {size!r}")
    size = tuple(int(n) for n in size)
    ndim = len(size)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    if len(angles) > (1 if ndim == 2 else 3) or len(flips) > ndim:
        raise ValueError(
            f"angles must hold at most {1 if ndim == 2 else 3} and flips at most {ndim} "
            f"entries for a {ndim}-D window, got {tuple(angles)!r} and {tuple(flips)!r}"
        )
    matrix, centre = _affine(size, angles, scale, flips)
    offsets = [
        (torch.arange(n, dtype=torch.float32) - c).reshape(
            [-1 if a == i else 1 for a in range(ndim)]
        )
        for i, (n, c) in enumerate(zip(size, centre, strict=True))
    ]
    if ndim == 2:
        return _coords_2d(size, centre, matrix, displacement)
    upsampled = None if displacement is None else _upsample(displacement, size)
    coords = torch.empty((ndim, *size), dtype=torch.float32)
    for k in range(ndim):
        coord = torch.full((1,) * ndim, centre[k], dtype=torch.float32)
        for j in range(ndim):
            weight = float(matrix[k, j])
            if weight != 0:
                coord = coord + weight * offsets[j]
        if upsampled is None:
            coords[k] = coord
        else:
            torch.add(upsampled[k], coord, out=coords[k])
    return coords


def _affine(
    size: tuple[int, ...], angles: Sequence[float], scale: float, flips: Sequence[bool]
) -> tuple[torch.Tensor, list[float]]:
    """``(R @ diag(flip) / scale, centre)`` of a window (arguments already checked)."""
    ndim = len(size)
    flip = torch.tensor(
        [-1.0 if f else 1.0 for f in (*flips, *[False] * (ndim - len(flips)))],
        dtype=torch.float64,
    )
    matrix = _rotation(angles, ndim) * flip / scale  # R @ diag(flip) / s
    return matrix, [(n - 1) / 2 for n in size]


def _coords_2d(
    size: tuple[int, ...],
    centre: list[float],
    matrix: torch.Tensor,
    displacement: torch.Tensor | None,
) -> torch.Tensor:
    """The 2-D field as one batched matrix product of its factors (see :func:`_factors_2d`)."""
    m = matrix.tolist()
    return torch.bmm(
        *_factors_2d(size, centre, (m[0][0], m[0][1], m[1][0], m[1][1]), displacement)
    )


@functools.lru_cache(maxsize=16)
def _static_2d(rows: int, cols: int, g0: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed parts of the factors, cached (tile sizes repeat), read only: ``left``
    ``[U0, i - c0, 1]`` ``(2, rows, g0 + 2)`` (both components, one storage; ``U0`` only
    with ``g0 > 0``), ``[1; j - c1]`` ``(2, cols)`` and ``U1.T`` for a ``g0``-point axis."""
    off0 = torch.arange(rows, dtype=torch.float32) - (rows - 1) / 2
    off1 = torch.arange(cols, dtype=torch.float32) - (cols - 1) / 2
    parts = [off0[:, None], torch.ones(rows, 1, dtype=torch.float32)]
    if g0 > 0:
        parts.insert(0, _cubic_matrix(g0, rows))
    left = torch.cat(parts, dim=1).expand(2, -1, -1)
    return left, torch.stack([torch.ones(cols, dtype=torch.float32), off1]), off1


@functools.lru_cache(maxsize=64)
def _cubic_rows(n_in: int, n_out: int) -> torch.Tensor:
    """``cubic_matrix(n_in, n_out).T``, contiguous and cached: read only."""
    return _cubic_matrix(n_in, n_out).T.contiguous()


def _factors_2d(
    size: tuple[int, ...],
    centre: list[float],
    matrix: tuple[float, float, float, float],
    displacement: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors of the 2-D field: ``coords[k] = left[k] @ right[k]``.

    The affine part ``centre_k + m_k0 (i - c0) + m_k1 (j - c1)`` is a row term plus a
    column term, and the bicubic displacement ``U0 @ D[k] @ U1.T`` is separable, so
    ``left[k] = [U0, i - c0, 1]`` (rows x (g0 + 2), the same for both components and
    every draw) and ``right[k] = [D[k] @ U1.T; m_k0; centre_k + m_k1 (j - c1)]``
    ((g0 + 2) x cols); without a displacement only the last two columns and rows.
    ``matrix`` is ``(m00, m01, m10, m11)``.
    """
    rows, cols = size
    m00, m01, m10, m11 = matrix
    # right's last two rows: [m_k0, centre_k; 0, m_k1] @ [1; j - c1]
    coef = torch.tensor([m00, 0.0, centre[0], m01, m10, 0.0, centre[1], m11], dtype=torch.float32)
    if displacement is None:
        left, basis, _ = _static_2d(rows, cols, 0)
        return left, torch.mm(coef.view(4, 2), basis).view(2, 2, cols)
    d = _check_displacement(displacement, 2).to(torch.float32)
    g0, g1 = d.shape[1:]
    left, basis, _ = _static_2d(rows, cols, g0)
    upsampled = torch.mm(d.reshape(2 * g0, g1), _cubic_rows(g1, cols)).view(2, g0, cols)
    affine = torch.mm(coef.view(4, 2), basis).view(2, 2, cols)
    return left, torch.cat([upsampled, affine], dim=1)


def _check_displacement(displacement: object, ndim: int) -> torch.Tensor:
    if not isinstance(displacement, torch.Tensor):
        raise TypeError(f"displacement must be a tensor, got {type(displacement).__name__}")
    if displacement.ndim != ndim + 1 or displacement.shape[0] != ndim:
        raise ValueError(
            f"displacement must have shape (ndim, *grid) = ({ndim}, ...) with {ndim} grid "
            f"axes, got {tuple(displacement.shape)}"
        )
    return displacement


# the cubic kernel (a = -0.75): its weights' absolute values sum to at most 1.375, their
# second derivatives' to at most 12 (and to 0: the weights sum to 1), at any position
_CUBIC_ABS_SUM = 1.375
_CUBIC_CURVATURE = 6.0  # 12 / 2: |sum_m c_m K''(t - m)| <= 6 * (max c - min c)
_BOUND_SLACK = 0.25  # pixels of sampling margin the bound's stride aims at
_MAX_STRIDE = 32


class FactoredField(NamedTuple):
    """A 2-D deformation field kept as its factors: ``coords[k] = left[k] @ right[k]``.

    ``left`` is ``(2, rows, r)`` (cached and shared: read only) and ``right``
    ``(2, r, cols)`` (see :func:`_factors_2d`), so that a window of the field, its grid
    for ``grid_sample`` (normalised in the same product) and a conservative bound of its
    values each cost a fraction of the dense field. ``curvature`` bounds
    ``|d2 c / di2| + |d2 c / dj2|`` of either component (in pixels^-1): the bicubic
    displacement's, the affine part has none. ``integral``: the field may consist of
    integers (no displacement was drawn). ``interleaved`` is ``right`` as
    ``(r, cols, 2)``, component 1 (x, as ``grid_sample`` reads it) first. ``samples``:
    with a displacement, the field at every ``stride``-th row and column and the last
    ones (``(2, nr, nc)``), which every window's bound reads.
    """

    left: torch.Tensor
    right: torch.Tensor
    curvature: float
    integral: bool
    interleaved: torch.Tensor
    stride: int
    samples: torch.Tensor | None

    def dense(self) -> torch.Tensor:
        """The ``(2, rows, cols)`` coordinates, as :func:`deformation_coords` returns them."""
        return torch.bmm(self.left, self.right)


def factored_field(
    size: tuple[int, int],
    displacement: torch.Tensor | None,
    angles: Sequence[float],
    scale: float,
    flips: Sequence[bool],
) -> FactoredField:
    """:func:`deformation_coords` of a 2-D window, factored.

    Args:
        size: The window's ``(rows, cols)``.
        displacement: ``(2, g0, g1)`` displacements at the coarse grid, or ``None``.
        angles: At most one rotation angle, in degrees.
        scale: Zoom factor (> 0).
        flips: Per axis, whether to mirror the window.

    Returns:
        The :class:`FactoredField`; its ``dense()`` equals
        ``deformation_coords(size, displacement=..., ...)`` exactly. The arguments are
        not checked again (:class:`~unet_transforms.Deformation` draws them).
    """
    affine, centre = _affine(size, angles, scale, flips)
    (m00, m01), (m10, m11) = affine.tolist()
    left, right = _factors_2d(size, centre, (m00, m01, m10, m11), displacement)
    curvature = 0.0
    if displacement is not None:
        # along an axis, either component is a cubic interpolation (in units of the
        # coarse grid's spacing) of values spread at most 1.375 times the displacements'
        values = displacement.reshape(2, -1).tolist()
        spread = max(max(v) - min(v) for v in values) * _CUBIC_ABS_SUM * 1.001
        ratios = [
            (g - 1) / (n - 1) if n > 1 else 0.0
            for g, n in zip(displacement.shape[1:], size, strict=True)
        ]
        curvature = _CUBIC_CURVATURE * spread * (ratios[0] ** 2 + ratios[1] ** 2)
    interleaved = right.flip(0).permute(1, 2, 0).contiguous()
    stride = _stride(curvature)
    samples = None
    if displacement is not None:  # (without, the fields are cheap to sample per window)
        samples = _sampled(left, right, (0, size[0]), (0, size[1]), stride)
    return FactoredField(
        left, right, curvature, displacement is None, interleaved, stride, samples
    )


def _stride(curvature: float) -> int:
    """The sampling stride that keeps the curvature margin ``s**2 / 8 * curvature`` near
    ``_BOUND_SLACK`` pixels."""
    if curvature == 0:
        return _MAX_STRIDE
    return max(1, min(_MAX_STRIDE, int(math.sqrt(8 * _BOUND_SLACK / curvature))))


def _sampled(
    left: torch.Tensor,
    right: torch.Tensor,
    rows: tuple[int, int],
    cols: tuple[int, int],
    stride: int,
) -> torch.Tensor:
    """The field at every ``stride``-th row and column of a window and its last ones:
    sample ``(i, j)`` at ``(min(r0 + i * stride, r1 - 1), min(c0 + j * stride, c1 - 1))``."""
    left = left.index_select(1, _sample_index(*rows, stride))
    return torch.bmm(left, right.index_select(2, _sample_index(*cols, stride)))


@functools.lru_cache(maxsize=64)
def _sample_index(start: int, stop: int, stride: int) -> torch.Tensor:
    """Every ``stride``-th position of ``range(start, stop)`` and the last one (read only)."""
    return torch.cat([torch.arange(start, stop, stride), torch.tensor([stop - 1])])


def field_bounds(
    field: FactoredField, rows: slice, cols: slice
) -> tuple[list[float], list[float]] | None:
    """Per component, a low and a high bound of the field over a window.

    The extremes of the field's samples at the rows and columns of stride ``s`` that
    enclose the window (or, for a field without displacement, of the window sampled with
    its edges), widened by ``s**2 / 8`` times the field's curvature (a function exceeds
    its bilinear interpolation between samples by at most that, and the interpolation
    stays within the samples) and a float32 rounding margin. Conservative: every
    coordinate lies inside, within about a quarter of a pixel plus the field's change
    over less than ``s`` pixels beyond the window's edges.

    Args:
        field: The field.
        rows: The window's rows (a slice of ``range(rows)``, step 1).
        cols: The window's columns.

    Returns:
        ``(low, high)``, one float per component; ``None`` when the field may be
        integral and the samples are all integers (the exact dense path then decides).
    """
    r0, r1, _ = rows.indices(field.left.shape[1])
    c0, c1, _ = cols.indices(field.right.shape[2])
    stride = field.stride
    if field.samples is None:  # sampled here, window edges included: exact integers
        samples = _sampled(field.left, field.right, (r0, r1), (c0, c1), stride)
        samples = samples.reshape(2, -1)
        if field.integral and torch.equal(samples, samples.round()):
            return None
    else:
        # the sample rows and columns that enclose the window (sample i is at i * stride,
        # or at the last row): every pixel of it lies in a cell between them
        n_r, n_c = field.samples.shape[1:]
        i0, i1 = r0 // stride, min(-(-(r1 - 1) // stride), n_r - 1)
        j0, j1 = c0 // stride, min(-(-(c1 - 1) // stride), n_c - 1)
        samples = field.samples.narrow(1, i0, i1 + 1 - i0).narrow(2, j0, j1 + 1 - j0)
        samples = samples.reshape(2, -1)
    lows, highs = (t.tolist() for t in torch.aminmax(samples, dim=1))
    margin = (stride * stride / 8 * field.curvature if stride > 1 else 0.0) + 0.01
    margin += 1e-5 * max(abs(v) for v in (*lows, *highs))  # float32 rounding of the products
    return [v - margin for v in lows], [v + margin for v in highs]


def _window_rows(
    field: FactoredField, rows: slice, cols: slice
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A window's rows of ``left`` (the same for both components) and its columns'
    ``(start, stop)`` (narrow and select: tensor indexing costs more than the products)."""
    r0, r1, _ = rows.indices(field.left.shape[1])
    c0, c1, _ = cols.indices(field.right.shape[2])
    return field.left.select(0, 0).narrow(0, r0, r1 - r0), (c0, c1)


def _field_grid(
    field: FactoredField,
    rows: slice,
    cols: slice,
    start: Sequence[int],
    spatial: Sequence[int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """``grid_sample``'s ``(1, h, w, 2)`` grid of a window of the field over a region of
    size ``spatial`` whose first pixel is at ``start``: the normalisation (``align_corners``)
    folded into ``right`` (its columns interleaving the components, x first), so that one
    product writes the grid in the layout ``grid_sample`` reads."""
    left, (c0, c1) = _window_rows(field, rows, cols)
    right = field.interleaved.narrow(1, c0, c1 - c0)
    if dtype != left.dtype:
        left, right = left.to(dtype), right.to(dtype)
    sx, sy = 2 / max(spatial[1] - 1, 1), 2 / max(spatial[0] - 1, 1)
    factors = torch.tensor([[sx, sy], [-1 - start[1] * sx, -1 - start[0] * sy]], dtype=dtype)
    right = right * factors.select(0, 0)  # a new (r, w, 2) tensor, laid out as right
    right.select(0, -1).add_(factors.select(0, 1))  # the constant terms
    return torch.mm(left, right.view(right.shape[0], -1)).view(1, left.shape[0], c1 - c0, 2)


def _gather_nearest(
    src: torch.Tensor,
    field: FactoredField,
    rows: slice,
    cols: slice,
    first: Sequence[int],
    reach: int,
) -> torch.Tensor:
    """``src`` (``(..., H, W)``) at the window's coordinates rounded, ``first`` being the
    field-frame position of ``src``'s first pixel and ``reach`` a bound of the rounded
    coordinates' magnitude: one linear index, one gather."""
    left, (c0, c1) = _window_rows(field, rows, cols)
    right = field.right.narrow(2, c0, c1 - c0)
    height, width = left.shape[0], c1 - c0
    # both components in one product: (h, 2, w)
    coords = torch.mm(left, right.transpose(0, 1).reshape(right.shape[1], -1))
    coords = coords.view(height, 2, width).round_()
    src_width = src.shape[-1]
    lead = tuple(src.shape[:-2])
    offset = first[0] * src_width + first[1]
    # int32 indices when they hold every intermediate value (row * width + column, offset)
    small = (reach + 1) * (src_width + 1) + abs(offset) < 2**31
    index = coords.to(torch.int32 if small else torch.int64)
    linear = torch.add(index.select(1, 1), index.select(1, 0), alpha=src_width)
    if offset:
        linear.sub_(offset)
    out = src.reshape(*lead, -1).index_select(len(lead), linear.reshape(-1))
    return out.reshape(*lead, height, width)


def deform_factored(
    x: torch.Tensor,
    field: FactoredField,
    window: tuple[slice, slice],
    origin: Sequence[int],
    interpolation: Interpolation,
    read: Callable[[Box], Any],
) -> torch.Tensor | None:
    """:func:`deform_tile` of a 2-D window of a factored field, for a CPU tensor.

    Reads the conservative source box of the window's coordinates: inside the image
    directly (nearest: one gather from the whole tensor), else through ``read``.
    Bilinear and bicubic sample it with one ``grid_sample`` on a grid that one matrix
    product writes.

    Args:
        x: A dense CPU tensor, ``(..., H, W)``.
        field: The field over the tile's input window.
        window: The rows and columns of the field this leaf reads.
        origin: Image position of the field's coordinate 0, per axis.
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.
        read: Reads a box of ``x`` mirrored (or filled) outside the image, as the
            crop does.

    Returns:
        The deformed window as a plain tensor of ``x``'s dtype, or ``None`` when the
        sampled coordinates are all integers (the exact dense path then decides).
    """
    bounds = field_bounds(field, *window)
    if bounds is None:
        return None
    low, high = bounds
    if interpolation == "nearest":
        low, high = [round(v) for v in low], [round(v) for v in high]
    before, after = _SUPPORT[interpolation]
    start = [math.floor(v) - before for v in low]
    box = tuple(
        (o + s, o + math.floor(h) + after) for o, s, h in zip(origin, start, high, strict=True)
    )
    spatial = x.shape[-2:]
    within = inside(box, spatial)
    if interpolation == "nearest":
        reach = math.ceil(max(abs(v) for v in (*low, *high))) + 1
        if within and x.is_contiguous():
            return _gather_nearest(x, field, *window, [-o for o in origin], reach)
        region = read(box).as_subclass(torch.Tensor).contiguous()
        return _gather_nearest(region, field, *window, start, reach)
    if within:
        (a0, b0), (a1, b1) = box
        region = x.narrow(-2, a0, b0 - a0).narrow(-1, a1, b1 - a1)
    else:
        region = read(box).as_subclass(torch.Tensor)
    size = [b - a for a, b in box]
    work = _work_dtype(x.dtype)
    # (a copy: grid_sample reads a view of the image twice as slowly; .to may return it)
    src = region.to(work).contiguous().reshape(1, -1, *size)
    out = torch.nn.functional.grid_sample(
        src,
        _field_grid(field, *window, start, size, work),
        mode=interpolation,
        padding_mode="border",
        align_corners=True,
    )
    return _from_work(out.reshape(*region.shape[:-2], *out.shape[-2:]), x.dtype)


def _upsample(displacement: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(ndim, *grid)`` displacements, upsampled bicubically to ``(ndim, *size)``: one
    small matrix product per axis, the last one writing the full size."""
    ndim = len(size)
    x = _check_displacement(displacement, ndim).to(torch.float32)
    for axis in range(ndim, 0, -1):  # the last axis first, so the biggest product comes last
        matrix = _cubic_matrix(x.shape[axis], size[axis - 1])
        x = torch.movedim(torch.tensordot(matrix, x, dims=([1], [axis])), 0, axis)
    return x


class ResamplePlan(NamedTuple):
    """What :func:`resample` needs: the source box to read, its start in the coordinates'
    frame, and the interpolation (``"nearest"`` when every coordinate is an integer)."""

    box: Box
    start: tuple[int, ...]
    interpolation: Interpolation


def plan_resample(
    coords: torch.Tensor, origin: Sequence[int], interpolation: Interpolation = "bilinear"
) -> ResamplePlan:
    """The source box that ``origin + coords`` reach, with the interpolation's support.

    Coordinates that are all integers take ``"nearest"`` (an exact gather, which makes
    a zero deformation equal to the plain crop for every dtype).

    Args:
        coords: ``(ndim, *window)`` source coordinates relative to ``origin``.
        origin: Integer image position of coordinate 0, per axis.
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.

    Returns:
        A :class:`ResamplePlan`: read ``box`` (e.g. with ``crop_tile``), then
        ``resample(region, coords, plan.interpolation, start=plan.start)``.

    Example:
        >>> c = deformation_coords((2, 2)) + 0.5
        >>> plan_resample(c, (10, 20))
        ResamplePlan(box=((10, 13), (20, 23)), start=(0, 0), interpolation='bilinear')
    """
    interpolation = check_interpolation(interpolation)
    if not isinstance(coords, torch.Tensor) or not coords.is_floating_point():
        raise TypeError(f"coords must be a floating-point tensor, got {coords!r:.60}")
    ndim = coords.shape[0] if coords.ndim > 0 else 0
    if coords.ndim != ndim + 1 or ndim not in (2, 3) or coords.numel() == 0:
        raise ValueError(f"coords must have shape (ndim, *window), got {tuple(coords.shape)}")
    if len(origin) != ndim or not all(is_int(o) for o in origin):
        raise ValueError(f"origin must hold {ndim} ints, got {tuple(origin)!r}")
    low, high = _extremes(coords)
    if not all(math.isfinite(v) for v in (*low, *high)):
        raise ValueError("coords must be finite")
    if interpolation == "nearest" or _integral(coords):
        interpolation = "nearest"
        low, high = [round(v) for v in low], [round(v) for v in high]
    before, after = _SUPPORT[interpolation]
    start = tuple(math.floor(v) - before for v in low)
    box = tuple(
        (o + s, o + math.floor(h) + after) for o, s, h in zip(origin, start, high, strict=True)
    )
    return ResamplePlan(box, start, interpolation)


def _integral(coords: torch.Tensor) -> bool:
    """Whether every coordinate is an integer (a sparse sample first: usually they are not)."""
    flat = coords.reshape(-1)
    probe = flat[:: max(1, flat.numel() // 61)]
    return torch.equal(probe, probe.round()) and torch.equal(flat, flat.round())


def _extremes(coords: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per component minimum and maximum (NaN if any is NaN)."""
    low, high = [], []
    for component in coords:
        lo, hi = component.aminmax()
        low.append(float(lo))
        high.append(float(hi))
    return low, high


def interpolation_for(
    inpt: Any, interpolation: Interpolation, as_type: type | None = None
) -> Interpolation:
    """Labels by type: masks nearest, weight maps bilinear; PIL index/bit images nearest.
    ``as_type`` stands for ``type(inpt)`` (an array read as a ``Mask`` or ``WeightMap``)."""
    kind = as_type or type(inpt)
    if issubclass(kind, WeightMap):
        return "bilinear"
    if issubclass(kind, tv_tensors.Mask):
        return "nearest"
    if isinstance(inpt, PIL.Image.Image) and inpt.mode in _NEAREST_PIL_MODES:
        return "nearest"
    return interpolation


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float dtype a value is interpolated in: float64 where float32 loses digits."""
    if dtype.is_complex:  # grid_sample takes real values only
        raise TypeError(
            f"a deformed input must be real to be interpolated, got dtype {dtype}: deform "
            "the real and imaginary parts (torch.view_as_real) as channels"
        )
    if dtype == torch.float64 or (not dtype.is_floating_point and dtype.itemsize >= 4):
        return torch.float64
    return torch.float32


def _check_inside(
    coords: torch.Tensor,
    interpolation: Interpolation,
    start: Sequence[int],
    spatial: tuple[int, ...],
) -> None:
    low, high = _extremes(coords)
    if not all(math.isfinite(v) for v in (*low, *high)):
        raise ValueError("coords must be finite")
    if interpolation == "nearest":
        low, high = [round(v) for v in low], [round(v) for v in high]
    if any(
        lo < s or hi > s + n - 1 for lo, hi, s, n in zip(low, high, start, spatial, strict=True)
    ):
        raise ValueError(
            f"coords must lie inside the source region (size {spatial}, start {tuple(start)}), "
            f"got a range of {low} to {high}"
        )


def _resample_tensor(
    x: torch.Tensor,
    coords: torch.Tensor,
    interpolation: Interpolation,
    start: Sequence[int],
    check: bool = True,
) -> torch.Tensor:
    ndim = coords.shape[0]
    window = tuple(coords.shape[1:])
    spatial = tuple(x.shape[x.ndim - ndim :])
    lead = tuple(x.shape[: x.ndim - ndim])
    if check:
        _check_inside(coords, interpolation, start, spatial)
    if interpolation == "nearest":
        # a linear index into the flattened region, computed in a float dtype that holds
        # it exactly (float32 up to 2**24 elements, the common case)
        strides = [math.prod(spatial[k + 1 :]) for k in range(ndim)]
        exact = torch.float32 if math.prod(spatial) < 2**24 else torch.float64
        offset = sum(s * stride for s, stride in zip(start, strides, strict=True))
        linear = coords[-1].round().to(exact).sub_(offset)
        for k in range(ndim - 1):
            linear.add_(coords[k].round(), alpha=strides[k])
        flat = linear.to(torch.int64).reshape(-1)
        return x.reshape(*lead, -1).index_select(len(lead), flat).reshape(*lead, *window)
    if interpolation == "bicubic" and ndim != 2:
        raise ValueError("interpolation='bicubic' is 2-D only (grid_sample has no tricubic mode)")
    work = _work_dtype(x.dtype)
    src = x.reshape(1, -1, *spatial).to(work)
    # grid_sample takes (x, y[, z]) = the reversed axes, normalised to [-1, 1]
    # (align_corners): one pass per component, into a channel-first grid it reads as a view
    grid = torch.empty((ndim, *window), dtype=work)
    for k in range(ndim):
        scale = 2 / max(spatial[k] - 1, 1)
        shift = torch.tensor(-1 - start[k] * scale, dtype=work)
        torch.add(shift, coords[k].to(work), alpha=scale, out=grid[ndim - 1 - k])
    out = torch.nn.functional.grid_sample(
        src,
        torch.movedim(grid, 0, -1)[None],
        mode=interpolation,
        padding_mode="border",
        align_corners=True,
    ).reshape(*lead, *window)
    return _from_work(out, x.dtype)


def _from_work(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An interpolated result back in ``dtype``: integers rounded and clamped, bool at ½."""
    if dtype.is_floating_point:
        return out.to(dtype)
    if dtype == torch.bool:
        return out >= 0.5
    info = torch.iinfo(dtype)
    return out.round_().clamp_(info.min, info.max).to(dtype)


def resample(
    region: Any,
    coords: torch.Tensor,
    interpolation: Interpolation | ResamplePlan,
    *,
    start: Sequence[int] | None = None,
) -> Any:
    """Samples ``region`` at ``coords``, in one resampling.

    Images take ``interpolation``; ``tv_tensors.Mask`` nearest and
    :class:`~unet_transforms.WeightMap` bilinear, whatever is asked (but a plan's
    ``"nearest"``, chosen for integer coordinates, is the exact copy for every type);
    PIL images of modes ``"1"``, ``"P"`` and ``"PA"`` nearest. Integer dtypes are rounded and clamped
    to their range, bool thresholded at ½. ``"bicubic"`` is 2-D only.

    Args:
        region: A tensor, tv_tensor or PIL image whose trailing axes hold the region.
        coords: ``(ndim, *window)`` coordinates inside the region.
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``; or the
            :class:`ResamplePlan` of these ``coords`` whose box ``region`` was read
            from (its start and interpolation are used, and the coordinates are known
            to lie inside, so they are not checked again).
        start: The coordinates of the region's first pixel (zeros by default).

    Returns:
        The ``window``, of the region's type and dtype.

    Raises:
        TypeError: For bounding boxes, key points and other unsupported inputs.
        ValueError: For coordinates outside the region.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
        >>> resample(x, torch.tensor([[[0.5]], [[0.5]]]), "bilinear").tolist()
        [[15.0]]
    """
    if isinstance(region, tv_tensors.BoundingBoxes | tv_tensors.KeyPoints):
        raise TypeError(
            f"cannot deform {type(region).__name__}: deformation moves pixels, not boxes or "
            "key points; deform without them, or crop without deform="
        )
    plan = interpolation if isinstance(interpolation, ResamplePlan) else None
    if plan is not None:
        start, interpolation = plan.start, plan.interpolation
        size = (region.height, region.width) if isinstance(region, PIL.Image.Image) else None
        size = size or tuple(getattr(region, "shape", ())[-len(plan.box) :])
        if size != tuple(b - a for a, b in plan.box):
            raise ValueError(
                f"region of size {size} is not the plan's box {plan.box}: read the region "
                "with crop_tile(inpt, plan.box, ...)"
            )
    interpolation = check_interpolation(interpolation)
    if plan is None or interpolation != "nearest":
        # a plan's "nearest" stays (integer coordinates: the exact copy every type's
        # interpolation gives, which a float grid_sample would round)
        interpolation = interpolation_for(region, interpolation)
    start = (0,) * coords.shape[0] if start is None else tuple(start)
    if isinstance(region, PIL.Image.Image):
        return _resample_pil(region, coords, interpolation, start, plan is None)
    if isinstance(region, torch.Tensor) and (
        type(region) is torch.Tensor
        or isinstance(region, tv_tensors.Image | tv_tensors.Video | tv_tensors.Mask)
    ):
        out = _resample_tensor(
            region.as_subclass(torch.Tensor), coords, interpolation, start, plan is None
        )
        if isinstance(region, tv_tensors.TVTensor):
            wrapped: torch.Tensor = tv_tensors.wrap(out, like=region)
            return wrapped
        return out
    raise TypeError(
        f"resample supports tensors, Image/Video/Mask tv_tensors and PIL images, got "
        f"{type(region).__name__}"
    )


def _resample_pil(
    region: PIL.Image.Image,
    coords: torch.Tensor,
    interpolation: Interpolation,
    start: Sequence[int],
    check: bool,
) -> PIL.Image.Image:
    arr = np.asarray(region)
    x = torch.from_numpy(np.array(torch_compatible(arr), copy=True))
    bands = x.ndim == 3
    out = _resample_tensor(x.permute(2, 0, 1) if bands else x, coords, interpolation, start, check)
    raw = np.ascontiguousarray((out.permute(1, 2, 0) if bands else out).numpy().astype(arr.dtype))
    # a new image of the region's mode, palette and info (a crop of it), then its pixels
    image: PIL.Image.Image = crop_tile(region, ((0, raw.shape[0]), (0, raw.shape[1])))
    image.frombytes(np.packbits(raw, axis=1).tobytes() if region.mode == "1" else raw.tobytes())
    return image


def deform_tile(
    inpt: Any,
    coords: torch.Tensor,
    origin: Sequence[int],
    *,
    mode: MirrorMode = "reflect",
    interpolation: Interpolation = "bilinear",
    fill: float | None = None,
) -> Any:
    """A deformed window of ``inpt``, read in one resampling from the unpadded source.

    Reads only the source box the coordinates reach (mirrored outside the image by
    ``mode``, or ``fill`` there, as :func:`~unet_transforms.functional.crop_tile` does)
    and samples it once: the cost is proportional to the window. Integer coordinates
    give the plain crop exactly.

    Args:
        inpt: A tensor, ``Image``/``Video``/``Mask`` tv_tensor or PIL image.
        coords: ``(ndim, *window)`` source coordinates relative to ``origin`` (see
            :func:`deformation_coords`).
        origin: Image position of coordinate 0, per axis.
        mode: ``"reflect"`` or ``"symmetric"``.
        interpolation: For images: ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (2-D);
            masks are sampled nearest, weight maps bilinear (see :func:`resample`).
        fill: Value outside the image instead of mirroring (e.g. a label's ignore index).

    Returns:
        The window, of the input's type and dtype.

    Example:
        >>> import torch
        >>> x = torch.arange(12.0).reshape(3, 4)
        >>> deform_tile(x, deformation_coords((2, 3), flips=(False, True)), (0, -1))
        tensor([[1., 0., 1.],
                [5., 4., 5.]])
        >>> deform_tile(x, deformation_coords((2, 3)) + 0.5, (0, -1))  # column -1 mirrored
        tensor([[2.5000, 2.5000, 3.5000],
                [6.5000, 6.5000, 7.5000]])
    """
    interpolation = interpolation_for(inpt, check_interpolation(interpolation))
    if isinstance(inpt, tv_tensors.BoundingBoxes | tv_tensors.KeyPoints):
        return resample(inpt, coords, interpolation)  # raises the TypeError
    plan = plan_resample(coords, origin, interpolation)
    return resample(crop_tile(inpt, plan.box, mode, fill), coords, plan)
