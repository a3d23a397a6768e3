"""Pictures of the overlap-tile layout (Pillow only)."""

from __future__ import annotations

import bisect
import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from ._checks import is_int
from .functional._mirror import MirrorMode, check_mode, mirror_index
from .geometry import TileGeometry
from .grid import Align, TileGrid

__all__ = [
    "DIM",
    "IMAGE_COLOUR",
    "INPUT_COLOUR",
    "LINE_WIDTH",
    "MAX_TILES",
    "OUTPUT_COLOUR",
    "draw_tiles",
]

INPUT_COLOUR = (0, 114, 255)
"""Outline of the tiles' input windows (blue)."""
OUTPUT_COLOUR = (255, 214, 0)
"""Outline of the tiles' output windows (yellow)."""
IMAGE_COLOUR = (255, 255, 255)
"""Outline of the original image (white)."""
DIM = 0.45
"""Brightness factor of the mirror-extrapolated part of the canvas."""
LINE_WIDTH = 2
"""Width of every outline in pixels of the picture, whatever the ``scale``."""
MAX_TILES = 10_000
"""Default most tiles :func:`draw_tiles` outlines (a second or two of drawing); a grid
with more tiles (a tiny geometry over a big image) is refused before any work."""

_MAX_PIXELS = 1 << 28  # 256 Mpx: a picture beyond this is a mistake in scale

_PIL_DIRECT = ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _spatial_names(ndim: int) -> str:
    return "D, H, W" if ndim == 3 else "H, W"


def _as_channels_first(image: Any, ndim: int) -> torch.Tensor | np.ndarray:
    """The image as a ``(C, *spatial)`` tensor or array, a view where possible.

    Arrays stay arrays so that only the pixels the picture shows are read and copied.
    """
    if isinstance(image, PIL.Image.Image):
        if ndim != 2:
            raise ValueError(
                "image must be a (C, D, H, W) or (D, H, W) tensor or array for a 3-D "
                "geometry, got a PIL image"
            )
        if image.mode not in _PIL_DIRECT:
            grey = image.mode in ("1", "LA", "La", "I", "F") or image.mode.startswith("I;")
            try:
                image = image.convert("L" if grey else "RGB")
            except ValueError as e:  # PIL has no conversion for a few modes ("La", "PA"...)
                raise TypeError(
                    f"image in PIL mode {image.mode!r} cannot be drawn: convert it to 'L' or "
                    f"'RGB' first ({e})"
                ) from e
        image = np.asarray(image)
    x: torch.Tensor | np.ndarray
    given = tuple(getattr(image, "shape", ()))
    if isinstance(image, np.ndarray):
        if image.dtype.kind not in "biuf":
            raise TypeError(
                f"image must have a boolean, integer or floating dtype, got {image.dtype}"
            )
        if image.ndim == ndim + 1 and image.shape[-1] <= 4:  # channels last, numpy's way
            image = np.moveaxis(image[..., :3] if image.shape[-1] == 4 else image, -1, 0)
        x = image
    elif isinstance(image, torch.Tensor):
        if image.is_complex():
            raise TypeError(f"image must not be complex, got dtype {image.dtype}")
        x = image.detach().as_subclass(torch.Tensor)
    else:
        raise TypeError(
            f"image must be a torch.Tensor, numpy array or PIL image, got {type(image).__name__}"
        )
    if x.ndim == ndim:
        x = x[None]
    if x.ndim != ndim + 1 or 0 in x.shape:
        names = _spatial_names(ndim)
        raise ValueError(
            f"image must have shape (C, {names}) or ({names}) for a {ndim}-D geometry, got {given}"
        )
    return x if x.shape[0] in (1, 3) else x[:1]


def _shown_as_is(x: torch.Tensor | np.ndarray) -> bool:
    """uint8 and bool pixels are drawn without scaling."""
    if isinstance(x, np.ndarray):
        return x.dtype in (np.uint8, np.bool_)
    return x.dtype in (torch.uint8, torch.bool)


def _value_range(x: torch.Tensor | np.ndarray) -> tuple[float, float] | None:
    """Minimum and maximum of the finite values, or ``None`` for a constant image."""
    if isinstance(x, np.ndarray):
        finite = np.isfinite(x) if x.dtype.kind == "f" else None
        values = x if finite is None or finite.all() else x[finite]
        if values.size == 0:
            return None
        lo, hi = float(values.min()), float(values.max())
    else:
        if x.dtype.is_floating_point:
            finite_t = torch.isfinite(x)
            values_t = x if bool(finite_t.all()) else x[finite_t]
        else:
            # torch has no min/max kernels for the wide unsigned types
            wide = x.dtype in (torch.uint16, torch.uint32, torch.uint64)
            values_t = x.double() if wide else x
        if values_t.numel() == 0:
            return None
        lo_t, hi_t = torch.aminmax(values_t)
        lo, hi = float(lo_t), float(hi_t)
    return (lo, hi) if hi > lo else None


