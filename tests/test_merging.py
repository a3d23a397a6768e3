"""TileMerger and blend_weights: exact keep windows, blended overlaps, outputs, targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import zarr
from hypothesis import given
from hypothesis import strategies as st

from unet_transforms import TileGeometry, TileGrid
from unet_transforms.merging import TileMerger, blend_weights, label_dtype, result_dtype

from common import grids, make_tensor


def tile_outputs(grid, channels=3, seed=0, size=None):
    """Independent random outputs per tile: blending visibly matters."""
    size = size or grid.geometry.output_size
    return [make_tensor((channels, *size), seed=seed + i) * 4 - 2 for i in range(len(grid))]


def merge(grid, outputs, order=None, **kwargs):
    merger = TileMerger(grid, **kwargs)
    for i in order if order is not None else merger.tile_indices():
        merger.add(i, outputs[i])
    return merger.result()


def brute_force_blend(grid, outputs, weights):
    """Oracle: every tile adds weight * output over its whole output window, in float64."""
    channels = outputs[0].shape[0]
    total = np.zeros((channels, *grid.image_size))
    norm = np.zeros(grid.image_size)
    w = weights.double().numpy()
    for tile in grid:
        dst, src = [], []
        for (a, b), n in zip(tile.output_box, grid.image_size):
            lo, hi = max(a, 0), min(b, n)
            if lo >= hi:
                break
            dst.append(slice(lo, hi))
            src.append(slice(lo - a, hi - a))
        else:
            total[(Ellipsis, *dst)] += (
                w[tuple(src)] * outputs[tile.index].double().numpy()[(Ellipsis, *src)]
            )
            norm[tuple(dst)] += w[tuple(src)]
    return torch.from_numpy(total / norm)


def monai_gaussian(size):
    """MONAI's compute_importance_map(size, 'gaussian', sigma_scale=0.125), in float64."""
    weights = np.ones(())
    for n in size:
        x = np.arange(n) - (n - 1) / 2
        weights = np.multiply.outer(weights, np.exp(-(x**2) / (2 * (0.125 * n) ** 2)))
    return np.maximum(weights, max(weights.min(), 1e-3))


@st.composite
def overlapping_grids(draw, ndim=None):
    """Grids whose output windows overlap (step < output), as blending needs."""
    ndim = ndim or draw(st.sampled_from([2, 3]))
    output = [draw(st.integers(2, 9)) for _ in range(ndim)]
    margin = [draw(st.integers(0, 3)) for _ in range(ndim)]
    step = [draw(st.integers(1, o - 1)) for o in output]
    geometry = TileGeometry([o + 2 * m for o, m in zip(output, margin)], output, step=step)
    size = [draw(st.integers(1, 20 if ndim == 2 else 9)) for _ in range(ndim)]
    return TileGrid(size, geometry, align=draw(st.sampled_from(["center", "start"])))


