"""predict_dask: a lazy prediction equal to predict_tiled, for any shape, chunking and scheduler."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import uuid
import weakref
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import unet_transforms.dask as dask_module
from unet_transforms import TileGeometry, TileGrid, predict_tiled
from unet_transforms.dask import _on_device, _ShippedModel, predict_dask
from unet_transforms.models import UNet

MODES = st.sampled_from(["reflect", "symmetric"])
ALIGNS = st.sampled_from(["center", "start"])


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


# Per-copy bookkeeping lives outside the modules, so it never travels with a pickled copy:
# each copy counts its own calls and gets its own mark.
_COPY_IDS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()
_FORWARD_CALLS: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()


class CountingConvs(ValidConvs):
    """Appends one line to ``path`` (with the process id) every time it is pickled."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    @property
    def forward_calls(self) -> int:
        return _FORWARD_CALLS.get(self, 0)

    def __getstate__(self):
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().__getstate__()

    def forward(self, x):
        calls = _FORWARD_CALLS[self] = self.forward_calls + 1
        copy_id = _COPY_IDS.setdefault(self, uuid.uuid4().hex)  # one mark per copy
        # Like a forward that caches something on the module: a worker that serialized
        # the live module for another worker meanwhile would fail and stall the graph.
        vars(self)[f"cached_{calls}"] = None
        with open(self.path + ".forward", "a") as f:
            f.write(f"{os.getpid()} {copy_id}\n")
        return super().forward(x)


