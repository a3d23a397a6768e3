"""TileGrid: the overlap-tile plan, extraction from the unpadded image, neighbourhoods."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from unet_transforms import TileGeometry, TileGrid, TileIndexError, mirror_pad, tile_at
from unet_transforms.merging import TileMerger

from common import DTYPES, grids, make_tensor


def window(box, offset=None):
    offset = offset or [0] * len(box)
    return tuple(slice(a + o, b + o) for (a, b), o in zip(box, offset))


def test_seed_examples():
    paper = TileGrid((512, 512), TileGeometry(572, 388), align="start")
    assert paper.shape == (2, 2) and paper.padded_size == (960, 960)
    assert paper.padding == ((92, 356), (92, 356))
    exact = TileGrid((512, 512), TileGeometry.unet(input_size=572), align="start")
    assert exact.shape == (2, 2) and exact.padded_size == (956, 956)
    assert exact.padding == ((94, 350), (94, 350))
    # the canvas of an exact geometry is a valid U-Net input: 956 = 188 + 16 * 48
    assert TileGeometry.unet(input_size=956).output_size == (772, 772)
    # a multiple of the output size needs no extra tile
    assert TileGrid(776, TileGeometry(572, 388)).shape == (2, 2)
    assert TileGrid(100, TileGeometry(572, 388)).shape == (1, 1)


@given(grids())
def test_tile_counts_and_order(grid):
    g = grid.geometry
    assert grid.shape == tuple(math.ceil(n / s) for n, s in zip(grid.image_size, g.step))
    assert len(grid) == math.prod(grid.shape) == len(list(grid))
    tiles = list(grid)
    assert [t.index for t in tiles] == list(range(len(grid)))
    assert [t.grid_index for t in tiles] == list(np.ndindex(*grid.shape))
    assert grid[-1] == tiles[-1]


@given(grids())
def test_keep_windows_partition_the_image(grid):
    coverage = np.zeros(grid.image_size, dtype=np.int64)
    span = [[] for _ in grid.image_size]
    for tile in grid:
        coverage[
            window([(max(a, 0), min(b, n)) for (a, b), n in zip(tile.keep_box, grid.image_size)])
        ] += 1
        for axis, box in enumerate(tile.keep_box):
            span[axis].append(box)
    assert (coverage == 1).all()
    for axis, (n, step, origin) in enumerate(
        zip(grid.image_size, grid.geometry.step, grid.origin)
    ):
        starts = sorted({a for a, _ in span[axis]})
        assert starts == [origin + k * step for k in range(grid.shape[axis])]
        overhang = grid.shape[axis] * step - n
        assert 0 <= overhang < step
        assert -origin == (overhang // 2 if grid.align == "center" else 0)


@given(grids())
def test_windows_are_nested_and_centred(grid):
    g = grid.geometry
    for tile in grid:
        for axis in range(g.ndim):
            (ia, ib), (oa, ob), (ka, kb) = (
                tile.input_box[axis],
                tile.output_box[axis],
                tile.keep_box[axis],
            )
            assert (ib - ia, ob - oa, kb - ka) == (
                g.input_size[axis],
                g.output_size[axis],
                g.step[axis],
            )
            assert oa - ia == ib - ob == g.margin[axis]
            assert ka - oa == (g.output_size[axis] - g.step[axis]) // 2
            assert ia <= oa <= ka < kb <= ob <= ib


@given(grids())
def test_padding_holds_every_input_window(grid):
    lo = [min(t.input_box[a][0] for t in grid) for a in range(grid.geometry.ndim)]
    hi = [max(t.input_box[a][1] for t in grid) for a in range(grid.geometry.ndim)]
    assert grid.padding == tuple((-a, b - n) for a, b, n in zip(lo, hi, grid.image_size))
    assert all(b >= 0 and a >= 0 for b, a in grid.padding)
    assert grid.padded_size == tuple(b - a for a, b in zip(lo, hi))


@given(grids(), st.sampled_from(["reflect", "symmetric"]), st.sampled_from(DTYPES))
def test_extract_equals_pad_then_crop(grid, mode, dtype):
    image = make_tensor((2, *grid.image_size), dtype)
    canvas = mirror_pad(image, grid.padding, mode)
    before = [b for b, _ in grid.padding]
    for tile in grid:
        expected = canvas[(Ellipsis, *window(tile.input_box, before))]
        got = grid.extract(image, tile.index, mode)
        assert got.dtype == dtype and got.shape == (2, *grid.geometry.input_size)
        assert torch.equal(got, expected)
        label = grid.extract_output(image[0], tile.index, mode)
        assert torch.equal(label, canvas[0][window(tile.output_box, before)])


def merge(grid, outputs):
    merger = TileMerger(grid)
    for i, output in enumerate(outputs):
        merger.add(i, output)
    return merger.result()


@given(grids(), st.sampled_from(["reflect", "symmetric"]), st.sampled_from(DTYPES))
def test_round_trip_law(grid, mode, dtype):
    g = grid.geometry
    image = make_tensor((3, *grid.image_size), dtype)
    centre = tuple(slice(m, m + o) for m, o in zip(g.margin, g.output_size))
    crops = [grid.extract(image, i, mode)[(Ellipsis, *centre)] for i in range(len(grid))]
    assert torch.equal(merge(grid, crops), image)
    # a same-padding network returns input-size tiles: merging centre-crops them
    inputs = [grid.extract(image, i, mode) for i in range(len(grid))]
    assert torch.equal(merge(grid, inputs), image)


@given(grids(ndim=2), st.integers(-3, 120))
def test_extract_output_fill_marks_outside_pixels(grid, fill):
    label = make_tensor(grid.image_size, torch.int64) + 200
    for tile in grid:
        out = grid.extract_output(label, tile.index, fill=fill)
        (a0, b0), (a1, b1) = tile.output_box
        rows = torch.arange(a0, b0)[:, None]
        cols = torch.arange(a1, b1)[None, :]
        inside = (
            (rows >= 0) & (rows < grid.image_size[0]) & (cols >= 0) & (cols < grid.image_size[1])
        )
        assert (out[~inside] == fill).all()
        assert (out[inside] >= 200).all()
        assert torch.equal(out[inside], grid.extract_output(label, tile.index)[inside])


def test_extract_from_numpy_and_memmap(tmp_path):
    grid = TileGrid((37, 23), TileGeometry(30, 10, step=7))
    array = np.random.default_rng(0).integers(0, 255, (2, 37, 23), dtype=np.uint8)
    memmap = np.memmap(tmp_path / "image.raw", dtype=np.uint8, mode="w+", shape=array.shape)
    memmap[:] = array
    memmap.flush()
    readonly = np.memmap(tmp_path / "image.raw", dtype=np.uint8, mode="r", shape=array.shape)
    tensor = torch.from_numpy(array)
    for i in range(len(grid)):
        expected = grid.extract(tensor, i)
        for source in (array, readonly, array.astype(">u2")):
            got = grid.extract(source, i)
            assert isinstance(got, torch.Tensor)
            assert torch.equal(got.long(), expected.long())


def test_extract_does_not_alias_the_image():
    image = torch.zeros(1, 50, 50)
    grid = TileGrid(50, TileGeometry(10, 10))
    tile = grid.extract(image, 5)
    tile += 1
    assert image.abs().sum() == 0


def test_grid_value_semantics():
    grid = TileGrid((20, 30), TileGeometry(12, 8))
    assert grid == TileGrid([20, 30], TileGeometry(12, 8))
    assert pickle.loads(pickle.dumps(grid)) == grid
    assert hash(grid) == hash(TileGrid((20, 30), TileGeometry(12, 8)))
    assert TileGrid(7, TileGeometry((6, 6, 6), (4, 4, 4))).image_size == (7, 7, 7)


def test_grid_errors():
    g = TileGeometry(12, 8)
    with pytest.raises(TypeError, match=r"geometry must be a TileGeometry .*, got tuple"):
        TileGrid(10, (12, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="align must be 'center' or 'start', got 'end'"):
        TileGrid(10, g, align="end")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"image_size must be positive on every axis, got \(0, 5\)"
    ):
        TileGrid((0, 5), g)
    with pytest.raises(
        ValueError, match=r"image_size must have 2 ints \(geometry.ndim=2\), got \(5, 5, 5\)"
    ):
        TileGrid((5, 5, 5), g)
    with pytest.raises(
        TypeError, match="image_size must be an int or a sequence of 2 ints, got float"
    ):
        TileGrid(5.0, g)  # type: ignore[arg-type]
    grid = TileGrid(10, g)
    with pytest.raises(
        TileIndexError, match=r"tile index must be in \[-4, 4\) for a \(2, 2\) grid, got 4"
    ):
        grid[4]
    with pytest.raises(ValueError, match="tile index must be in"):
        grid.extract(torch.zeros(10, 10), -5)
    with pytest.raises(TypeError, match="tile index must be an int, got str"):
        grid["0"]  # type: ignore[index]
    with pytest.raises(
        ValueError, match=r"image has spatial size \(10, 11\) .* planned for \(10, 10\)"
    ):
        grid.extract(torch.zeros(3, 10, 11), 0)
    with pytest.raises(ValueError, match=r"image must have at least 2 axes"):
        grid.extract(torch.zeros(10), 0)
    with pytest.raises(ValueError, match="mode must be"):
        grid.extract(torch.zeros(10, 10), 0, mode="edge")  # type: ignore[arg-type]


def brute_force_overlapping(grid, box, window):
    """Per axis, the positions whose window (read from the tiles) meets the box."""
    result = []
    for axis, (lo, hi) in enumerate(box):
        hits = []
        for position in range(grid.shape[axis]):
            index = grid.flat_index([position if a == axis else 0 for a in range(len(box))])
            a, b = getattr(grid[index], f"{window}_box")[axis]
            if a < hi and b > lo:
                hits.append(position)
        result.append(hits)
    return result


@given(
    grids(),
    st.sampled_from(["keep", "output", "input"]),
    st.data(),
)
def test_overlapping_matches_the_tiles_windows(grid, window, data):
    box = []
    for n in grid.image_size:
        lo = data.draw(st.integers(-5, n + 3))
        box.append((lo, lo + data.draw(st.integers(1, n + 5))))
    got = grid.overlapping(box, window)
    assert [list(r) for r in got] == brute_force_overlapping(grid, box, window)


@given(grids())
def test_flat_index_inverts_grid_index(grid):
    for tile in grid:
        assert grid.flat_index(tile.grid_index) == tile.index


def test_neighbourhood_errors():
    grid = TileGrid(10, TileGeometry(12, 8))
    with pytest.raises(ValueError, match="window must be 'keep', 'output' or 'input', got 'all'"):
        grid.overlapping(((0, 1), (0, 1)), "all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"box must have 2 \(start, stop\) pairs, got"):
        grid.overlapping(((0, 1),))
    with pytest.raises(ValueError, match=r"box must have stop > start, got \(3, 3\)"):
        grid.overlapping(((0, 1), (3, 3)))
    with pytest.raises(
        TileIndexError, match=r"position must have 2 ints inside the \(2, 2\) grid"
    ):
        grid.flat_index((0, 2))
    with pytest.raises(TileIndexError, match="position must have 2 ints"):
        grid.flat_index((0,))


def test_no_stitching_on_the_grid():
    # planning and merging are split: the grid plans and extracts, TileMerger merges
    grid = TileGrid(10, TileGeometry(12, 8))
    for name in ("stitch", "paste", "keep_slices"):
        assert not hasattr(grid, name)


def test_clear_errors_for_odd_arguments():
    with pytest.raises(TypeError, match="geometry must be a TileGeometry, got NoneType"):
        tile_at(None, (0, 0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="output_start must be a sequence of ints, got None"):
        tile_at(TileGeometry(12, 8), None)  # type: ignore[arg-type]
    grid = TileGrid(10, TileGeometry(12, 8))
    with pytest.raises(TypeError, match="tile index must be an int, got Tensor"):
        grid[torch.tensor(True)]  # type: ignore[index]
    assert grid[torch.tensor(1)].index == 1  # a 0-d integer tensor is an int
    with pytest.raises(ValueError, match=r"needs a \(4294967296, 4294967296\) grid .* more than"):
        TileGrid((2**33, 2**33), TileGeometry(2, 2))
    assert len(TileGrid((2**31, 2**31), TileGeometry(2, 2))) == 2**60


@given(st.lists(st.integers(1, 7), min_size=1, max_size=4), st.data())
def test_unravel_equals_numpy(shape, data):
    from unet_transforms._boxes import unravel

    index = data.draw(st.integers(0, math.prod(shape) - 1))
    expected = tuple(int(c) for c in np.unravel_index(index, shape))
    assert unravel(index, tuple(shape)) == expected


@given(size=st.lists(st.integers(1, 9), min_size=1, max_size=3), data=st.data())
def test_inside_means_numpy_reads_the_whole_box(size, data):
    """inside(box, size) exactly when slicing an image of that size gives the box's shape
    without clipping (no negative start, no end past the edge)."""
    from unet_transforms._boxes import inside

    box = tuple(
        (lo, lo + data.draw(st.integers(1, 12)))
        for lo in (data.draw(st.integers(-4, n + 2)) for n in size)
    )
    image = np.zeros(size)
    clipped = image[tuple(slice(max(lo, 0), hi) for lo, hi in box)].shape
    assert inside(box, size) == (clipped == tuple(hi - lo for lo, hi in box))