# ---------------------------------------------------------------------- weights
@pytest.mark.parametrize("size", [(1, 1), (4, 4), (5, 8), (512, 384), (7, 6, 5)])
def test_gaussian_weights_are_monais(size):
    weights = blend_weights("gaussian", size)
    assert weights.dtype == torch.float32 and weights.shape == size
    np.testing.assert_allclose(weights.numpy(), monai_gaussian(size), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("size", [(1, 3), (4, 4), (5, 8), (6, 5, 7)])
def test_hann_weights_are_products_of_symmetric_hann_windows(size):
    expected = np.ones(())
    for n in size:
        expected = np.multiply.outer(expected, np.hanning(n))
    np.testing.assert_allclose(blend_weights("hann", size).numpy(), expected, atol=1e-6)


def test_weight_tensor_is_copied_and_checked():
    user = torch.rand(4, 6, dtype=torch.float64)
    weights = blend_weights(user, (4, 6))
    assert weights.dtype == torch.float64 and torch.equal(weights, user)
    weights[0, 0] = -1
    assert user[0, 0] >= 0  # nothing the caller passed is modified
    assert blend_weights(torch.ones(4, 6, dtype=torch.int64), (4, 6)).dtype == torch.float32
    with pytest.raises(ValueError, match=r"output tile's spatial shape \(4, 6\), got \(6, 4\)"):
        blend_weights(torch.ones(6, 4), (4, 6))
    with pytest.raises(ValueError, match="finite and non-negative"):
        blend_weights(torch.full((4, 6), -1.0), (4, 6))
    with pytest.raises(ValueError, match="finite and non-negative"):
        blend_weights(torch.full((4, 6), float("nan")), (4, 6))
    with pytest.raises(TypeError, match=r"real tensor, got dtype torch.complex64"):
        blend_weights(torch.ones(4, 6, dtype=torch.complex64), (4, 6))
    with pytest.raises(
        ValueError, match=r"blend must be 'crop', 'gaussian', 'hann' .* got 'mean'"
    ):
        blend_weights("mean", (4, 6))
    with pytest.raises(TypeError, match=r"blend must be .* got float"):
        blend_weights(0.5, (4, 6))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- crop
@given(grids(), st.data())
def test_crop_region_equals_the_image_region(grid, data):
    g = grid.geometry
    image = make_tensor((2, *grid.image_size))
    region = []
    for n in grid.image_size:
        lo = data.draw(st.integers(0, n - 1))
        region.append((lo, data.draw(st.integers(lo + 1, n))))
    centre = tuple(slice(m, m + o) for m, o in zip(g.margin, g.output_size))
    merger = TileMerger(grid, region=region)
    assert merger.tile_indices() == sorted(merger.tile_indices())
    for i in reversed(merger.tile_indices()):  # any order
        merger.add(grid[i], grid.extract(image, i)[(Ellipsis, *centre)])
    expected = image[(Ellipsis, *(slice(lo, hi) for lo, hi in region))]
    assert torch.equal(merger.result(), expected)


def test_crop_keeps_dtype_and_leading_axes():
    grid = TileGrid((9, 7), TileGeometry(6, 4, step=3))
    image = make_tensor((2, 3, 9, 7), torch.int64)
    tiles = [grid.extract(image, i)[..., 1:5, 1:5] for i in range(len(grid))]
    result = merge(grid, tiles)
    assert result.dtype == torch.int64 and torch.equal(result, image)


# ---------------------------------------------------------------------- blends
@given(overlapping_grids(), st.sampled_from(["gaussian", "hann", "ones", "random"]), st.data())
def test_blend_equals_the_brute_force_average(grid, blend, data):
    size = grid.geometry.output_size
    if blend == "ones":
        blend = torch.ones(size)
    elif blend == "random":
        blend = make_tensor(size, seed=7) + 0.1
    weights = blend_weights(blend, size)
    keep = tuple(slice(e, e + s) for e, s in zip(grid.geometry.keep_offset, grid.geometry.step))
    if not bool((weights[keep] > 0).all()):
        with pytest.raises(ValueError, match="positive on the keep window"):
            TileMerger(grid, blend=blend)
        return
    outputs = tile_outputs(grid)
    order = None if data.draw(st.booleans()) else list(reversed(range(len(grid))))
    result = merge(grid, outputs, order, blend=blend)
    assert result.dtype == torch.float32
    torch.testing.assert_close(
        result.double(), brute_force_blend(grid, outputs, weights), rtol=1e-5, atol=1e-5
    )


def test_blend_of_equal_predictions_is_the_prediction():
    grid = TileGrid((40, 33), TileGeometry(16, 16, step=12))  # a same-padding net
    image = make_tensor((2, 40, 33))
    for blend in ("gaussian", "hann"):
        result = merge(grid, [grid.extract(image, i) for i in range(len(grid))], blend=blend)
        torch.testing.assert_close(result, image)


def test_blend_needs_weight_on_every_keep_window():
    # hann is 0 on the tile's edges: step == output (no overlap) and step == output - 1
    # (overlapping, but the keep window starts on an edge) are both refused
    for step in (8, 7):
        grid = TileGrid(20, TileGeometry(8, 8, step=step))
        with pytest.raises(
            ValueError,
            match=r"positive on the keep window .*'hann' is 0 on them: step <= output_size - 2",
        ):
            TileMerger(grid, blend="hann")
        TileMerger(grid, blend="gaussian")  # positive everywhere
    TileMerger(TileGrid(20, TileGeometry(8, 8, step=6)), blend="hann")


def test_only_open_keep_windows_are_held():
    grid = TileGrid((60, 60), TileGeometry(10, 10, step=6))
    merger = TileMerger(grid, blend="gaussian")
    outputs = tile_outputs(grid, channels=1)
    held = 0
    for i in merger.tile_indices():
        merger.add(i, outputs[i])
        held = max(held, len(merger._pending))
    # reach of an output window: one keep window on each side -> about 2 rows open
    assert 0 < held <= 2 * grid.shape[1] + 2
    assert not merger._pending


# ---------------------------------------------------------------------- outputs
@pytest.mark.parametrize("blend", ["crop", "gaussian"])
def test_outputs_are_post_processed_merged_logits(blend):
    grid = TileGrid((23, 17), TileGeometry(10, 8, step=5))
    outputs = tile_outputs(grid, channels=4)
    logits = merge(grid, outputs, blend=blend)
    probabilities = merge(grid, outputs, blend=blend, output="probabilities")
    torch.testing.assert_close(probabilities, torch.softmax(logits, dim=0))
    labels = merge(grid, outputs, blend=blend, output="labels")
    assert labels.dtype == torch.uint8 and labels.shape == (23, 17)
    assert torch.equal(labels, logits.argmax(0).to(torch.uint8))


def test_one_channel_is_sigmoid_and_threshold():
    grid = TileGrid((13, 11), TileGeometry(6, 4, step=3))
    outputs = tile_outputs(grid, channels=1)
    logits = merge(grid, outputs)
    probabilities = merge(grid, outputs, output="probabilities")
    torch.testing.assert_close(probabilities, torch.sigmoid(logits))  # SIMD tails round apart
    labels = merge(grid, outputs, output="labels")
    assert torch.equal(labels, (torch.sigmoid(logits[0]) > 0.5).to(torch.uint8))


def test_label_dtypes():
    assert [label_dtype(c) for c in (1, 2, 256, 257, 32768, 32769)] == [
        torch.uint8,
        torch.uint8,
        torch.uint8,
        torch.int16,
        torch.int16,
        torch.int32,
    ]
    grid = TileGrid(5, TileGeometry(4, 4))
    outputs = [torch.zeros(300, 4, 4) for _ in range(len(grid))]
    outputs[0][299] = 1
    labels = merge(grid, outputs, output="labels")
    assert labels.dtype == torch.int16 and int(labels.max()) == 299
    assert result_dtype("probabilities", 3, torch.float16) == torch.float16
    assert result_dtype("probabilities", 3, torch.int64) == torch.float32
    assert result_dtype("logits", 3, torch.int64, torch.ones(2, 2)) == torch.float32


# ---------------------------------------------------------------------- targets
@pytest.mark.parametrize("target", ["tensor", "numpy", "memmap", "zarr"])
@pytest.mark.parametrize("output", ["logits", "labels"])
def test_writes_into_any_array_like(target, output, tmp_path):
    grid = TileGrid((21, 14), TileGeometry(8, 6, step=4))
    outputs = tile_outputs(grid)
    expected = merge(grid, outputs, output=output, blend="hann")
    shape, dtype = tuple(expected.shape), ("float64" if output == "logits" else "int32")
    if target == "tensor":
        out = torch.zeros(shape, dtype=getattr(torch, dtype))
    elif target == "numpy":
        out = np.zeros(shape, dtype)
    elif target == "memmap":
        out = np.lib.format.open_memmap(tmp_path / "out.npy", "w+", dtype, shape)
    else:
        out = zarr.create_array(store={}, shape=shape, chunks=(5,) * len(shape), dtype=dtype)
    result = merge(grid, outputs, output=output, blend="hann", out=out)
    assert result is out
    np.testing.assert_array_equal(np.asarray(out[...]), expected.numpy().astype(dtype))


def test_out_must_hold_the_result_without_loss():
    grid = TileGrid((10, 10), TileGeometry(6, 4))
    tile = torch.full((1, 4, 4), 300.7)
    with pytest.raises(TypeError, match=r"out has dtype uint8, which cannot hold the logits .*"):
        TileMerger(grid, out=np.zeros((1, 10, 10), np.uint8)).add(0, tile)
    with pytest.raises(TypeError, match=r"out has dtype torch.float16.*torch.float32"):
        TileMerger(grid, out=torch.zeros(1, 10, 10, dtype=torch.float16)).add(0, tile)
    half = torch.full((1, 4, 4), 0.5, dtype=torch.bfloat16)
    for out in (np.zeros((1, 10, 10), np.float16), torch.zeros(1, 10, 10, dtype=torch.float16)):
        with pytest.raises(TypeError, match=r"out has dtype .*float16.*torch.bfloat16"):
            TileMerger(grid, out=out).add(0, half)
    labels = torch.zeros(300, 4, 4)
    with pytest.raises(TypeError, match=r"out has dtype torch.uint16.*torch.int16"):
        TileMerger(grid, output="labels", out=torch.zeros(10, 10, dtype=torch.uint16)).add(
            0, labels
        )
    with pytest.raises(
        ValueError, match=r"out must have shape \(1, 10, 10\) .* got \(2, 10, 10\)"
    ):
        TileMerger(grid, out=torch.zeros(2, 10, 10)).add(0, tile)
    with pytest.raises(ValueError, match=r"out must have shape \(\.\.\., \*\(10, 10\)\)"):
        TileMerger(grid, out=torch.zeros(1, 10, 9))
    with pytest.raises(TypeError, match=r"out must be a tensor or an array-like .* got list"):
        TileMerger(grid, out=[[0.0]])


@pytest.mark.parametrize("target", ["tensor", "numpy", "zarr"])
@pytest.mark.parametrize(
    ("result", "held_by"),
    [
        (torch.uint8, ["uint16", "uint32", "uint64", "int16", "float32"]),
        (torch.int16, ["int32", "int64", "float32"]),
        (torch.bfloat16, ["float32", "float64"]),
    ],
)
def test_out_of_any_dtype_that_holds_the_result(target, result, held_by):
    # torch does not promote uint16-64 (the check raised its RuntimeError), and a
    # bfloat16 result has no numpy dtype (a float32 numpy or zarr out was refused)
    grid = TileGrid((10, 10), TileGeometry(6, 4))
    if result == torch.bfloat16:
        outputs, output = [torch.rand(2, 4, 4).bfloat16() for _ in range(len(grid))], "logits"
    else:
        channels = 3 if result == torch.uint8 else 300
        outputs, output = tile_outputs(grid, channels=channels), "labels"
    expected = merge(grid, outputs, output=output)
    assert expected.dtype == result
    for name in held_by:
        shape = tuple(expected.shape)
        if target == "tensor":
            out = torch.zeros(shape, dtype=getattr(torch, name))
        elif target == "numpy":
            out = np.zeros(shape, name)
        else:
            out = zarr.create_array(store={}, shape=shape, chunks=(2,) * len(shape), dtype=name)
        merge(grid, outputs, output=output, out=out)
        got = torch.as_tensor(np.asarray(out[...]) if target != "tensor" else out)
        assert torch.equal(got.double(), expected.double()), name


def test_out_must_be_writable():
    grid = TileGrid((10, 10), TileGeometry(6, 4))
    out = np.zeros((1, 10, 10), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"out must be writable, got a read-only numpy"):
        TileMerger(grid, out=out)


# ---------------------------------------------------------------------- errors
def test_merger_errors():
    grid = TileGrid((10, 10), TileGeometry(6, 4))
    merger = TileMerger(grid)
    with pytest.raises(ValueError, match=r"1 of 9 tiles are missing|9 of 9 tiles are missing"):
        merger.result()
    merger.add(0, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="tile 0 was added already"):
        merger.add(0, torch.zeros(2, 4, 4))
    with pytest.raises(
        ValueError, match=r"8 of 9 tiles are missing \(indices 1, 2, 3, 4, 5, \.\.\.\)"
    ):
        merger.result()
    with pytest.raises(ValueError, match=r"leading shape \(2,\) and dtype torch.float32"):
        merger.add(1, torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"output must have shape \(\.\.\., \*\(4, 4\)\) .* got"):
        merger.add(1, torch.zeros(2, 5, 5))
    with pytest.raises(TypeError, match=r"output must be real, got dtype torch.complex64"):
        merger.add(1, torch.zeros(2, 4, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match="output must be a tensor, got ndarray"):
        merger.add(1, np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="tile index must be in"):
        merger.add(9, torch.zeros(2, 4, 4))
    with pytest.raises(TypeError, match="tile must be a Tile or an int index, got str"):
        merger.add("1", torch.zeros(2, 4, 4))  # type: ignore[arg-type]
    other = TileGrid((12, 12), TileGeometry(6, 4))
    with pytest.raises(ValueError, match="tile must be a tile of the merger's grid"):
        merger.add(other[5], torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"output must have shape \(C, \*\(4, 4\)\)"):
        TileMerger(grid, output="labels").add(0, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="output must be 'logits', 'probabilities' or 'labels'"):
        TileMerger(grid, output="argmax")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="grid must be a TileGrid, got TileGeometry"):
        TileMerger(TileGeometry(6, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"region must have 2 \(start, stop\) pairs inside"):
        TileMerger(grid, region=((0, 11), (0, 10)))


def test_constructor_arguments_are_stored_as_given():
    grid = TileGrid((10, 10), TileGeometry(6, 4, step=2))
    weights = torch.ones(4, 4)
    merger = TileMerger(grid, blend=weights, output="labels", region=[(0, 5), (2, 9)])
    assert merger.grid is grid and merger.blend is weights and merger.output == "labels"
    assert merger.region == [(0, 5), (2, 9)] and merger.out is None and merger.device is None


def test_tiles_of_another_dtype_are_refused_not_cast():
    # a uint8 first tile must not turn 0.7 into 0 in the result
    grid = TileGrid((10, 10), TileGeometry(6, 4))
    merger = TileMerger(grid)
    merger.add(0, torch.ones(1, 4, 4, dtype=torch.uint8))
    with pytest.raises(
        ValueError, match=r"dtype torch.uint8 of the first tile, got .* torch.float32"
    ):
        merger.add(1, torch.full((1, 4, 4), 0.7))


@given(
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    blend=st.sampled_from(["gaussian", "hann"]),
    seed=st.integers(0, 100),
)
def test_blending_in_place_equals_holding_the_parts_bit_for_bit(size, blend, seed):
    """Without out= the weighted outputs are summed in the result; with it, per window."""
    grid = TileGrid(size, TileGeometry(12, 10, step=6))
    outputs = tile_outputs(grid, channels=2, seed=seed)
    order = torch.randperm(len(grid), generator=torch.Generator().manual_seed(seed)).tolist()
    in_place = merge(grid, outputs, order=order, blend=blend)
    held = merge(grid, outputs, order=order, blend=blend, out=torch.empty(2, *size))
    assert torch.equal(in_place, held)
    probabilities = merge(grid, outputs, order=order, blend=blend, output="probabilities")
    held = merge(
        grid, outputs, order=order, blend=blend, output="probabilities", out=torch.empty(2, *size)
    )
    assert torch.equal(probabilities, held)
    # per window, whose SIMD tails round apart from the whole image's
    torch.testing.assert_close(probabilities, torch.softmax(in_place, dim=0))
    labels = merge(grid, outputs, order=order, blend=blend, output="labels")
    assert torch.equal(labels, in_place.max(dim=0).indices.byte())


@pytest.mark.parametrize("blend", ["crop", "gaussian"])
@pytest.mark.parametrize("output", ["logits", "labels"])
def test_the_plan_keeps_a_bounded_number_of_positions(monkeypatch, blend, output):
    """A long strip: the per-axis plan forgets positions past its bound and works them
    out again, with the same result."""
    import unet_transforms.merging as merging_module

    grid = TileGrid((6, 301), TileGeometry(9, 7, step=5))  # 2 x 61 tiles
    outputs = tile_outputs(grid, channels=2)
    order = torch.randperm(len(grid), generator=torch.Generator().manual_seed(1)).tolist()
    expected = merge(grid, outputs, order=order, blend=blend, output=output)
    monkeypatch.setattr(merging_module, "_MAX_CACHED", 3)
    merger = TileMerger(grid, blend=blend, output=output)
    for i in order:
        merger.add(i, outputs[i])
        assert all(len(a._tiles) <= 3 and len(a._keys) <= 3 for a in merger._axes)
    assert torch.equal(merger.result(), expected)


@given(
    channels=st.integers(2, 6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int32, torch.uint8, torch.bool]),
    nan=st.booleans(),
    data=st.data(),
)
def test_labels_are_argmax_with_its_ties_and_nans(channels, dtype, nan, data):
    """The channel argmax of output="labels" is torch.argmax(0): ties go to the first
    channel, a NaN is the largest (the first NaN wins), for every dtype a network returns."""
    from unet_transforms.merging import _argmax_channels

    shape = (channels, data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)))
    # few distinct values, so that ties are common
    values = torch.tensor(
        data.draw(
            st.lists(st.integers(0, 3), min_size=math.prod(shape), max_size=math.prod(shape))
        )
    ).reshape(shape)
    if dtype.is_floating_point:
        values = values.to(dtype) - 1.5
        if nan:
            mask = torch.tensor(
                data.draw(
                    st.lists(st.booleans(), min_size=values.numel(), max_size=values.numel())
                )
            ).reshape(shape)
            values[mask] = float("nan")
    else:
        values = values.to(dtype)
    expected = (values.to(torch.uint8) if dtype == torch.bool else values).argmax(0)
    got = _argmax_channels(values, torch.int16)
    assert got.dtype == torch.int16
    assert torch.equal(got, expected.to(torch.int16))