def _gather(x: torch.Tensor | np.ndarray, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``x[:, rows][:, :, cols]`` as a new CPU tensor; arrays are read only there."""
    if isinstance(x, np.ndarray):
        picked = np.asarray(np.take(np.take(x, rows.numpy(), axis=1), cols.numpy(), axis=2))
        if not picked.dtype.isnative:
            picked = picked.astype(picked.dtype.newbyteorder("="))
        return torch.from_numpy(picked)
    return x.index_select(1, rows.to(x.device)).index_select(2, cols.to(x.device)).cpu()


def _to_display(pixels: torch.Tensor, value_range: tuple[float, float] | None) -> torch.Tensor:
    """Display values in ``[0, 255]`` as float32."""
    if pixels.dtype == torch.uint8:
        return pixels.float()
    if pixels.dtype == torch.bool:
        return pixels.float() * 255
    if value_range is None:
        return torch.full(pixels.shape, 128.0)
    lo, hi = value_range
    scaled = (pixels.double() - lo) / (hi - lo) * 255
    return torch.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0).clamp(0, 255).float()


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a positive number, got {type(scale).__name__}")
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return value


def _check_max_tiles(max_tiles: object) -> int | None:
    if max_tiles is None:
        return None
    if not is_int(max_tiles):
        raise TypeError(f"max_tiles must be an int or None, got {type(max_tiles).__name__}")
    limit = operator.index(max_tiles)  # type: ignore[arg-type]
    if limit < 1:
        raise ValueError(f"max_tiles must be a positive int or None, got {max_tiles!r}")
    return limit


def _selected(grid: TileGrid, tiles: object, max_tiles: int | None) -> list[int]:
    """The selected tile indices, refused before any work if there are more than
    ``max_tiles``."""
    if isinstance(tiles, str):
        if tiles != "all":
            raise ValueError(f"tiles must be 'all' or a sequence of tile indices, got {tiles!r}")
        count, what = len(grid), f"all {len(grid)} tiles of the {grid.shape} grid"
    elif isinstance(tiles, Sequence):
        count, what = len(tiles), f"{len(tiles)} tiles"
    else:
        raise TypeError(
            f"tiles must be 'all' or a sequence of tile indices, got {type(tiles).__name__}"
        )
    if max_tiles is not None and count > max_tiles:
        raise ValueError(
            f"tiles selects {what}, more than max_tiles={max_tiles}; pass "
            f"max_tiles={count} (or None) to draw them all, or choose a few with "
            "tiles=[...] or a larger geometry"
        )
    return list(range(count)) if isinstance(tiles, str) else [grid[i].index for i in tiles]


def draw_tiles(
    image: Any,
    geometry: TileGeometry,
    *,
    align: Align = "center",
    mode: MirrorMode = "reflect",
    tiles: Literal["all"] | Sequence[int] = "all",
    scale: float = 1.0,
    max_tiles: int | None = MAX_TILES,
) -> PIL.Image.Image:
    """Draws the overlap-tile layout of an image.

    The picture is the mirror-extrapolated canvas ``mirror_pad(image, grid.padding,
    mode)`` of ``grid = TileGrid(size, geometry, align=align)``: the extrapolated part
    dimmed (times :data:`DIM`), the original image outlined in white, each selected
    tile's input window in blue and its output window in yellow. Every window comes from
    the grid's tile boxes, shifted by the padding before the image.

    For a 3-D geometry the image's middle depth slice (``D // 2``) is drawn with the
    in-plane part of the grid; tiles that differ only in depth coincide there.

    The canvas is gathered with mirror indices straight from the image at the picture's
    resolution, so the cost is that of the picture, not of the padded canvas. ``scale``
    resizes with nearest neighbour (picture pixel ``j`` shows canvas pixel
    ``floor((j + 0.5) / scale)``); outlines are drawn afterwards, :data:`LINE_WIDTH`
    pixels wide at any scale, on the picture pixels that show the window's border
    pixels. Input windows are drawn first, output windows over them and the image
    outline last, so where an output window starts at the image border its edge
    there is white.

    Args:
        image: Tensor ``(C, H, W)`` or ``(H, W)``; numpy array ``(H, W)`` or ``(H, W, C)``
            (channels last when the last axis has at most 4 entries, else channels
            first like a tensor); or PIL image. For a 3-D geometry: ``(C, D, H, W)`` or
            ``(D, H, W)``. uint8 and bool pixels are shown as they are; other dtypes
            are scaled by their (finite) minimum and maximum, and a constant image is
            drawn mid-grey. 1 or 3 channels are shown (channels-last RGBA arrays and
            PIL images lose their alpha); channels-first inputs with another number
            of channels (4 included: it may not be RGBA) show the first channel.
        geometry: The :class:`~unet_transforms.TileGeometry`.
        align: Grid alignment: ``"center"`` or ``"start"``.
        mode: Mirroring: ``"reflect"`` or ``"symmetric"``.
        tiles: ``"all"`` or a sequence of tile indices (negative indices count from
            the end, as for :class:`~unet_transforms.TileGrid`).
        scale: Size of the picture relative to the canvas, a positive number.
        max_tiles: Most tiles to outline (default :data:`MAX_TILES`), or ``None`` for
            no limit. Each tile costs 0.1 to 0.2 ms, so a tiny geometry over a big image
            (millions of tiles) is refused up front instead of running for minutes;
            the message gives the count to pass to draw them anyway.

    Returns:
        An RGB :class:`PIL.Image.Image` of size ``round(canvas * scale)`` (at least 1
        pixel), where ``canvas`` is ``grid.padded_size`` (in-plane for 3-D).

    Raises:
        TypeError: If ``image``, ``geometry``, ``tiles``, a tile index, ``scale`` or
            ``max_tiles`` has an unsupported type.
        ValueError: If the image shape does not fit the geometry, ``align``, ``mode``,
            ``tiles``, a tile index, ``scale`` or ``max_tiles`` has a bad value, or more
            than ``max_tiles`` tiles are selected.

    Example:
        >>> import torch
        >>> grid = TileGrid((100, 140), TileGeometry(96, 60))
        >>> grid.padded_size  # (height, width)
        (156, 216)
        >>> picture = draw_tiles(torch.rand(100, 140), TileGeometry(96, 60))
        >>> picture.size, picture.mode  # (width, height), as PIL counts
        ((216, 156), 'RGB')
        >>> draw_tiles(torch.rand(100, 140), TileGeometry(96, 60), scale=0.5).size
        (108, 78)
    """
    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    check_mode(mode)
    factor = _check_scale(scale)
    limit = _check_max_tiles(max_tiles)
    x = _as_channels_first(image, geometry.ndim)
    grid = TileGrid(tuple(x.shape[1:]), geometry, align=align)
    selected = _selected(grid, tiles, limit)
    value_range = None if _shown_as_is(x) else _value_range(x)
    if geometry.ndim == 3:
        x = x[:, grid.image_size[0] // 2]  # the canvas's middle slice lies inside the image

    # Picture pixel j shows canvas pixel floor((j + 0.5) / scale), i.e. image position
    # that minus the padding before; mirror_index maps it into the image.
    (b_h, _), (b_w, _) = grid.padding[-2:]
    h, w = grid.image_size[-2:]
    height, width = (max(1, round(c * factor)) for c in grid.padded_size[-2:])
    if height * width > _MAX_PIXELS:
        raise ValueError(
            f"scale={scale!r} gives a {width} x {height} picture (more than {_MAX_PIXELS} "
            f"pixels) for a {grid.padded_size[-1]} x {grid.padded_size[-2]} canvas; use a "
            "smaller scale"
        )
    positions: list[torch.Tensor] = []
    shown: list[list[int]] = []
    for (before, _), canvas, n in zip(
        grid.padding[-2:], grid.padded_size[-2:], (height, width), strict=True
    ):
        at = ((torch.arange(n, dtype=torch.float64) + 0.5) / factor).floor().to(torch.int64)
        shown.append(at.tolist())  # the canvas pixel each picture pixel shows, non-decreasing
        positions.append(at.clamp(0, canvas - 1) - before)
    rows, cols = (mirror_index(p, n, mode) for p, n in zip(positions, (h, w), strict=True))
    pixels = _to_display(_gather(x, rows, cols), value_range)
    inside = ((positions[0] >= 0) & (positions[0] < h))[:, None] & (
        (positions[1] >= 0) & (positions[1] < w)
    )[None, :]
    pixels = torch.where(inside, pixels, pixels * DIM)
    rgb = pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels
    picture = PIL.Image.fromarray(rgb.round().to(torch.uint8).permute(1, 2, 0).numpy())
    draw = PIL.ImageDraw.Draw(picture)

    def first_showing(c: int, axis: int) -> int:
        """The first picture pixel that shows canvas pixel ``c`` or a later one."""
        return bisect.bisect_left(shown[axis], c)

    def outline(box: Sequence[tuple[int, int]], colour: tuple[int, int, int]) -> None:
        """Outlines an image-coordinate ``((y0, y1), (x0, x1))`` box, lines inside it."""
        (y0, y1), (x0, x1) = box[-2:]
        top, left = first_showing(y0 + b_h, 0), first_showing(x0 + b_w, 1)
        bottom = max(top, first_showing(y1 + b_h, 0) - 1)
        right = max(left, first_showing(x1 + b_w, 1) - 1)
        draw.rectangle([left, top, right, bottom], outline=colour, width=LINE_WIDTH)

    # input windows first, output windows on top, then the image outline
    drawn = [grid[i] for i in selected]
    for boxes, colour in (
        ({t.input_box[-2:] for t in drawn}, INPUT_COLOUR),
        ({t.output_box[-2:] for t in drawn}, OUTPUT_COLOUR),
    ):
        for box in sorted(boxes):
            outline(box, colour)
    outline(((0, h), (0, w)), IMAGE_COLOUR)
    return picture
