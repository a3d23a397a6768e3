"""draw_tiles: colours at known window borders, canvas size, tile selection, 3-D."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from unet_transforms import TileGeometry, TileGrid
from unet_transforms.viz import IMAGE_COLOUR, INPUT_COLOUR, OUTPUT_COLOUR, draw_tiles

GEOMETRY = TileGeometry(40, 20)  # margin 10


def at(picture: PIL.Image.Image, y: int, x: int) -> tuple[int, int, int]:
    return picture.getpixel((x, y))


def test_colours_at_window_borders():
    image = torch.full((50, 70), 0.5)
    image[0, 0] = 0.0  # min/max scaling: grey stays mid-grey
    image[-1, -1] = 1.0
    grid = TileGrid((50, 70), GEOMETRY)
    picture = draw_tiles(image, GEOMETRY)
    assert picture.size == grid.padded_size[::-1]
    (bh, _), (bw, _) = grid.padding
    tile = grid[0]
    (iy0, _), (ix0, _) = tile.input_box
    (oy0, _), (ox0, ox1) = tile.output_box
    # input window's top border, away from other lines
    assert at(picture, iy0 + bh, ix0 + bw + 3) == INPUT_COLOUR
    # output window's top border, between its left and right edges
    assert at(picture, oy0 + bh + 1, (ox0 + ox1) // 2 + bw) in (OUTPUT_COLOUR, IMAGE_COLOUR)
    assert (
        at(
            picture,
            grid[len(grid) - 1].output_box[0][1] + bh - 1,
            grid[len(grid) - 1].output_box[1][0] + bw + 5,
        )
        == OUTPUT_COLOUR
    )
    # the original image's outline
    assert at(picture, bh + 25, bw) == IMAGE_COLOUR
    # dimmed extrapolation vs the original image: compare the grey (undrawn) pixels
    pixels = np.asarray(picture).astype(int)
    grey = (
        (pixels[..., 0] == pixels[..., 1])
        & (pixels[..., 1] == pixels[..., 2])
        & (pixels[..., 0] < 250)
    )
    inside = np.zeros(grey.shape, dtype=bool)
    inside[bh + 2 : bh + 48, bw + 2 : bw + 68] = True
    assert np.median(pixels[grey & inside, 0]) == 128
    assert abs(np.median(pixels[grey & ~inside, 0]) - 127.5 * 0.45) <= 1


def test_only_selected_tiles_are_drawn():
    image = torch.rand(3, 50, 70)
    grid = TileGrid((50, 70), GEOMETRY)
    all_tiles = np.asarray(draw_tiles(image, GEOMETRY))
    first = np.asarray(draw_tiles(image, GEOMETRY, tiles=[0]))
    blue_all = (all_tiles == INPUT_COLOUR).all(-1).sum()
    blue_first = (first == INPUT_COLOUR).all(-1).sum()
    assert 0 < blue_first < blue_all
    (bh, _), (bw, _) = grid.padding
    last = grid[-1]
    y, x = last.input_box[0][1] + bh - 1, last.input_box[1][0] + bw + 15
    assert tuple(all_tiles[y, x]) == INPUT_COLOUR and tuple(first[y, x]) != INPUT_COLOUR


def test_inputs_numpy_pil_3d_and_scale():
    array = np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8)
    a = draw_tiles(array, GEOMETRY)
    b = draw_tiles(PIL.Image.fromarray(array), GEOMETRY)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    volume = torch.rand(1, 9, 30, 45)
    geometry3 = TileGeometry((8, 40, 40), (4, 20, 20))
    picture = draw_tiles(volume, geometry3)
    assert picture.size == TileGrid((9, 30, 45), geometry3).padded_size[:0:-1]
    assert draw_tiles(array, GEOMETRY, scale=2).size == (a.width * 2, a.height * 2)


def test_errors():
    with pytest.raises(TypeError, match="geometry must be a TileGeometry"):
        draw_tiles(torch.rand(5, 5), (40, 20))
    with pytest.raises(
        TypeError, match="image must be a tensor, numpy array or PIL image, got list"
    ):
        draw_tiles([[0.0]], GEOMETRY)
    with pytest.raises(ValueError, match=r"got \(2, 3, 5, 5\)"):
        draw_tiles(torch.rand(2, 3, 5, 5), GEOMETRY)
    with pytest.raises(ValueError, match="scale must be a positive number, got 0"):
        draw_tiles(torch.rand(5, 5), GEOMETRY, scale=0)
    with pytest.raises(ValueError, match="tile index must be in"):
        draw_tiles(torch.rand(5, 5), GEOMETRY, tiles=[3])
    with pytest.raises(ValueError, match="tiles must be 'all' or a sequence"):
        draw_tiles(torch.rand(5, 5), GEOMETRY, tiles="some")