def test_labels_do_not_depend_on_the_default_dtype():
    """Channel indices are counted in float32 whatever torch's default dtype is
    (bfloat16 holds integers exactly only up to 256)."""
    from unet_transforms.merging import _argmax_channels

    values = torch.zeros(300, 2, 2)
    values[299, 0, 0] = values[258, 1, 1] = 1.0
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        labels = _argmax_channels(values, torch.int16)
    finally:
        torch.set_default_dtype(previous)
    assert labels.tolist() == [[299, 0], [0, 258]]


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32])
def test_labels_of_wide_unsigned_outputs(dtype):
    grid = TileGrid((6, 5), TileGeometry(8, 8, step=4))
    merger = TileMerger(grid, output="labels")
    outputs = []
    for tile in grid:
        out = torch.randint(0, 1000, (3, 8, 8)).to(dtype)
        outputs.append(out)
        merger.add(tile, out)
    reference = TileMerger(grid, output="labels")
    for tile, out in zip(grid, outputs):
        reference.add(tile, out.to(torch.int64))
    assert torch.equal(merger.result(), reference.result())


def test_an_out_whose_elements_share_memory_is_refused_before_any_tile():
    grid = TileGrid((6, 5), TileGeometry(8, 8, step=4))
    for out in (torch.zeros(2, 1, 1).expand(2, 6, 5), torch.zeros(2, 6, 1).expand(2, 6, 5)):
        with pytest.raises(ValueError, match="out must not have elements that share memory"):
            TileMerger(grid, out=out)
    TileMerger(grid, out=torch.zeros(1, 6, 5).expand(1, 6, 5))  # size-1 axes may be anything


