"""draw_tiles: pixels checked against a picture painted from the grid's tile boxes."""

from __future__ import annotations

import math
import time

import numpy as np
import PIL.Image
import pytest
import torch

from unet_transforms import TileGeometry, TileGrid, mirror_pad
from unet_transforms.viz import (
    DIM,
    IMAGE_COLOUR,
    INPUT_COLOUR,
    MAX_TILES,
    OUTPUT_COLOUR,
    draw_tiles,
)

GEOMETRY = TileGeometry(40, 20)  # margin 10, step 20
SIZE = (50, 70)  # odd, non-square: a 3 x 4 grid
GREY, DIMMED = 128, round(128 * DIM)


def canvas_box(grid: TileGrid, box):
    """An image-coordinate box ``((y0, y1), (x0, x1))`` in canvas coordinates."""
    return tuple((a + b, c + b) for (a, c), (b, _) in zip(box[-2:], grid.padding[-2:]))


def ring(shape, box, width=2):
    """The pixels of a ``width``-pixel outline drawn inside a canvas box."""
    (y0, y1), (x0, x1) = box
    y, x = np.ogrid[: shape[0], : shape[1]]
    inside = (y >= y0) & (y < y1) & (x >= x0) & (x < x1)
    near = (y < y0 + width) | (y >= y1 - width) | (x < x0 + width) | (x >= x1 - width)
    return inside & near


def expected_picture(grid: TileGrid, tiles) -> np.ndarray:
    """A constant grey image's picture, painted from the grid: dimmed canvas, image,
    input outlines, output outlines on top, the image outline last."""
    shape = grid.padded_size[-2:]
    picture = np.full((*shape, 3), DIMMED, dtype=np.uint8)
    image_box = canvas_box(grid, tuple((0, n) for n in grid.image_size))
    (y0, y1), (x0, x1) = image_box
    picture[y0:y1, x0:x1] = GREY
    for attribute, colour in (("input_box", INPUT_COLOUR), ("output_box", OUTPUT_COLOUR)):
        for i in tiles:
            picture[ring(shape, canvas_box(grid, getattr(grid[i], attribute)))] = colour
    picture[ring(shape, image_box)] = IMAGE_COLOUR
    return picture


def grey(size=SIZE, dtype=torch.uint8) -> torch.Tensor:
    return torch.full(size, GREY, dtype=dtype)


# ---------------------------------------------------------------------- the picture
@pytest.mark.parametrize("align", ["center", "start"])
@pytest.mark.parametrize("tiles", ["all", [0], [5, -1], []])
def test_picture_is_painted_from_the_grid(align, tiles):
    grid = TileGrid(SIZE, GEOMETRY, align=align)
    picture = draw_tiles(grey(), GEOMETRY, align=align, tiles=tiles)
    assert picture.mode == "RGB"
    assert picture.size == grid.padded_size[::-1]  # PIL counts (width, height)
    indices = range(len(grid)) if tiles == "all" else tiles
    np.testing.assert_array_equal(np.asarray(picture), expected_picture(grid, indices))


