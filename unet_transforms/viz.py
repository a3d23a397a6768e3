"""Pictures of the overlap-tile layout (Pillow only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from .functional._mirror import MirrorMode, check_mode, mirror_pad
from .geometry import TileGeometry
from .grid import Align, TileGrid

__all__ = ["INPUT_COLOUR", "OUTPUT_COLOUR", "IMAGE_COLOUR", "draw_tiles"]

INPUT_COLOUR = (0, 114, 255)
"""Outline of the tiles' input windows (blue)."""
OUTPUT_COLOUR = (255, 214, 0)
"""Outline of the tiles' output windows (yellow)."""
IMAGE_COLOUR = (255, 255, 255)
"""Outline of the original image (white)."""
DIM = 0.45


def _to_chw(image: Any, ndim: int) -> torch.Tensor:
    """The image as a float tensor ``(C, *spatial)``."""
    if isinstance(image, PIL.Image.Image):
        array = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
        image = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        spatial_last = True
    else:
        spatial_last = isinstance(image, torch.Tensor)
    if isinstance(image, np.ndarray):
        if ndim == 2 and image.ndim == 3 and image.shape[-1] in (3, 4) and not spatial_last:
            image = np.moveaxis(image[..., :3], -1, 0)
        x = torch.from_numpy(np.array(image, copy=True))
    elif isinstance(image, torch.Tensor):
        x = image.detach().cpu().as_subclass(torch.Tensor)
    else:
        raise TypeError(
            f"image must be a tensor, numpy array or PIL image, got {type(image).__name__}"
        )
    if x.ndim == ndim:
        x = x[None]
    if x.ndim != ndim + 1 or 0 in x.shape:
        raise ValueError(
            f"image must have shape (C, {', '.join('DHW'[3 - ndim :])}) or "
            f"({', '.join('DHW'[3 - ndim :])}) for a {ndim}-D geometry, got {tuple(x.shape)}"
        )
    if x.shape[0] not in (1, 3):
        x = x[:1]
    return x.float()


def draw_tiles(
    image: Any,
    geometry: TileGeometry,
    *,
    align: Align = "center",
    mode: MirrorMode = "reflect",
    tiles: Literal["all"] | Sequence[int] = "all",
    scale: float = 1.0,
) -> PIL.Image.Image:
    """Draws the overlap-tile layout of an image.

    The picture is the mirror-extrapolated canvas of ``TileGrid(size, geometry)``: the
    extrapolated part dimmed, the original image outlined in white, each tile's input
    window in blue and its output window in yellow. For a 3-D geometry the middle
    depth slice is drawn with the in-plane part of the grid.

    Args:
        image: Tensor ``(C, H, W)``/``(H, W)``, numpy array ``(H, W)``/``(H, W, C)`` or
            PIL image (3-D: ``(C, D, H, W)``/``(D, H, W)``). Values are scaled by their
            minimum and maximum; 1 or 3 channels are shown, otherwise the first.
        geometry: The :class:`TileGeometry`.
        align: Grid alignment: ``"center"`` or ``"start"``.
        mode: Mirroring: ``"reflect"`` or ``"symmetric"``.
        tiles: ``"all"`` or the tile indices to draw.
        scale: Resize factor of the picture (nearest neighbour; lines stay 2 px wide).

    Returns:
        An RGB :class:`PIL.Image.Image` of the canvas size times ``scale``.

    Raises:
        TypeError: For an unsupported image or geometry type.
        ValueError: For a shape that does not fit the geometry, a bad tile index or scale.

    Example:
        >>> import torch
        >>> picture = draw_tiles(torch.rand(100, 140), TileGeometry(96, 60))
        >>> picture.size, picture.mode
        ((216, 156), 'RGB')
    """
    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    check_mode(mode)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    x = _to_chw(image, geometry.ndim)
    grid = TileGrid(tuple(x.shape[1:]), geometry, align=align)
    if tiles == "all":
        selected = list(range(len(grid)))
    elif isinstance(tiles, Sequence) and not isinstance(tiles, str):
        selected = [grid[i].index for i in tiles]
    else:
        raise ValueError(f"tiles must be 'all' or a sequence of tile indices, got {tiles!r}")
    canvas = mirror_pad(x, grid.padding, mode)
    before = [b for b, _ in grid.padding]
    if geometry.ndim == 3:
        canvas = canvas[:, before[0] + grid.image_size[0] // 2]
    lo, hi = x.min(), x.max()
    pixels = ((canvas - lo) / (hi - lo) if hi > lo else torch.zeros_like(canvas)) * 255
    inside = torch.zeros(canvas.shape[-2:], dtype=torch.bool)
    b_h, b_w = before[-2:]
    h, w = grid.image_size[-2:]
    inside[b_h : b_h + h, b_w : b_w + w] = True
    pixels = torch.where(inside, pixels, pixels * DIM)
    rgb = pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels
    picture = PIL.Image.fromarray(
        rgb.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    )
    if scale != 1:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, PIL.Image.Resampling.NEAREST)
    draw = PIL.ImageDraw.Draw(picture)

    def rect(box: Sequence[tuple[int, int]], colour: tuple[int, int, int]) -> None:
        (y0, y1), (x0, x1) = box[-2:]
        draw.rectangle(
            [
                round((x0 + b_w) * scale),
                round((y0 + b_h) * scale),
                round((x1 + b_w) * scale) - 1,
                round((y1 + b_h) * scale) - 1,
            ],
            outline=colour,
            width=2,
        )

    # input windows first, output windows on top; tiles differing only in depth coincide
    tiles_drawn = [grid[i] for i in selected]
    for boxes, colour in (
        ({t.input_box[-2:] for t in tiles_drawn}, INPUT_COLOUR),
        ({t.output_box[-2:] for t in tiles_drawn}, OUTPUT_COLOUR),
    ):
        for box in sorted(boxes):
            rect(box, colour)
    rect(((0, h), (0, w)), IMAGE_COLOUR)
    return picture