def _owner_map(grid):
    owner = torch.full(grid.image_size, -1.0)
    for tile in grid:
        window = tuple(slice(max(a, 0), max(b, 0)) for a, b in tile.keep_box)
        owner[window] = float(tile.index)
    return owner


def test_crop_merge_takes_each_pixel_from_its_keep_window_not_the_last_output():
    # stitching that writes a tile's whole output window instead of its keep
    # window. Identity tiles (grid.extract) agree on the overlaps and cannot see it.
    grid = TileGrid((13, 11), TileGeometry(8, 6, step=3))
    owner = _owner_map(grid)
    assert (owner >= 0).all()
    for order in (list(range(len(grid))), list(reversed(range(len(grid))))):
        merger = TileMerger(grid)
        for i in order:
            merger.add(i, torch.full((1, 6, 6), float(i)))
        assert torch.equal(merger.result()[0], owner)


def test_one_channel_labels_threshold_strictly_above_one_half():
    # ``sigmoid > 0.5`` (documented) vs ``>= 0.5``: a logit of 0 is background.
    grid = TileGrid((7, 5), TileGeometry(6, 4, step=3))
    for blend in ("crop", "gaussian"):
        merger = TileMerger(grid, output="labels", blend=blend)
        for i in merger.tile_indices():
            merger.add(i, torch.zeros(1, 4, 4))
        labels = merger.result()
        assert labels.dtype == torch.uint8 and not labels.any()
