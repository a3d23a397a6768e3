"""predict_tiled: equals a whole-image pass, for any size, source and batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import unet_transforms as ut
from unet_transforms import TileGeometry, TileGrid, mirror_pad, predict_tiled

from common import make_tensor


class ValidConvs(torch.nn.Module):
    """A small valid-convolution network: loses 3 px per side, no pooling."""

    def __init__(self, ndim: int = 2, in_channels: int = 2, out_channels: int = 3):
        super().__init__()
        conv = torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            conv(in_channels, 4, 3), torch.nn.ReLU(), conv(4, out_channels, 5)
        )

    def forward(self, x):
        return self.body(x)


def paste_keep_window(result, tile, tile_output, grid):
    """Oracle for crop stitching: the in-image part of the keep window, by index arithmetic."""
    g = grid.geometry
    size = tile_output.shape[-g.ndim :]
    # where the tile output starts in image coordinates
    starts = [
        box[0] - (m if n == i else 0)
        for box, m, n, i in zip(tile.output_box, g.margin, size, g.input_size)
    ]
    dst, src = [], []
    for (a, b), n, s0 in zip(tile.keep_box, grid.image_size, starts):
        lo, hi = max(a, 0), min(b, n)
        dst.append(slice(lo, hi))
        src.append(slice(lo - s0, hi - s0))
    result[(Ellipsis, *dst)] = tile_output[(Ellipsis, *src)]


def whole_image_reference(model, image, grid, mode="reflect"):
    """One forward pass over the mirror-extrapolated canvas, cropped to the image."""
    canvas = mirror_pad(image, grid.padding, mode)
    with torch.no_grad():
        out = model(canvas[None].float())[0]
    offset = [b - m for (b, _), m in zip(grid.padding, grid.geometry.margin)]
    return out[(Ellipsis, *[slice(o, o + n) for o, n in zip(offset, grid.image_size)])]


@given(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    st.integers(1, 10),
    st.sampled_from(["reflect", "symmetric"]),
    st.sampled_from(["center", "start"]),
)
def test_equals_one_pass_over_the_canvas_2d(size, step, mode, align):
    model = ValidConvs().eval()
    geometry = TileGeometry(16, 10, step=step)
    image = make_tensor((2, *size))
    out = predict_tiled(model, image, geometry, mode=mode, align=align, batch_size=3)
    grid = TileGrid(size, geometry, align=align)
    assert out.shape == (3, *size)
    torch.testing.assert_close(
        out, whole_image_reference(model, image, grid, mode), rtol=1e-5, atol=1e-5
    )


@given(st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)))
def test_equals_one_pass_over_the_canvas_3d(size):
    model = ValidConvs(ndim=3).eval()
    geometry = TileGeometry((12, 10, 14), (6, 4, 8), step=(5, 4, 3))
    image = make_tensor((2, *size))
    out = predict_tiled(model, image, geometry)
    grid = TileGrid(size, geometry)
    torch.testing.assert_close(
        out, whole_image_reference(model, image, grid), rtol=1e-5, atol=1e-5
    )


def test_sources_and_batch_sizes_agree(tmp_path):
    model = ValidConvs().eval()
    geometry = TileGeometry(30, 24, step=20)
    array = np.random.default_rng(0).random((2, 57, 83), dtype=np.float32)
    memmap = np.memmap(tmp_path / "x.raw", dtype=np.float32, mode="w+", shape=array.shape)
    memmap[:] = array
    memmap.flush()
    readonly = np.memmap(tmp_path / "x.raw", dtype=np.float32, mode="r", shape=array.shape)
    reference = predict_tiled(model, torch.from_numpy(array), geometry, batch_size=1)
    for source in (array, readonly):
        assert torch.equal(predict_tiled(model, source, geometry, batch_size=1), reference)
    torch.testing.assert_close(
        predict_tiled(model, torch.from_numpy(array), geometry, batch_size=7), reference
    )
    assert not reference.is_inference()
    assert reference.dtype == torch.float32


def test_uint8_image_is_fed_as_float():
    model = ValidConvs(in_channels=1).eval()
    image = torch.randint(0, 255, (1, 40, 30), dtype=torch.uint8)
    out = predict_tiled(model, image, TileGeometry(20, 14))
    torch.testing.assert_close(out, predict_tiled(model, image.float(), TileGeometry(20, 14)))


def test_batched_tensor():
    model = ValidConvs().eval()
    images = make_tensor((3, 2, 25, 31))
    out = predict_tiled(model, images, TileGeometry(18, 12))
    assert out.shape == (3, 3, 25, 31)
    for b in range(3):
        torch.testing.assert_close(out[b], predict_tiled(model, images[b], TileGeometry(18, 12)))


def test_same_padding_model_is_centre_cropped():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    geometry = TileGeometry(24, 16)  # discard 4 border predictions per side
    image = make_tensor((1, 50, 37))
    out = predict_tiled(model, image, geometry)
    grid = TileGrid((50, 37), geometry)
    expected = torch.full((2, 50, 37), float("nan"))
    with torch.no_grad():
        for tile in grid:
            whole = model(grid.extract(image, tile.index)[None])[0]  # input-sized
            paste_keep_window(expected, tile, whole, grid)
    assert torch.equal(out, expected)
    # away from tile borders, a 3x3 same conv equals the whole-image result
    with torch.no_grad():
        whole = model(mirror_pad(image, [(1, 1), (1, 1)])[None])[0, :, 1:-1, 1:-1]
    torch.testing.assert_close(out, whole)


def test_model_mode_is_left_alone_and_progress_runs(capsys):
    model = ValidConvs().train()
    out = predict_tiled(model, make_tensor((2, 20, 20)), TileGeometry(16, 10), progress=True)
    assert model.training
    assert out.shape == (3, 20, 20)
    assert "tile" in capsys.readouterr().err


def test_amp_on_cpu_gives_float32():
    model = ValidConvs().eval()
    image = make_tensor((2, 30, 30))
    out = predict_tiled(model, image, TileGeometry(16, 10), amp=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out, predict_tiled(model, image, TileGeometry(16, 10)), atol=0.05, rtol=0.05
    )


def test_errors():
    model = ValidConvs().eval()
    with pytest.raises(
        ValueError,
        match=r"model output must have shape .*\(1, C_out, \*\(14, 14\)\).*got \(1, 3, 10, 10\).*TileGeometry.from_model",
    ):
        predict_tiled(model, make_tensor((2, 30, 30)), TileGeometry(16, 14))
    with pytest.raises(
        ValueError,
        match=r"image must have shape \(C, H, W\) or \(B, C, H, W\) for a 2-D geometry, got \(30, 30\)",
    ):
        predict_tiled(model, make_tensor((30, 30)), TileGeometry(16, 10))
    with pytest.raises(
        ValueError,
        match=r"image must have shape \(C, D, H, W\) for a 3-D geometry, got \(30, 30\)",
    ):
        predict_tiled(model, np.zeros((30, 30)), TileGeometry((16, 16, 16), (10, 10, 10)))
    with pytest.raises(ValueError, match=r"image must not be empty, got shape \(2, 0, 5\)"):
        predict_tiled(model, make_tensor((2, 0, 5)), TileGeometry(16, 10))
    with pytest.raises(ValueError, match="batch_size must be a positive int or None, got 0"):
        predict_tiled(model, make_tensor((2, 30, 30)), TileGeometry(16, 10), batch_size=0)
    with pytest.raises(TypeError, match="image must be a tensor, a numpy array or an array-like"):
        predict_tiled(model, [[1.0]], TileGeometry(16, 10))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got function"):
        predict_tiled(lambda x: x, make_tensor((2, 30, 30)), TileGeometry(16, 10))
    with pytest.raises(TypeError, match="geometry must be a TileGeometry, got int"):
        predict_tiled(model, make_tensor((2, 30, 30)), 16)
    with pytest.raises(ValueError, match="mode must be"):
        predict_tiled(model, make_tensor((2, 30, 30)), TileGeometry(16, 10), mode="wrap")


def test_channels_must_match_a_declared_in_channels():
    from unet_transforms.models import UNet

    net = UNet(3, 2, depth=1, base_channels=1).eval()
    with pytest.raises(ValueError, match="image has 1 channels but the model takes in_channels=3"):
        predict_tiled(net, make_tensor((1, 30, 30)), net.geometry(input_size=18))
    with pytest.raises(ValueError, match="image has 2 channels"):
        predict_tiled(net, make_tensor((4, 2, 30, 30)), net.geometry(input_size=18))


def test_numpy_batch_size():
    model, image, geometry = ValidConvs().eval(), make_tensor((2, 30, 30)), TileGeometry(16, 10)
    expected = predict_tiled(model, image, geometry, batch_size=3)
    assert torch.equal(predict_tiled(model, image, geometry, batch_size=np.int64(3)), expected)


def test_device_must_be_a_device_and_the_models():
    model, image, geometry = ValidConvs().eval(), make_tensor((2, 30, 30)), TileGeometry(16, 10)
    with pytest.raises(ValueError, match=r"device must name a torch device .* got 'foo'"):
        predict_tiled(model, image, geometry, device="foo")
    with pytest.raises(TypeError, match=r"device must be a torch\.device, a string .* got list"):
        predict_tiled(model, image, geometry, device=["cpu"])
    # the model is never moved or copied behind the caller's back
    with pytest.raises(
        ValueError,
        match=r"device is 'meta' but the model's parameters are on 'cpu'.*model\.to\('meta'\)",
    ):
        predict_tiled(model, image, geometry, device="meta")
    assert next(model.parameters()).device.type == "cpu"
    expected = predict_tiled(model, image, geometry)
    assert torch.equal(predict_tiled(model, image, geometry, device="cpu"), expected)
    assert torch.equal(predict_tiled(model, image, geometry, device=torch.device("cpu")), expected)


# ---------------------------------------------------------------------- issue 11 / 13
def test_batched_result_is_one_preallocated_buffer(monkeypatch):
    # B per-sample results stacked at the end cost twice the result: allocate it once
    import unet_transforms.inference as inference

    allocations = []
    real = inference.empty_like_shape

    def counting(shape, dtype, device, zeros):
        allocations.append(tuple(shape))
        return real(shape, dtype, device, zeros)

    monkeypatch.setattr(inference, "empty_like_shape", counting)
    model = ValidConvs().eval()
    images = make_tensor((3, 2, 25, 31))
    out = predict_tiled(model, images, TileGeometry(18, 12), output="labels")
    assert allocations == [(3, 25, 31)]
    for b in range(3):
        expected = predict_tiled(model, images[b], TileGeometry(18, 12))
        assert torch.equal(out[b], expected.argmax(0).byte())
    # blended logits are summed in place into the one result, allocated as zeros
    blended = TileGeometry(18, 12, step=8)
    out = predict_tiled(model, images, blended, blend="gaussian")
    assert allocations[1:] == [(3, 3, 25, 31)]
    for b in range(3):
        assert torch.equal(out[b], predict_tiled(model, images[b], blended, blend="gaussian"))


@pytest.mark.parametrize("kind", ["tensor", "memmap", "zarr"])
def test_out_is_written_tile_by_tile_and_returned(kind, tmp_path):
    import zarr

    model = ValidConvs().eval()
    image = make_tensor((2, 2, 29, 22))
    geometry = TileGeometry(18, 12, step=8)
    expected = predict_tiled(model, image, geometry)
    if kind == "tensor":
        out = torch.zeros(3, 3, 29, 22, dtype=torch.float64)
    elif kind == "memmap":
        out = np.lib.format.open_memmap(tmp_path / "o.npy", "w+", np.float32, (2, 3, 29, 22))
    else:
        out = zarr.create_array(store={}, shape=(2, 3, 29, 22), chunks=(1, 3, 8, 8), dtype="f4")
    if kind == "tensor":
        with pytest.raises(
            ValueError, match=r"out must have the batch size 2 .* \(3, 3, 29, 22\)"
        ):
            predict_tiled(model, image, geometry, out=out)
        out = out[:2]
    assert predict_tiled(model, image, geometry, out=out) is out
    np.testing.assert_allclose(np.asarray(out[...]), expected.numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("blend", ["crop", "gaussian", "hann"])
def test_labels_and_probabilities_follow_the_logits(blend):
    model = ValidConvs().eval()
    image = make_tensor((2, 41, 23))
    geometry = TileGeometry(20, 14, step=9)
    logits = predict_tiled(model, image, geometry, blend=blend)
    labels = predict_tiled(model, image, geometry, blend=blend, output="labels")
    assert labels.dtype == torch.uint8 and torch.equal(labels, logits.argmax(0).byte())
    probabilities = predict_tiled(model, image, geometry, blend=blend, output="probabilities")
    torch.testing.assert_close(probabilities, torch.softmax(logits, 0))


def test_blend_averages_overlapping_tiles_of_a_same_padding_net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 5, padding=2)
    ).eval()
    image = make_tensor((1, 60, 45))
    geometry = TileGeometry(24, 24, step=18)  # the (512, 512, step=384), small
    grid = TileGrid((60, 45), geometry)
    weights = torch.from_numpy(np.multiply.outer(np.hanning(24), np.hanning(24)))
    total, norm = (
        torch.zeros(2, 60, 45, dtype=torch.float64),
        torch.zeros(60, 45, dtype=torch.float64),
    )
    with torch.no_grad():
        for tile in grid:
            y = model(grid.extract(image, tile.index)[None])[0].double()
            dst, src = [], []
            for (a, b), n in zip(tile.output_box, grid.image_size):
                dst.append(slice(max(a, 0), min(b, n)))
                src.append(slice(max(a, 0) - a, min(b, n) - a))
            total[(Ellipsis, *dst)] += (weights * y)[(Ellipsis, *src)]
            norm[tuple(dst)] += weights[tuple(src)]
    out = predict_tiled(model, image, geometry, blend="hann")
    torch.testing.assert_close(out.double(), total / norm, rtol=1e-5, atol=1e-5)
    # and the seams of crop stitching are smoothed: blended differs from crop
    assert not torch.allclose(out, predict_tiled(model, image, geometry))


def test_refused_inputs():
    model = ValidConvs().eval()
    geometry = TileGeometry(16, 10)
    with pytest.raises(TypeError, match=r"image must be real, got dtype torch.complex64"):
        predict_tiled(model, make_tensor((2, 20, 20)).to(torch.complex64), geometry)
    with pytest.raises(TypeError, match=r"image must be real, got dtype complex128"):
        predict_tiled(model, np.zeros((2, 20, 20), np.complex128), geometry)
    with pytest.raises(ValueError, match="image is on the meta device"):
        predict_tiled(model, torch.zeros(2, 20, 20, device="meta"), geometry)
    with pytest.raises(ValueError, match="model has parameters on the meta device"):
        predict_tiled(ValidConvs().to("meta"), make_tensor((2, 20, 20)), geometry)
    with pytest.raises(TypeError, match="amp must be True or False, got 'no'"):
        predict_tiled(model, make_tensor((2, 20, 20)), geometry, amp="no")
    with pytest.raises(TypeError, match="progress must be True or False, got 1"):
        predict_tiled(model, make_tensor((2, 20, 20)), geometry, progress=1)
    with pytest.raises(ValueError, match="output must be 'logits', 'probabilities' or 'labels'"):
        predict_tiled(model, make_tensor((2, 20, 20)), geometry, output="mask")
    with pytest.raises(ValueError, match="blend must be 'crop', 'gaussian', 'hann'"):
        predict_tiled(model, make_tensor((2, 20, 20)), geometry, blend="max")
    with pytest.raises(TypeError, match="out has dtype uint8, which cannot hold"):
        predict_tiled(
            model, make_tensor((2, 20, 20)), geometry, out=np.zeros((3, 20, 20), np.uint8)
        )


@pytest.mark.parametrize(
    "options",
    [{}, {"blend": "gaussian"}, {"tta": "flips"}, {"output": "labels"}],
    ids=["crop", "gaussian", "tta", "labels"],
)
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_give_the_same_result(options, workers):
    from unet_transforms.models import UNet

    torch.manual_seed(0)
    net = UNet(1, 2, depth=1, base_channels=2).eval()
    geometry = (
        ut.TileGeometry(36, 20, step=16) if "blend" in options else net.geometry(input_size=36)
    )
    image = torch.rand(1, 50, 45)
    threads = torch.get_num_threads()
    expected = ut.predict_tiled(net, image, geometry, batch_size=2, **options)
    got = ut.predict_tiled(net, image, geometry, batch_size=2, workers=workers, **options)
    assert torch.equal(got, expected)  # one torch thread per worker, as the tests run
    assert torch.get_num_threads() == threads  # restored


def test_workers_errors():
    net = torch.nn.Conv2d(1, 2, 5)
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        ut.predict_tiled(net, torch.rand(1, 20, 20), ut.TileGeometry(12, 8), workers=0)

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("broken forward")

    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="broken forward"):
        ut.predict_tiled(Broken(), torch.rand(1, 30, 30), ut.TileGeometry(12, 8), workers=2)
    assert torch.get_num_threads() == threads


class ThreadRecording:
    """An array source (as a memmap or zarr array) that records which thread reads it."""

    def __init__(self, array: np.ndarray, fail_at: int | None = None) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.threads: list[int] = []
        self.fail_at = fail_at

    def __getitem__(self, index):
        import threading

        if self.fail_at is not None and len(self.threads) == self.fail_at:
            raise OSError("the disk went away")
        self.threads.append(threading.get_ident())
        return self.array[index]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("tta", [None, "flips"])
def test_array_sources_are_read_ahead_by_a_reader_thread(batch_size, tta):
    import threading

    net = ValidConvs(in_channels=1, out_channels=2).eval()
    image = make_tensor((1, 37, 29), seed=3)
    geometry = TileGeometry(14, 8)
    source = ThreadRecording(image.numpy())
    options = {"batch_size": batch_size, "tta": tta}
    got = predict_tiled(net, source, geometry, **options)
    assert torch.equal(got, predict_tiled(net, image, geometry, **options))
    reader = set(source.threads) - {threading.get_ident()}
    # without augmentation every window is read by the reader thread, ahead of its batch
    assert len(reader) == (1 if tta is None else 0)
    assert len(source.threads) >= len(TileGrid((37, 29), geometry))


def test_a_failed_read_ahead_raises_in_the_caller():
    net = ValidConvs(in_channels=1, out_channels=2).eval()
    source = ThreadRecording(make_tensor((1, 37, 29)).numpy(), fail_at=7)
    with pytest.raises(OSError, match="the disk went away"):
        predict_tiled(net, source, TileGeometry(14, 8), batch_size=2)


# ------------------------------------------------- reading a batch of input windows
@given(st.integers(1, 20), st.integers(1, 20), st.sampled_from(["reflect", "symmetric"]))
def test_read_windows_equals_extracting_each_window(h, w, mode):
    from torchvision import tv_tensors

    from unet_transforms._runner import read_windows

    grid = TileGrid((h, w), TileGeometry(9, 5, step=3))
    image = make_tensor((2, h, w))
    indices = list(range(len(grid)))[::-1]  # any order, inner and border windows
    expected = torch.stack([grid.extract(image, i, mode) for i in indices])
    for source in (image, tv_tensors.Image(image), image.numpy()):
        batch = read_windows(grid, source, indices, mode)
        assert type(batch) is torch.Tensor
        assert torch.equal(batch, expected)
    batch = read_windows(grid, image, indices, mode)
    before = image.clone()
    batch.add_(1)  # a batch of its own: the model may change its input in place
    assert torch.equal(image, before)
