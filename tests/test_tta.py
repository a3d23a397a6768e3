"""Test-time augmentation in tiled inference: per-tile flips/rotations, averaged logits.

The oracle is whole-image TTA: transform the whole mirror-extrapolated image, one
forward pass, transform back, average. With a 2**depth-aligned U-Net geometry per-tile
TTA equals it to float tolerance (the pooling phase survives a flip, see
docs/inference.md).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unet_transforms import TileGeometry, TileGrid, mirror_pad, predict_tiled
from unet_transforms._runner import tta_variants
from unet_transforms.dask import predict_dask
from unet_transforms.models import UNet

from common import sizes

FLIPS_2D = [((), 0), ((-1,), 0), ((-2,), 0), ((-2, -1), 0)]
D4 = [(f, k) for f in ((), (-1,)) for k in range(4)]


def whole_image_tta(model, image, grid, variants, mode="reflect"):
    """Mean over ``variants`` of one forward over the transformed canvas, cropped."""
    canvas = mirror_pad(image, grid.padding, mode=mode)
    outs = []
    with torch.no_grad():
        for flips, k in variants:
            x = torch.rot90(canvas.flip(flips), k, (-2, -1)) if k else canvas.flip(flips)
            y = model(x[None])[0]
            y = torch.rot90(y, -k, (-2, -1)) if k else y
            outs.append(y.flip(flips))
    mean = sum(outs) / len(outs)
    margin = grid.geometry.margin
    crop = tuple(
        slice(before - m, before - m + n)
        for (before, _), m, n in zip(grid.padding, margin, grid.image_size, strict=True)
    )
    return mean[(slice(None), *crop)]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(1, 3, depth=2, base_channels=4).eval()


@pytest.mark.parametrize("tta", ["flips", "d4"])
@pytest.mark.parametrize("size", [(37, 53), (64, 64)])
def test_per_tile_tta_equals_whole_image_tta_for_aligned_unet(unet, tta, size):
    geometry = unet.geometry(input_size=60)  # step 20, a multiple of 2**depth = 4
    torch.manual_seed(1)
    image = torch.rand(1, *size)
    grid = TileGrid(size, geometry)
    assert len(grid) > 1
    expected = whole_image_tta(unet, image, grid, FLIPS_2D if tta == "flips" else D4)
    got = predict_tiled(unet, image, geometry, tta=tta)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    plain = predict_tiled(unet, image, geometry)
    assert (got - plain).abs().max() > 1e-3  # the augmentation changes the result


@settings(max_examples=15)
@given(size=sizes(2, max_size=30), mode=st.sampled_from(["reflect", "symmetric"]))
def test_flips_equal_whole_image_flips_for_valid_convolutions(size, mode):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 3, kernel_size=5).eval()
    image = torch.rand(2, *size)
    geometry = TileGeometry(14, 10)
    got = predict_tiled(net, image, geometry, mode=mode, tta="flips")
    expected = whole_image_tta(net, image, TileGrid(size, geometry), FLIPS_2D, mode)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_flips_3d_average_all_eight_flips():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, kernel_size=3).eval()
    image = torch.rand(1, 9, 11, 7)
    geometry = TileGeometry((8, 8, 8), (6, 6, 6))
    grid = TileGrid(image.shape[1:], geometry)
    canvas = mirror_pad(image, grid.padding)
    axes = [tuple(a - 3 for a in range(3) if m >> a & 1) for m in range(8)]
    assert len(set(axes)) == 8
    with torch.no_grad():
        outs = [net(canvas.flip(f)[None])[0].flip(f) for f in axes]
    before = [b - 1 for b, _ in grid.padding]
    crop = tuple(slice(b, b + n) for b, n in zip(before, image.shape[1:], strict=True))
    expected = (sum(outs) / 8)[(slice(None), *crop)]
    got = predict_tiled(net, image, geometry, tta="flips")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_d4_same_padding_output_is_restored_before_the_centre_crop():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, kernel_size=3, padding=1).eval()  # output = input size
    image = torch.rand(1, 23, 30)
    geometry = TileGeometry(16, 12)  # the centre 12 of 16 never sees the zero padding
    grid = TileGrid(image.shape[1:], geometry)
    shifted = type(
        "Valid", (torch.nn.Module,), {"forward": lambda self, x: net(x)[..., 2:-2, 2:-2]}
    )()
    expected = predict_tiled(shifted, image, geometry, tta="d4")
    got = predict_tiled(net, image, geometry, tta="d4")
    torch.testing.assert_close(got, expected)
    oracle = whole_image_tta(
        lambda x: torch.nn.functional.conv2d(x, net.weight, net.bias)[..., 1:-1, 1:-1],
        image,
        grid,
        D4,
    )
    torch.testing.assert_close(got, oracle, atol=1e-5, rtol=1e-5)


def test_post_processing_follows_the_averaged_logits(unet):
    torch.manual_seed(2)
    image = torch.rand(1, 45, 38)
    geometry = unet.geometry(input_size=60)
    logits = predict_tiled(unet, image, geometry, tta="flips")
    probabilities = predict_tiled(unet, image, geometry, tta="flips", output="probabilities")
    labels = predict_tiled(unet, image, geometry, tta="flips", output="labels")
    torch.testing.assert_close(probabilities, logits.softmax(0))
    assert torch.equal(labels, logits.argmax(0).byte())


class Recorder(torch.nn.Module):
    """A valid 5x5 convolution that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 5)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(int(x.shape[0]))
        return self.conv(x)