def test_window_borders_are_blue_and_yellow():
    grid = TileGrid(SIZE, GEOMETRY)
    picture = draw_tiles(grey(), GEOMETRY, tiles=[5])
    (iy0, iy1), (ix0, ix1) = canvas_box(grid, grid[5].input_box)
    (oy0, oy1), (ox0, ox1) = canvas_box(grid, grid[5].output_box)
    for y, x in [(iy0, ix0 + 5), (iy1 - 1, ix0 + 5), (iy0 + 5, ix0), (iy0 + 5, ix1 - 2)]:
        assert picture.getpixel((x, y)) == INPUT_COLOUR
    for y, x in [(oy0, ox0 + 5), (oy1 - 2, ox0 + 5), (oy0 + 5, ox0 + 1), (oy0 + 5, ox1 - 1)]:
        assert picture.getpixel((x, y)) == OUTPUT_COLOUR
    assert picture.getpixel(((ox0 + ox1) // 2, (oy0 + oy1) // 2)) == (GREY,) * 3


def test_extrapolation_is_dimmed():
    grid = TileGrid(SIZE, GEOMETRY)
    pixels = np.asarray(draw_tiles(grey(), GEOMETRY, tiles=[]))
    (bh, ah), (bw, aw) = grid.padding
    assert pixels[bh + 5, bw + 5].tolist() == [GREY] * 3
    assert pixels[bh // 2, bw // 2].tolist() == [DIMMED] * 3
    assert pixels[-(ah // 2), -(aw // 2)].tolist() == [DIMMED] * 3
    assert pixels[bh + 5, -(aw // 2), 0] < pixels[bh + 5, bw + 5, 0]


def test_canvas_is_the_mirror_padded_image():
    """Away from the outlines the picture is mirror_pad(image), dimmed outside."""
    image = torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8)
    for mode in ("reflect", "symmetric"):
        grid = TileGrid(SIZE, GEOMETRY)
        canvas = mirror_pad(image, grid.padding, mode).permute(1, 2, 0).float()
        shape = grid.padded_size
        image_box = canvas_box(grid, ((0, SIZE[0]), (0, SIZE[1])))
        (y0, y1), (x0, x1) = image_box
        inside = np.zeros(shape, dtype=bool)
        inside[y0:y1, x0:x1] = True
        expected = torch.where(torch.from_numpy(inside)[..., None], canvas, canvas * DIM)
        picture = np.asarray(draw_tiles(image, GEOMETRY, mode=mode, tiles=[]))
        undrawn = ~ring(shape, image_box)
        np.testing.assert_array_equal(picture[undrawn], expected.round().byte().numpy()[undrawn])


def test_scale_resizes_the_canvas_and_keeps_lines_two_pixels_wide():
    grid = TileGrid(SIZE, GEOMETRY)
    one = np.asarray(draw_tiles(grey(), GEOMETRY, tiles=[0]))
    three = draw_tiles(grey(), GEOMETRY, tiles=[0], scale=3)
    assert three.size == (one.shape[1] * 3, one.shape[0] * 3)
    # the top border of tile 0's input window: rows 3*y0 and 3*y0 + 1, not 3*y0 + 2
    (iy0, _), (ix0, ix1) = canvas_box(grid, grid[0].input_box)
    x = 3 * (ix0 + ix1) // 2
    column = [three.getpixel((x, 3 * iy0 + k)) for k in range(3)]
    assert column[:2] == [INPUT_COLOUR] * 2 and column[2] != INPUT_COLOUR
    half = draw_tiles(grey(), GEOMETRY, scale=0.5)
    assert half.size == (round(grid.padded_size[1] / 2), round(grid.padded_size[0] / 2))
    assert draw_tiles(grey(), GEOMETRY, scale=1e-4).size == (1, 1)


@pytest.mark.parametrize(
    ("size", "geometry"), [(SIZE, GEOMETRY), ((40, 40), TileGeometry(190, 20))]
)
@pytest.mark.parametrize("scale", [0.25, 0.3, 0.5, 0.75, 0.9, 1.1, 1.5, 1.7, 3])
def test_outlines_sit_on_the_picture_pixels_that_show_the_border(scale, size, geometry):
    grid = TileGrid(size, geometry)
    picture = np.asarray(draw_tiles(grey(size), geometry, tiles=[], scale=scale))
    (b_h, _), (b_w, _) = grid.padding
    for axis, before, n in ((0, b_h, size[0]), (1, b_w, size[1])):
        # picture pixel j shows canvas pixel floor((j + 0.5) / scale)
        shown = np.floor((np.arange(picture.shape[axis]) + 0.5) / scale)
        inside = np.flatnonzero((shown >= before) & (shown < before + n))
        line = np.take(picture, picture.shape[1 - axis] // 2, axis=1 - axis)
        white = (line == IMAGE_COLOUR).all(-1)
        assert white[inside[0]] and white[inside[-1]], (axis, inside[[0, -1]])
        assert not white[inside[0] - 1] and not white[inside[-1] + 1]


def test_a_scale_that_would_make_a_huge_picture_is_refused():
    with pytest.raises(ValueError, match=r"scale=100000 gives a .* picture .* smaller scale"):
        draw_tiles(grey(), GEOMETRY, scale=100000)


def test_scale_samples_nearest_canvas_pixels():
    image = torch.randint(0, 256, SIZE, dtype=torch.uint8)
    one = np.asarray(draw_tiles(image, GEOMETRY, tiles=[]))
    three = np.asarray(draw_tiles(image, GEOMETRY, tiles=[], scale=3))
    enlarged = one.repeat(3, axis=0).repeat(3, axis=1)
    grid = TileGrid(SIZE, GEOMETRY)
    box = canvas_box(grid, ((0, SIZE[0]), (0, SIZE[1])))
    # the image outline: 2 pixels wide in both pictures, so 6 pixels once enlarged
    undrawn = ~ring(three.shape[:2], tuple((3 * a, 3 * b) for a, b in box), width=6)
    assert (three[~undrawn] == IMAGE_COLOUR).all(-1).sum() < (enlarged[~undrawn] == 255).all(
        -1
    ).sum()
    np.testing.assert_array_equal(three[undrawn], enlarged[undrawn])


# ---------------------------------------------------------------------- 3-D
def test_3d_draws_the_middle_slice_with_the_in_plane_grid():
    geometry = TileGeometry((8, 40, 40), (4, 20, 20))
    depth = 9
    volume = torch.arange(depth, dtype=torch.uint8)[:, None, None].expand(depth, *SIZE) * 20
    grid3 = TileGrid((depth, *SIZE), geometry)
    picture = draw_tiles(volume[None], geometry)
    assert picture.size == grid3.padded_size[:0:-1]
    (_, _), (bh, _), (bw, _) = grid3.padding
    assert picture.getpixel((bw + 7, bh + 7)) == (20 * (depth // 2),) * 3
    # tiles that differ only in depth coincide in the plane: the 2-D picture's outlines
    grid2 = TileGrid(SIZE, GEOMETRY)
    for tiles, tiles2 in (("all", range(len(grid2))), ([0], [0]), ([-1], [-1])):
        grey3 = grey((depth, *SIZE))
        expected = expected_picture(grid2, tiles2)
        np.testing.assert_array_equal(
            np.asarray(draw_tiles(grey3, geometry, tiles=tiles)), expected
        )


# ---------------------------------------------------------------------- input types
def test_numpy_and_pil_inputs():
    rgb = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    from_tensor = np.asarray(draw_tiles(torch.from_numpy(rgb).permute(2, 0, 1), GEOMETRY))
    np.testing.assert_array_equal(np.asarray(draw_tiles(rgb, GEOMETRY)), from_tensor)
    np.testing.assert_array_equal(
        np.asarray(draw_tiles(PIL.Image.fromarray(rgb), GEOMETRY)), from_tensor
    )
    rgba = np.concatenate([rgb, np.zeros((*SIZE, 1), dtype=np.uint8)], axis=-1)
    np.testing.assert_array_equal(np.asarray(draw_tiles(rgba, GEOMETRY)), from_tensor)
    np.testing.assert_array_equal(
        np.asarray(draw_tiles(PIL.Image.fromarray(rgba), GEOMETRY)), from_tensor
    )
    grid = TileGrid(SIZE, GEOMETRY)
    expected = expected_picture(grid, range(len(grid)))
    for image in (
        np.full(SIZE, GREY, dtype=np.uint8),
        np.full((*SIZE, 1), GREY, dtype=np.uint8),
        np.full((1, *SIZE), GREY, dtype=np.uint8),  # channels first, as the CLI reads
        PIL.Image.new("L", SIZE[::-1], GREY),
        PIL.Image.new("P", SIZE[::-1], 0),
    ):
        picture = np.asarray(draw_tiles(image, GEOMETRY))
        if isinstance(image, PIL.Image.Image) and image.mode == "P":
            assert picture.shape == expected.shape
        else:
            np.testing.assert_array_equal(picture, expected)


def test_read_only_and_big_endian_arrays(tmp_path):
    path = tmp_path / "image.raw"
    np.full(SIZE, 300, dtype=">u2").tofile(path)
    image = np.memmap(path, dtype=">u2", mode="r", shape=SIZE)
    image_copy = np.array(image)
    image_copy[0, 0] = 0
    picture = np.asarray(draw_tiles(image, GEOMETRY, tiles=[]))
    assert picture[30, 30].tolist() == [128] * 3  # constant: mid-grey
    picture = np.asarray(
        draw_tiles(PIL.Image.fromarray(image_copy.astype(np.uint16)), GEOMETRY, tiles=[])
    )
    grid = TileGrid(SIZE, GEOMETRY)
    (bh, _), (bw, _) = grid.padding
    assert picture[bh + 5, bw + 5].tolist() == [255] * 3  # 16-bit range, not clipped


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [(torch.float32, -3.0, 5.0), (torch.int16, -300, 700), (torch.uint16, 0, 4000)],
)
def test_other_dtypes_are_scaled_by_min_and_max(dtype, low, high):
    image = torch.full(SIZE, low, dtype=dtype)
    image[25:, :] = high
    grid = TileGrid(SIZE, GEOMETRY)
    (bh, _), (bw, _) = grid.padding
    pixels = np.asarray(draw_tiles(image, GEOMETRY, tiles=[]))
    assert pixels[bh + 10, bw + 10].tolist() == [0] * 3
    assert pixels[bh + 40, bw + 10].tolist() == [255] * 3


def test_constant_bool_and_non_finite_images():
    grid = TileGrid(SIZE, GEOMETRY)
    expected = expected_picture(grid, [0])
    for image in (torch.full(SIZE, -7.5), torch.full(SIZE, 42, dtype=torch.int64)):
        np.testing.assert_array_equal(np.asarray(draw_tiles(image, GEOMETRY, tiles=[0])), expected)
    (bh, _), (bw, _) = grid.padding
    mask = torch.zeros(SIZE, dtype=torch.bool)
    mask[20:] = True
    pixels = np.asarray(draw_tiles(mask, GEOMETRY, tiles=[]))
    assert pixels[bh + 10, bw + 10, 0] == 0 and pixels[bh + 30, bw + 10, 0] == 255
    image = torch.zeros(SIZE)
    image[20:] = 1.0
    image[5, 3], image[6, 3], image[7, 3] = math.nan, math.inf, -math.inf
    pixels = np.asarray(draw_tiles(image, GEOMETRY, tiles=[]))
    assert pixels[bh + 30, bw + 10, 0] == 255  # the range comes from the finite values
    assert pixels[bh + 10, bw + 10, 0] == 0
    assert pixels[bh + 5 : bh + 8, bw + 3, 0].tolist() == [0, 255, 0]


def test_four_channels_show_the_first_and_gradients_are_ignored():
    image = torch.zeros(4, *SIZE)
    image[0, 20:] = 1.0
    image[1:] = torch.rand(3, *SIZE)
    image.requires_grad_(True)
    first = draw_tiles(image[:1].detach(), GEOMETRY)
    np.testing.assert_array_equal(np.asarray(draw_tiles(image, GEOMETRY)), np.asarray(first))
    assert image.grad is None


def test_small_image_is_mirrored_again_and_again():
    geometry = TileGeometry(572, 388)
    image = torch.randint(0, 256, (3, 10, 14), dtype=torch.uint8)
    grid = TileGrid((10, 14), geometry)
    picture = np.asarray(draw_tiles(image, geometry, tiles=[]))
    dimmed = (mirror_pad(image, grid.padding).float() * DIM).round().byte().permute(1, 2, 0)
    assert picture.shape == (*grid.padded_size, 3)
    np.testing.assert_array_equal(picture[5:50, 5:50], dimmed[5:50, 5:50].numpy())


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"geometry": (40, 20)}, TypeError, "geometry must be a TileGeometry, got tuple"),
        ({"image": [[0.0]]}, TypeError, "image must be a torch.Tensor, numpy array or PIL image"),
        ({"image": torch.zeros(5, 5, dtype=torch.complex64)}, TypeError, "must not be complex"),
        ({"image": np.full((5, 5), "a")}, TypeError, "boolean, integer or floating dtype"),
        (
            {"image": torch.rand(2, 3, 5, 5)},
            ValueError,
            r"\(C, H, W\) or \(H, W\).*\(2, 3, 5, 5\)",
        ),
        ({"image": torch.rand(0, 5)}, ValueError, r"got \(0, 5\)"),
        ({"image": torch.rand(5)}, ValueError, r"got \(5,\)"),
        ({"align": "middle"}, ValueError, "align must be 'center' or 'start', got 'middle'"),
        ({"mode": "wrap"}, ValueError, "mode must be 'reflect' or 'symmetric', got 'wrap'"),
        ({"tiles": "some"}, ValueError, "tiles must be 'all' or a sequence of tile indices"),
        ({"tiles": 3}, TypeError, "tiles must be 'all' or a sequence of tile indices, got int"),
        ({"tiles": [1]}, ValueError, r"tile index must be in \[-1, 1\).*got 1"),
        ({"tiles": [0.5]}, TypeError, "tile index must be an int, got float"),
        ({"scale": 0}, ValueError, "scale must be a positive finite number, got 0"),
        ({"scale": -2.0}, ValueError, "scale must be a positive finite number, got -2.0"),
        ({"scale": math.inf}, ValueError, "scale must be a positive finite number, got inf"),
        ({"scale": math.nan}, ValueError, "scale must be a positive finite number, got nan"),
        ({"scale": "2"}, TypeError, "scale must be a positive number, got str"),
        ({"scale": True}, TypeError, "scale must be a positive number, got bool"),
    ],
)
def test_errors(kwargs, error, match):
    arguments = {"image": torch.rand(5, 5), "geometry": GEOMETRY, **kwargs}
    image, geometry = arguments.pop("image"), arguments.pop("geometry")
    with pytest.raises(error, match=match):
        draw_tiles(image, geometry, **arguments)


def test_3d_errors():
    geometry = TileGeometry((8, 40, 40), (4, 20, 20))
    with pytest.raises(ValueError, match=r"\(C, D, H, W\) or \(D, H, W\).*got \(5, 5\)"):
        draw_tiles(torch.rand(5, 5), geometry)
    with pytest.raises(ValueError, match="3-D geometry, got a PIL image"):
        draw_tiles(PIL.Image.new("L", (5, 5)), geometry)


# ------------------------------------------------ bounded work (issue 11, item 4)
def test_too_many_tiles_are_refused_before_any_work(monkeypatch):
    visited = []
    original = TileGrid.__getitem__
    monkeypatch.setattr(TileGrid, "__getitem__", lambda g, i: visited.append(i) or original(g, i))
    start = time.perf_counter()
    with pytest.raises(
        ValueError,
        match=(
            r"tiles selects all 2250000 tiles of the \(1500, 1500\) grid, more than "
            r"max_tiles=10000; pass max_tiles=2250000 \(or None\) to draw them all"
        ),
    ):
        draw_tiles(torch.zeros(1500, 1500, dtype=torch.uint8), TileGeometry(3, 1))
    assert time.perf_counter() - start < 5  # a backstop only: this used to run ~5 min
    assert visited == []  # no tile was even looked at
    assert MAX_TILES == 10_000
    with pytest.raises(ValueError, match=r"tiles selects 5 tiles, more than max_tiles=4"):
        draw_tiles(grey(), GEOMETRY, tiles=[0, 1, 2, 3, 3], max_tiles=4)
    assert visited == []


def test_max_tiles_raises_or_lifts_the_limit():
    grid = TileGrid(SIZE, GEOMETRY)  # 12 tiles
    expected = expected_picture(grid, range(len(grid)))
    for limit in (len(grid), None):
        np.testing.assert_array_equal(
            np.asarray(draw_tiles(grey(), GEOMETRY, max_tiles=limit)), expected
        )
    with pytest.raises(
        ValueError, match=r"all 12 tiles of the \(3, 4\) grid, more than max_tiles=11"
    ):
        draw_tiles(grey(), GEOMETRY, max_tiles=11)
    picture = draw_tiles(grey(), GEOMETRY, tiles=[5, -1], max_tiles=2)
    np.testing.assert_array_equal(np.asarray(picture), expected_picture(grid, [5, -1]))


@pytest.mark.parametrize(
    ("max_tiles", "error", "match"),
    [
        (0, ValueError, "max_tiles must be a positive int or None, got 0"),
        (-3, ValueError, "max_tiles must be a positive int or None, got -3"),
        (2.0, TypeError, "max_tiles must be an int or None, got float"),
        (True, TypeError, "max_tiles must be an int or None, got bool"),
        ("12", TypeError, "max_tiles must be an int or None, got str"),
    ],
)
def test_max_tiles_errors(max_tiles, error, match):
    with pytest.raises(error, match=match):
        draw_tiles(grey(), GEOMETRY, max_tiles=max_tiles)