def pickles(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def image(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 256, shape).astype(dtype)
    return rng.random(shape, dtype=dtype)


def assert_step_aligned(out, grid):
    """Every inner chunk boundary is a keep-window boundary: origin + k * step."""
    for axis, chunks in enumerate(out.chunks[1:]):
        bounds = np.cumsum(chunks)[:-1]
        step, origin = grid.geometry.step[axis], grid.origin[axis]
        assert all((b - origin) % step == 0 for b in bounds), (chunks, step, origin)
    assert out.chunks[0] == (out.shape[0],)


# ---------------------------------------------------------------------- exactness
@settings(deadline=None, max_examples=15)
@given(
    size=st.tuples(
        st.sampled_from([1, 2, 3, 5, 6, 12, 17, 18, 30]), st.sampled_from([1, 4, 6, 7, 11, 24])
    ),
    step=st.integers(1, 10),
    chunks=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    mode=MODES,
    align=ALIGNS,
)
def test_equals_predict_tiled_2d(size, step, chunks, mode, align):
    # sizes: 1, below the margin (3), multiples of the step, odd
    model = ValidConvs().eval()
    geometry = TileGeometry(16, 10, step=step)
    array = image((2, *size))
    out = predict_dask(
        model,
        da.from_array(array, chunks=(1, *chunks)),
        geometry,
        mode=mode,
        align=align,
    )
    assert out.shape == (3, *size)
    assert_step_aligned(out, TileGrid(size, geometry, align=align))
    expected = predict_tiled(model, array, geometry, mode=mode, align=align)
    assert torch.equal(torch.from_numpy(out.compute(scheduler="sync")), expected)


@settings(deadline=None, max_examples=15)
@given(
    size=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    step=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    chunks=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    mode=MODES,
    align=ALIGNS,
)
def test_equals_predict_tiled_3d(size, step, chunks, mode, align):
    model = ValidConvs(ndim=3, in_channels=1, out_channels=2).eval()
    geometry = TileGeometry(10, 4, step=step)
    array = image((1, *size), seed=1)
    out = predict_dask(
        model,
        da.from_array(array, chunks=(1, *chunks)),
        geometry,
        mode=mode,
        align=align,
    )
    assert_step_aligned(out, TileGrid(size, geometry, align=align))
    expected = predict_tiled(model, array, geometry, mode=mode, align=align)
    assert torch.equal(torch.from_numpy(out.compute(scheduler="sync")), expected)


@pytest.mark.parametrize("batch_size", [2, 4])
def test_larger_batches_are_close(batch_size):
    # Batches of several tiles may round differently from one tile at a time in the CPU
    # convolution kernels (predict_tiled's own batch_size does the same): not bitwise.
    model = ValidConvs().eval()
    array = image((2, 45, 38))
    geometry = TileGeometry(22, 16)
    out = predict_dask(
        model, da.from_array(array, chunks=(2, 20, 25)), geometry, batch_size=batch_size
    )
    expected = predict_tiled(model, array, geometry)
    np.testing.assert_allclose(
        out.compute(scheduler="threads"), expected.numpy(), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("source", ["numpy", "tensor", "bfloat16 tensor", "zarr", "memmap"])
def test_accepts_numpy_tensor_zarr_memmap(source, tmp_path):
    model = ValidConvs().eval()
    array = image((2, 70, 41), dtype=np.uint8)
    if source == "tensor":
        inpt = torch.from_numpy(array)
    elif source == "bfloat16 tensor":  # numpy has no bfloat16: read as float32
        inpt = torch.from_numpy(array).bfloat16()
    elif source == "zarr":
        inpt = zarr.create_array(store={}, shape=array.shape, chunks=(2, 32, 16), dtype="uint8")
        inpt[:] = array
    elif source == "memmap":
        inpt = np.lib.format.open_memmap(tmp_path / "a.npy", "w+", np.uint8, array.shape)
        inpt[:] = array
    else:
        inpt = array
    geometry = TileGeometry(16, 10, step=8)
    out = predict_dask(model, inpt, geometry)
    assert out.dtype == np.float32
    if source == "zarr":  # zarr chunks (32, 16) rounded to whole steps
        assert out.chunks[1:] == ((31, 32, 7), (13, 16, 12))
    expected = predict_tiled(model, array, geometry)
    assert torch.equal(torch.from_numpy(out.compute()), expected)


def test_same_padding_model():
    # A network whose output has the input's size: each tile's centre is kept.
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 5, padding=2).eval()
    array = image((1, 33, 20))
    geometry = TileGeometry(16, 8, step=4)
    out = predict_dask(model, da.from_array(array, chunks=(1, 9, 9)), geometry)
    expected = predict_tiled(model, array, geometry)
    assert torch.equal(torch.from_numpy(out.compute()), expected)


def test_meta_channels_skips_the_probe(tmp_path):
    model = CountingConvs(str(tmp_path / "count")).eval()
    array = da.from_array(image((2, 20, 20)), chunks=(2, 10, 10))
    geometry = TileGeometry(16, 10, step=5)
    lazy = predict_dask(model, array, geometry, meta_channels=3)
    assert model.forward_calls == 0
    assert (lazy.shape, lazy.dtype) == ((3, 20, 20), np.float32)
    predict_dask(model, array, geometry)
    assert model.forward_calls == 1  # the probe: one tile of zeros
    with pytest.raises(ValueError, match=r"model returned 3 channels .* planned for 4"):
        predict_dask(model, array, geometry, meta_channels=4).compute(scheduler="sync")


def test_model_is_under_exactly_one_key(tmp_path):
    counter = tmp_path / "pickles"
    model = CountingConvs(str(counter)).eval()
    array = da.from_array(image((2, 40, 40)), chunks=(2, 10, 10))
    out = predict_dask(model, array, TileGeometry(16, 10, step=5), meta_channels=3)
    graph = dict(out.__dask_graph__())
    holders = []
    for key, value in graph.items():
        before = len(pickles(counter))
        pickle.dumps(value)
        if len(pickles(counter)) > before:
            holders.append(key)
    assert out.npartitions == 16
    assert len(holders) == 1, holders


def test_probe_errors():
    array = da.zeros((2, 20, 20), chunks=(2, 10, 10))
    geometry = TileGeometry(16, 10)
    with pytest.raises(ValueError, match=r"model output must have shape \(1, C_out, \*\(10, 10\)"):
        predict_dask(torch.nn.Conv2d(2, 3, 3), array, geometry)

    class NotATensor(torch.nn.Module):
        def forward(self, x):
            return {"out": x}

    with pytest.raises(TypeError, match="model must return a tensor, got dict"):
        predict_dask(NotATensor(), array, geometry)

    class BFloat16(torch.nn.Module):
        def forward(self, x):
            return x[:, :, 3:-3, 3:-3].bfloat16()

    with pytest.raises(TypeError, match=r"output dtype torch\.bfloat16 has no numpy equivalent"):
        predict_dask(BFloat16(), array, geometry)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"geometry": (16, 10)}, TypeError, "geometry must be a TileGeometry, got tuple"),
        ({"mode": "wrap"}, ValueError, "mode must be 'reflect' or 'symmetric', got 'wrap'"),
        ({"align": "end"}, ValueError, "align must be 'center' or 'start', got 'end'"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int or None, got 0"),
        ({"batch_size": True}, ValueError, "batch_size must be a positive int or None, got True"),
        ({"meta_channels": 0}, ValueError, "meta_channels must be a positive int or None, got 0"),
        ({"model": "net"}, TypeError, "model must be a torch.nn.Module, .* got str"),
        ({"array": [[1, 2]]}, TypeError, "array must be a dask array, .* got list"),
        (
            {"array": da.zeros((20, 20))},
            ValueError,
            r"array must have shape \(C, H, W\) for a 2-D geometry, got \(20, 20\)",
        ),
        ({"array": da.zeros((1, 0, 5))}, ValueError, r"array must not be empty, got shape"),
        (
            {"array": np.zeros((23, 17), np.float32)},
            ValueError,
            r"array must have shape \(C, H, W\) for a 2-D geometry, got \(23, 17\)",
        ),
        ({"device": "foo"}, ValueError, "device must name a torch device .* got 'foo'"),
        (
            {"model": UNet(3, 2, depth=1, base_channels=1)},
            ValueError,
            "array has 2 channels but the model takes in_channels=3",
        ),
    ],
)
def test_errors(kwargs, error, match):
    args = {
        "model": ValidConvs(),
        "array": da.zeros((2, 20, 20)),
        "geometry": TileGeometry(16, 10),
    }
    args.update(kwargs)
    model, array, geometry = args.pop("model"), args.pop("array"), args.pop("geometry")
    with pytest.raises(error, match=match):
        predict_dask(model, array, geometry, **args)