class CountingArray:
    """A read-only array-like that counts its reads."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype = data, data.shape, data.dtype
        self.reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return self.data[index]


@pytest.mark.parametrize("batch_size", [1, 3, 4, 8])
def test_batch_size_counts_forwards_and_each_tile_is_read_once(batch_size):
    net = Recorder().eval()
    data = np.random.default_rng(0).random((1, 30, 20), dtype=np.float32)
    geometry = TileGeometry(14, 10)
    tiles = len(TileGrid((30, 20), geometry))
    array = CountingArray(data)
    got = predict_tiled(net, array, geometry, tta="flips", batch_size=batch_size)
    forwards = 4 * tiles
    assert sum(net.calls) == forwards
    assert net.calls[:-1] == [batch_size] * (len(net.calls) - 1)
    assert array.reads >= tiles
    reads = array.reads
    array.reads = 0
    predict_tiled(net, array, geometry, batch_size=batch_size)
    assert reads == array.reads  # no tile is read again for its other variants
    reference = predict_tiled(net, data, geometry, tta="flips", batch_size=1)
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("tta", ["flips", "d4"])
@pytest.mark.parametrize("output", ["logits", "labels"])
def test_predict_dask_equals_predict_tiled_bitwise_for_crop(unet, tta, output):
    rng = np.random.default_rng(3)
    image = rng.random((1, 70, 50), dtype=np.float32)
    geometry = unet.geometry(input_size=60)
    lazy = predict_dask(
        unet, da.from_array(image, chunks=(1, 30, 30)), geometry, tta=tta, output=output
    )
    assert lazy.numblocks[-2:] != (1, 1)
    expected = predict_tiled(unet, image, geometry, tta=tta, output=output)
    assert torch.equal(torch.from_numpy(lazy.compute(scheduler="sync")), expected)


def test_predict_dask_equals_predict_tiled_with_blending():
    net = Recorder().eval()
    image = np.random.default_rng(4).random((1, 41, 33), dtype=np.float32)
    geometry = TileGeometry(14, 10, step=6)
    lazy = predict_dask(
        net, da.from_array(image, chunks=(1, 20, 20)), geometry, tta="d4", blend="gaussian"
    )
    expected = predict_tiled(net, image, geometry, tta="d4", blend="gaussian")
    torch.testing.assert_close(torch.from_numpy(lazy.compute(scheduler="sync")), expected)


def test_image_is_not_modified():
    net = Recorder().eval()
    image = torch.rand(1, 25, 17)
    before = image.clone()
    predict_tiled(net, image, TileGeometry(14, 10), tta="d4", batch_size=3)
    assert torch.equal(image, before)


@pytest.mark.parametrize("tta", ["rot90", "", 1, True, ("flips",)])
def test_unknown_tta_is_refused(tta):
    net = Recorder().eval()
    with pytest.raises(ValueError, match=r"tta must be None, 'flips' or 'd4', got"):
        predict_tiled(net, torch.rand(1, 20, 20), TileGeometry(14, 10), tta=tta)
    with pytest.raises(ValueError, match=r"tta must be None, 'flips' or 'd4', got"):
        predict_dask(net, np.zeros((1, 20, 20), np.float32), TileGeometry(14, 10), tta=tta)


@pytest.mark.parametrize(
    "geometry",
    [
        TileGeometry((14, 18), (10, 14)),
        TileGeometry((14, 14), (10, 12), step=(10, 10)),
        TileGeometry((8, 8, 8), (6, 6, 6)),
    ],
)
def test_d4_needs_2d_square_tiles(geometry):
    net = Recorder().eval()
    image = torch.rand(1, *(20,) * geometry.ndim)
    with pytest.raises(ValueError, match=r"tta='d4' needs 2-D square tiles") as info:
        predict_tiled(net, image, geometry, tta="d4")
    assert str(geometry.input_size) in str(info.value)
    assert str(geometry.output_size) in str(info.value)
    with pytest.raises(ValueError, match=r"tta='d4' needs 2-D square tiles"):
        predict_dask(net, image.numpy(), geometry, tta="d4")


def test_flips_work_for_3d_geometry_where_d4_is_refused():
    assert len(tta_variants("flips", TileGeometry((8, 8, 8), (6, 6, 6)))) == 8
    assert tta_variants(None, TileGeometry((8, 8, 8), (6, 6, 6))) == ()


def test_integer_outputs_cannot_be_averaged():
    class Labels(torch.nn.Module):
        def forward(self, x):
            return (x[:, :, 2:-2, 2:-2] > 0.5).long()

    image = torch.rand(1, 20, 20)
    assert predict_tiled(Labels(), image, TileGeometry(14, 10)).dtype == torch.int64
    with pytest.raises(TypeError, match=r"tta averages the model's outputs.*int64"):
        predict_tiled(Labels(), image, TileGeometry(14, 10), tta="flips")


def test_float64_outputs_keep_their_dtype():
    net = Recorder().eval().double()
    image = torch.rand(1, 20, 20, dtype=torch.float64)
    got = predict_tiled(net, image, TileGeometry(14, 10), tta="flips")
    assert got.dtype == torch.float64
    grid = TileGrid((20, 20), TileGeometry(14, 10))
    torch.testing.assert_close(got, whole_image_tta(net, image, grid, FLIPS_2D))


@pytest.mark.parametrize("n", [8, 9, 10, 11])
def test_pooling_phase_survives_a_flip_only_for_even_lengths(n):
    # why per-tile flips are exact: every valid U-Net size pools even lengths only
    x = torch.rand(1, 1, 1, n)
    pool = torch.nn.MaxPool2d((1, 2))
    same = torch.equal(pool(x.flip(-1)).flip(-1), pool(x))
    assert same == (n % 2 == 0)