def test_missing_dask_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"pip install 'unet-transforms\[dask\]'"):
        predict_dask(ValidConvs(), np.zeros((2, 8, 8)), TileGeometry(16, 10))


def test_importing_the_package_does_not_import_dask():
    code = (
        "import sys, unet_transforms, unet_transforms.dask; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'distributed', 'zarr')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_device_copy_is_made_once_and_leaves_the_model_alone():
    model = ValidConvs()
    same, device = _on_device(model, "cpu")
    assert same is model and device == torch.device("cpu")
    moved, device = _on_device(model, "meta")
    assert device == torch.device("meta")
    assert next(moved.parameters()).device.type == "meta"
    assert next(model.parameters()).device.type == "cpu"
    assert _on_device(model, "meta")[0] is moved
    array = image((2, 21, 13))
    geometry = TileGeometry(16, 10, step=4)
    out = predict_dask(model.eval(), array, geometry, device="cpu")
    assert torch.equal(torch.from_numpy(out.compute()), predict_tiled(model, array, geometry))


def test_the_model_travels_as_bytes_pickled_once(tmp_path):
    counter = tmp_path / "pickles"
    model = CountingConvs(str(counter)).eval()
    shipped = _ShippedModel(model)
    assert shipped.module is model  # a local scheduler runs the caller's module
    first, second = pickle.dumps(shipped), pickle.dumps(shipped)
    assert pickles(counter) == [str(os.getpid())]  # the module was pickled once
    remote = pickle.loads(first)
    assert remote.module is remote.module is not model  # unpickled once, on first use
    x = torch.rand(1, 2, 12, 12)
    torch.testing.assert_close(remote.module(x), model(x), rtol=0, atol=0)
    # A copy handed on passes the same bytes, not the module, which may be running
    # (and changing) meanwhile.
    vars(remote.module)["cached"] = torch.zeros(1)
    assert pickle.dumps(remote) == first == second
    assert pickles(counter) == [str(os.getpid())]
    # A process that gets the model again keeps its copy (a scheduler may drop a
    # dependency and fetch it later); another process unpickles the bytes afresh.
    assert pickle.loads(pickle.dumps(remote)) is remote
    dask_module._UNSHIPPED.clear()  # as in a process that has not seen the model
    assert "cached" not in vars(pickle.loads(pickle.dumps(remote)).module)
    assert dask.base.tokenize(shipped) == dask.base.tokenize(_ShippedModel(model))


def test_a_process_keeps_its_few_latest_models(monkeypatch):
    monkeypatch.setattr(dask_module, "_UNSHIPPED", type(dask_module._UNSHIPPED)())
    monkeypatch.setattr(dask_module, "_MAX_UNSHIPPED", 2)
    payloads = [pickle.dumps(_ShippedModel(torch.nn.Conv2d(1, 1, k))) for k in (1, 2, 3)]
    first = pickle.loads(payloads[0])
    assert pickle.loads(payloads[0]) is first
    assert pickle.loads(payloads[1]) is not first
    pickle.loads(payloads[0])  # used again: the most recent
    pickle.loads(payloads[2])  # the third model drops the least recently used, the second
    assert pickle.loads(payloads[0]) is first
    assert len(dask_module._UNSHIPPED) == 2


# ---------------------------------------------------------------------- distributed
# distributed warns when making its scratch folders takes over a second, which a busy
# machine can make it do; as an error it would stop the cluster from starting.
@pytest.mark.filterwarnings("ignore:Creating scratch directories is taking")
def test_distributed_ships_the_model_once_per_worker(tmp_path):
    from distributed import Client, LocalCluster

    counter = tmp_path / "pickles"
    model = CountingConvs(str(counter)).eval()
    array = image((2, 60, 50))
    geometry = TileGeometry(16, 10, step=5)
    lazy = predict_dask(model, da.from_array(array, chunks=(2, 10, 10)), geometry, meta_channels=3)
    blocks = lazy.npartitions
    expected = predict_tiled(model, array, geometry).numpy()
    with (
        LocalCluster(
            processes=True,
            n_workers=2,
            threads_per_worker=1,
            dashboard_address=":0",
            local_directory=str(tmp_path / "dask-scratch"),
        ) as cluster,
        Client(cluster) as client,
    ):
        before = pickles(counter)
        _COPY_IDS.pop(model, None)  # marked by predict_tiled above
        Path(str(counter) + ".forward").unlink(missing_ok=True)
        result = client.compute(lazy).result(timeout=120)
        shipped = pickles(counter)[len(before) :]
        # every worker process that ran blocks used one copy of the model for all of them
        calls = Path(str(counter) + ".forward").read_text().split("\n")
        copies: dict[str, set[str]] = {}
        for line in filter(None, calls):
            pid, copy_id = line.split()
            copies.setdefault(pid, set()).add(copy_id)
        assert str(os.getpid()) not in copies  # the blocks ran on the workers
        assert 1 <= len(copies) <= 2 and all(len(ids) == 1 for ids in copies.values()), copies
        assert len(calls) - 1 >= blocks  # at least one forward call per block
        # Pickled once, here, with the graph; a model inside every block's task would be
        # pickled once per block. The workers pass those bytes on, never the module.
        assert blocks == 30
        assert shipped == [str(os.getpid())], shipped
        np.testing.assert_array_equal(result, expected)

        # the cluster pattern: scatter the model, pass the future (the probe runs remotely)
        remote = client.scatter(model, broadcast=True)
        scattered = predict_dask(remote, array, geometry)
        assert scattered.shape == (3, 60, 50)
        np.testing.assert_array_equal(client.compute(scattered).result(timeout=120), expected)
    assert dask.config.get("scheduler", None) is None


# ---------------------------------------------------------------------- options
@settings(deadline=None, max_examples=12)
@given(
    size=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    step=st.integers(3, 8),  # overlapping outputs, as blending needs
    chunks=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    blend=st.sampled_from(["crop", "gaussian", "hann", "weights"]),
    output=st.sampled_from(["logits", "probabilities", "labels"]),
    amp=st.booleans(),
    align=ALIGNS,
)
def test_every_option_equals_predict_tiled(size, step, chunks, blend, output, amp, align):
    model = ValidConvs().eval()
    geometry = TileGeometry(16, 10, step=step)
    if blend == "weights":
        blend = torch.linspace(0.5, 1.0, 100).reshape(10, 10)
    array = image((2, *size))
    options = {"blend": blend, "output": output, "amp": amp, "align": align}
    lazy = predict_dask(model, da.from_array(array, chunks=(1, *chunks)), geometry, **options)
    expected = predict_tiled(model, array, geometry, **options)
    got = torch.from_numpy(lazy.compute(scheduler="sync"))
    assert lazy.dtype == got.numpy().dtype and got.dtype == expected.dtype
    assert got.shape == expected.shape == ((3, *size) if output != "labels" else size)
    if (isinstance(blend, str) and blend == "crop") or output == "labels":
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_progress_bar_over_blocks(capsys):
    model = ValidConvs().eval()
    array = da.from_array(image((2, 30, 30)), chunks=(2, 10, 10))
    lazy = predict_dask(model, array, TileGeometry(16, 10), progress=True)
    da.zeros(3).sum().compute(scheduler="sync")  # another computation: no bar
    assert "block" not in capsys.readouterr().err
    lazy.compute(scheduler="sync")
    err = capsys.readouterr().err
    assert "predict_dask" in err and f"{lazy.npartitions}/{lazy.npartitions}" in err


def test_progress_bar_through_a_derived_array(capsys):
    # the callback lived as long as the returned array object: computing a rechunked
    # or summed array made from it (the array itself dropped) showed no bar
    import gc

    from dask.callbacks import Callback

    model = ValidConvs().eval()
    array = da.from_array(image((2, 30, 30)), chunks=(2, 10, 10))
    before = len(Callback.active)
    derived = predict_dask(model, array, TileGeometry(16, 10), progress=True).rechunk((2, 15, 15))
    gc.collect()
    derived.sum().compute(scheduler="sync")
    assert "predict_dask" in capsys.readouterr().err
    del derived
    gc.collect()
    assert len(Callback.active) == before  # unregistered with the graph


def test_refused_inputs():
    model = ValidConvs().eval()
    geometry = TileGeometry(16, 10)
    x = da.from_array(image((2, 20, 20)), chunks=(2, 10, 10))
    unknown = x[:, x[0, :, 0] > -1]  # a boolean mask leaves the sizes unknown
    with pytest.raises(ValueError, match=r"unknown chunk sizes .*compute_chunk_sizes\(\)"):
        predict_dask(model, unknown, geometry)
    with pytest.raises(TypeError, match="array must be real, got dtype complex64"):
        predict_dask(model, np.zeros((2, 20, 20), np.complex64), geometry)
    with pytest.raises(TypeError, match="array must be real"):
        predict_dask(model, x.astype(np.complex128), geometry)
    with pytest.raises(ValueError, match="model has parameters on the meta device"):
        predict_dask(ValidConvs().to("meta"), x, geometry)
    with pytest.raises(TypeError, match="amp must be True or False, got 'no'"):
        predict_dask(model, x, geometry, amp="no")
    with pytest.raises(TypeError, match="progress must be True or False, got None"):
        predict_dask(model, x, geometry, progress=None)
    with pytest.raises(ValueError, match="output must be 'logits', 'probabilities' or 'labels'"):
        predict_dask(model, x, geometry, output="classes")
    with pytest.raises(ValueError, match=r"positive on the keep window"):
        predict_dask(model, x, geometry, blend="hann")  # step == output: no overlap


def test_labels_are_lazy_and_small():
    model = ValidConvs().eval()
    lazy = predict_dask(model, image((2, 40, 30)), TileGeometry(16, 10), output="labels")
    assert lazy.shape == (40, 30) and lazy.dtype == np.uint8
    expected = predict_tiled(model, image((2, 40, 30)), TileGeometry(16, 10)).argmax(0)
    assert np.array_equal(lazy.compute(), expected.numpy())


def test_a_delayed_model_that_is_not_a_module_is_refused():
    from dask.delayed import delayed

    array = da.from_array(image((2, 20, 20)), chunks=(2, 10, 10))
    remote = delayed(lambda x: x, pure=True)(1)  # not a module
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got int"):
        predict_dask(remote, array, TileGeometry(16, 10))
    lazy = predict_dask(remote, array, TileGeometry(16, 10), meta_channels=2)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got int"):
        lazy.compute(scheduler="sync")


@pytest.mark.parametrize("blend", ["gaussian", "hann"])
def test_blended_3d_equals_predict_tiled(blend):
    model = ValidConvs(ndim=3, in_channels=1, out_channels=2).eval()
    geometry = TileGeometry((10, 10, 10), (4, 4, 4), step=2)
    array = image((1, 7, 9, 5), seed=2)
    lazy = predict_dask(
        model, da.from_array(array, chunks=(1, 3, 4, 2)), geometry, blend=blend, output="labels"
    )
    expected = predict_tiled(model, array, geometry, blend=blend, output="labels")
    assert torch.equal(torch.from_numpy(lazy.compute(scheduler="threads")), expected)
