"""save_checkpoint / load_checkpoint: a UNet, its geometry and metadata round-trip."""

from __future__ import annotations

import errno
import io
import math
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from unet_transforms import TileGeometry
from unet_transforms.checkpoint import load_checkpoint, save_checkpoint
from unet_transforms.models import UNet


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    net = UNet(2, 3, depth=2, base_channels=2, convs_per_level=1, ndim=3).train()
    geometry = net.geometry(output_size=(6, 10, 14))
    metadata = {"scale": 0.5, "classes": ["bg", "fg"], "shape": (1, 2), "nested": {"a": None}}
    path = tmp_path / "net.pt"
    save_checkpoint(path, net, geometry, metadata=metadata)
    model, loaded_geometry, loaded_metadata = load_checkpoint(path)
    assert loaded_geometry == geometry and loaded_metadata == metadata
    assert not model.training
    assert (model.in_channels, model.out_channels, model.depth, model.ndim) == (2, 3, 2, 3)
    for (name, a), (_, b) in zip(net.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(1, 2, *geometry.input_size)
    with torch.inference_mode():
        assert torch.equal(net.eval()(x), model(x))


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"s": np.float32(0.5)}, r"weights_only=True\) .* found numpy\._core\.multiarray\.scalar"),
        ({"s": np.float64(0.5)}, "found numpy"),  # a float subclass: still refused
        ({"a": [1, np.zeros(3)]}, "found numpy"),
        ({"p": pathlib.Path("x")}, "found pathlib"),
        ([("a", 1)], "metadata must be a dict or None, got list"),
    ],
)
def test_metadata_that_would_not_load_is_refused_when_saving(tmp_path, metadata, match):
    net = UNet(base_channels=2, depth=1)
    path = tmp_path / "net.pt"
    with pytest.raises(TypeError, match=match):
        save_checkpoint(path, net, net.geometry(input_size=36), metadata=metadata)
    assert not path.exists()


def test_metadata_that_loads_with_weights_only_is_kept(tmp_path):
    net = UNet(base_channels=2, depth=1)
    metadata = {"mean": torch.tensor([0.5, 0.4]), 1: 2, "raw": b"x", "nested": [(1, "a")]}
    save_checkpoint(tmp_path / "n.pt", net, net.geometry(input_size=36), metadata=metadata)
    loaded = load_checkpoint(tmp_path / "n.pt")[2]
    assert torch.equal(loaded.pop("mean"), metadata.pop("mean")) and loaded == metadata


def test_bad_arguments_and_files(tmp_path):
    net = UNet(base_channels=2, depth=1)
    path = tmp_path / "net.pt"
    with pytest.raises(TypeError, match=r"model Conv2d has no to_config\(\): pass model_config="):
        save_checkpoint(path, torch.nn.Conv2d(1, 1, 1), net.geometry(input_size=36))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"):
        save_checkpoint(path, "net", net.geometry(input_size=36))
    with pytest.raises(TypeError, match=r"model_config must be a mapping with a '_target_'"):
        save_checkpoint(path, net, net.geometry(input_size=36), model_config={"depth": 1})
    with pytest.raises(
        TypeError, match=r"geometry must be a TileGeometry or a mapping .* got int"
    ):
        save_checkpoint(path, net, 36)
    with pytest.raises(ValueError, match="geometry must have the model's 2 spatial axes"):
        save_checkpoint(path, net, TileGeometry((4, 4, 4), (2, 2, 2)))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a unet-transforms checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "unet-transforms/checkpoint-v1"}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"is incomplete: missing \['model_args'"):
        load_checkpoint(tmp_path / "partial.pt")


def saved(tmp_path, name="net.pt", **unet_args):
    """A small saved checkpoint and the dict torch.load reads from it."""
    net = UNet(**{"base_channels": 2, "depth": 1, **unet_args})
    path = tmp_path / name
    save_checkpoint(path, net, net.geometry(input_size=36))
    return path, torch.load(path, weights_only=True)


def edited(data, change):
    copy = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    change(copy)
    return copy


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda d: d["model"].update(depth=100000),
            r"model\.depth must be an int in \[0, 20\], got 100000",
        ),
        (
            lambda d: d["model"].update(base_channels=2**40),
            r"model\.base_channels must be an int in \[1, 1048576\], got 1099511627776",
        ),
        (
            lambda d: d["model"].update(base_channels=2**19, depth=2),
            r"model\.base_channels \* 2\*\*model\.depth \(the widest layer\) must be at most "
            r"1048576, got 524288 \* 2\*\*2 = 2097152",
        ),
        (  # within the bounds, but 10**12 parameters where the file holds a few hundred
            lambda d: d["model"].update(base_channels=2**17),
            r"state_dict\['down\.0\.0\.weight'\] has shape \(2, 1, 3, 3\), the model config gives "
            r"\(131072, 1, 3, 3\) \(it describes a model of \d{13} parameters, the "
            r"state_dict holds \d{3}\)",
        ),
        (
            lambda d: d["model"].update(depth="4"),
            r"model\.depth must be an int in \[0, 20\], got '4'",
        ),
        (lambda d: d["model"].update(ndim=True), r"model\.ndim must be an int in"),
        (lambda d: d["model"].update(padding=0.5), r"model\.padding must be an int"),
        (lambda d: d["model"].update(extra=1), r"model has unknown fields \['extra'\]"),
        (lambda d: d.update(model=[1, 2]), "model must be a dict, got list"),
        (
            lambda d: d["model"].update(_target_="os.system"),
            r"model: _target_ 'os\.system' is not allowed",
        ),
        (lambda d: d["geometry"].pop("input_size"), r"geometry needs the key 'input_size'"),
        (
            lambda d: d["geometry"].update(step=[2, 2, 2]),
            r"geometry must have 2 axes \(model\.ndim=2\), got TileGeometry",
        ),
        (
            lambda d: d["geometry"].update(step=[100, 100]),
            r"geometry\.step must be in \[1, output_size=20\], got 100",
        ),
        (
            lambda d: d["state_dict"].update({"head.weight": torch.zeros(2, 4, 1, 1)}),
            r"state_dict\['head\.weight'\] has shape \(2, 4, 1, 1\), the model config gives \(2, 2, 1, 1\)",
        ),
        (
            lambda d: d["state_dict"].pop("head.bias"),
            r"state_dict does not fit the model config: missing \['head\.bias'\], unexpected \[\]",
        ),
        (
            lambda d: d["state_dict"].update(extra=torch.zeros(1)),
            r"state_dict does not fit the model config: missing \[\], unexpected \['extra'\]",
        ),
        (
            lambda d: d["state_dict"].update({"head.bias": torch.zeros(2, dtype=torch.long)}),
            r"state_dict\['head\.bias'\] must be a floating-point tensor, got torch\.int64",
        ),
        (lambda d: d.update(metadata=[1]), "metadata must be a dict, got list"),
    ],
)
def test_a_checkpoint_is_checked_before_anything_is_built(tmp_path, change, match):
    _, data = saved(tmp_path)
    bad = tmp_path / "bad.pt"
    torch.save(edited(data, change), bad)
    with pytest.raises(ValueError, match=rf"^checkpoint '{bad}': {match}"):
        load_checkpoint(bad)


def test_an_unavailable_map_location_names_the_device(tmp_path):
    path, _ = saved(tmp_path)
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match=rf"^map_location='{missing}' is not available"):
        load_checkpoint(path, map_location=missing)
    with pytest.raises(ValueError, match=r"map_location must name a torch device .* got 'gpu0'"):
        load_checkpoint(path, map_location="gpu0")
    with pytest.raises(TypeError, match=r"map_location must be a torch\.device .* got NoneType"):
        load_checkpoint(path, map_location=None)
    model = load_checkpoint(path, map_location=torch.device("cpu"))[0]
    assert next(model.parameters()).device == torch.device("cpu")


def test_saving_where_no_file_can_go_is_refused(tmp_path):
    net = UNet(base_channels=2, depth=1)
    geometry = net.geometry(input_size=36)
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got NoneType"):
        save_checkpoint(None, net, geometry)
    with pytest.raises(ValueError, match="path must name a file, got a directory"):
        save_checkpoint(tmp_path, net, geometry)
    with pytest.raises(ValueError, match="path must be in an existing folder"):
        save_checkpoint(tmp_path / "missing" / "net.pt", net, geometry)
    assert list(tmp_path.iterdir()) == []


def assert_same_checkpoint(path, data):
    """The file at ``path`` still loads, with the weights of ``data``."""
    model = load_checkpoint(path)[0]
    for name, value in model.state_dict().items():
        assert torch.equal(value, data["state_dict"][name]), name


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_a_full_disk_or_ctrl_c_keeps_the_older_checkpoint(tmp_path, monkeypatch, error):
    path, old = saved(tmp_path, base_channels=3)
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):  # half of the file, then the error
        if "state_dict" not in obj:  # the metadata check
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        if not hasattr(f, "write"):
            f = open(f, "wb")  # noqa: SIM115 (as torch.save itself would, given a path)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        raise error

    monkeypatch.setattr(torch, "save", half_then_fail)
    net = UNet(base_channels=2, depth=1)
    with pytest.raises(type(error)):
        save_checkpoint(path, net, net.geometry(input_size=36))
    monkeypatch.undo()
    assert_same_checkpoint(path, old)
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]


def test_sigterm_while_saving_keeps_the_older_checkpoint(tmp_path):
    path, old = saved(tmp_path, base_channels=3)
    script = f"""
import io, sys, time, torch
from unet_transforms.checkpoint import save_checkpoint
from unet_transforms.models import UNet

real_save = torch.save

def slow_save(obj, f, *args, **kwargs):  # half of the file written, then a pause
    if "state_dict" not in obj:  # the metadata check
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    if not hasattr(f, "write"):
        f = open(f, "wb")
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    print("writing", flush=True)
    time.sleep(60)

torch.save = slow_save
net = UNet(base_channels=2, depth=1)
save_checkpoint({str(path)!r}, net, net.geometry(input_size=36))
"""
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGTERM
    assert_same_checkpoint(path, old)
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]


def test_the_checkpoint_stores_configs(tmp_path):
    _, data = saved(tmp_path)
    assert data["format"] == "unet-transforms/checkpoint-v2"
    assert data["model"] == {
        "_target_": "unet_transforms.models.UNet",
        "base_channels": 2,
        "depth": 1,
    }
    assert data["geometry"] == {
        "_target_": "unet_transforms.TileGeometry",
        "input_size": 36,
        "output_size": 20,
    }


def test_first_format_checkpoints_still_load(tmp_path):
    net = UNet(base_channels=2, depth=1)
    v1 = {
        "format": "unet-transforms/checkpoint-v1",
        "model_args": {
            "in_channels": 1,
            "out_channels": 2,
            "depth": 1,
            "base_channels": 2,
            "convs_per_level": 2,
            "padding": 0,
            "ndim": 2,
        },
        "state_dict": net.state_dict(),
        "geometry": {"input_size": [36, 36], "output_size": [20, 20], "step": [18, 18]},
        "metadata": {"mean": 0.5},
    }
    path = tmp_path / "v1.pt"
    torch.save(v1, path)
    model, geometry, metadata = load_checkpoint(path)
    assert geometry == TileGeometry(36, 20, step=18) and metadata == {"mean": 0.5}
    x = torch.rand(1, 1, 36, 36)
    assert torch.equal(model(x), net.eval()(x))
    for field, key in (("model_args", "depth"), ("geometry", "step")):
        broken = {k: dict(v) if isinstance(v, dict) else v for k, v in v1.items()}
        del broken[field][key]
        torch.save(broken, path)
        with pytest.raises(ValueError, match=rf"{field}\.{key} is missing"):
            load_checkpoint(path)


class Tiny(torch.nn.Module):
    """A model of another library: no to_config."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, channels, 5)

    def forward(self, x):
        return self.conv(x)


def test_any_module_with_its_config_and_allow(tmp_path):
    net = Tiny(3)
    path = tmp_path / "tiny.pt"
    config = {"_target_": f"{__name__}.Tiny", "channels": 3}
    save_checkpoint(path, net, TileGeometry(20, 16), model_config=config)
    assert torch.load(path, weights_only=True)["model"] == config
    with pytest.raises(
        ValueError, match=rf"model: _target_ '{__name__}\.Tiny' is not allowed.*allow="
    ):
        load_checkpoint(path)
    model, geometry, _ = load_checkpoint(path, allow=[Tiny])
    x = torch.rand(1, 1, 20, 20)
    assert isinstance(model, Tiny) and torch.equal(model(x), net(x))
    assert geometry == TileGeometry(20, 16)


class Normed(torch.nn.Module):
    """A model with BatchNorm: its num_batches_tracked buffer is an int64 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 5)
        self.norm = torch.nn.BatchNorm2d(2)

    def forward(self, x):
        return self.norm(self.conv(x))


def test_integer_buffers_load_with_the_model_dtype(tmp_path):
    # BatchNorm saved fine but never loaded: every tensor had to be floating point
    net = Normed()
    net.train()(torch.rand(2, 1, 20, 20))  # running statistics and a count of 1
    net.eval()
    path = tmp_path / "normed.pt"
    save_checkpoint(
        path, net, TileGeometry(20, 16), model_config={"_target_": f"{__name__}.Normed"}
    )
    model, _, _ = load_checkpoint(path, allow=[Normed])
    x = torch.rand(1, 1, 20, 20)
    assert torch.equal(model.eval()(x), net(x))
    assert int(model.norm.num_batches_tracked) == 1
    data = torch.load(path, weights_only=True)
    bad = tmp_path / "bad.pt"
    for value, match in [
        (
            torch.tensor(1.0),
            r"num_batches_tracked'\] must be a torch.int64 tensor .*got torch.float32",
        ),
        ([1], r"num_batches_tracked'\] must be a tensor, got list"),
    ]:
        torch.save(
            edited(
                data, lambda d, v=value: d["state_dict"].update({"norm.num_batches_tracked": v})
            ),
            bad,
        )
        with pytest.raises(ValueError, match=match):
            load_checkpoint(bad, allow=[Normed])


RECORD = {"scale": "dtype_max", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def test_the_normalization_record_round_trips_and_reads_spelled_out(tmp_path):
    from unet_transforms.checkpoint import NORMALIZATION, read_normalization

    net = UNet(3, 2, base_channels=2, depth=1)
    metadata = {NORMALIZATION: RECORD, "note": "x"}
    save_checkpoint(tmp_path / "n.pt", net, net.geometry(input_size=36), metadata=metadata)
    loaded = load_checkpoint(tmp_path / "n.pt")[2]
    assert loaded == metadata and metadata[NORMALIZATION] is RECORD  # stored, not changed
    assert read_normalization(loaded) == RECORD
    one = {"scale": 2, "mean": 0.5, "std": (0.25,)}
    assert read_normalization({NORMALIZATION: one}) == {
        "scale": 2.0,
        "mean": [0.5],
        "std": [0.25],
    }
    assert read_normalization({"scale": 1, "mean": [1, 2], "std": 3}) == {
        "scale": "dtype_max",
        "mean": [1.0, 2.0],
        "std": [3.0, 3.0],
    }
    assert read_normalization({"mean": 0.5}) is None  # flat fields need both
    with pytest.raises(TypeError, match="metadata must be a mapping, got list"):
        read_normalization([("mean", 1)])
    with pytest.raises(ValueError, match=r"metadata\['std'\] must be a number or a non-empty"):
        read_normalization({"mean": 0.5, "std": 0})


BAD_RECORDS = [
    ([1, 2], r"metadata\['normalization'\] must be a dict \{'scale'.* got list"),
    (
        {"scale": "dtype_max", "mean": [0.5]},
        r"must have exactly the fields \['scale', 'mean', 'std'\], got \['mean', 'scale'\] "
        r"\(missing \['std'\], unknown \[\]\)",
    ),
    ({**RECORD, "shift": 1}, r"unknown \['shift'\]"),
    (
        {**RECORD, "scale": "max"},
        r"\['scale'\] must be 'dtype_max' or a positive finite number, got 'max'",
    ),
    ({**RECORD, "scale": 0}, r"\['scale'\] must be .* got 0"),
    ({**RECORD, "scale": True}, r"\['scale'\] must be .* got True"),
    ({**RECORD, "scale": math.inf}, r"\['scale'\] must be .* got inf"),
    ({**RECORD, "mean": []}, r"\['mean'\] must be a number or a non-empty list of finite"),
    ({**RECORD, "mean": [0.5, "a", 0.1]}, r"\['mean'\] must be .* got \[0\.5, 'a', 0\.1\]"),
    ({**RECORD, "mean": [math.nan] * 3}, r"\['mean'\] must be .* got \[nan, nan, nan\]"),
    ({**RECORD, "std": [0.2, 0.0, 0.3]}, r"\['std'\] must be .* positive finite numbers"),
    ({**RECORD, "std": [0.2, 10**400, 0.3]}, r"\['std'\] must be"),
    (
        {**RECORD, "mean": [0.5, 0.4]},
        r"\['mean'\] must have one value or one per input channel of the model \(3\), got 2",
    ),
]


@pytest.mark.parametrize(("record", "match"), BAD_RECORDS)
def test_a_bad_normalization_record_is_refused_at_save_and_at_load(tmp_path, record, match):
    net = UNet(3, 2, base_channels=2, depth=1)
    path = tmp_path / "n.pt"
    with pytest.raises(ValueError, match=match):
        save_checkpoint(path, net, net.geometry(input_size=36), metadata={"normalization": record})
    assert not path.exists()
    save_checkpoint(path, net, net.geometry(input_size=36), metadata={"normalization": RECORD})
    data = torch.load(path, weights_only=True)
    data["metadata"]["normalization"] = record
    torch.save(data, path)
    with pytest.raises(ValueError, match=rf"checkpoint '.*n\.pt': .*{match}"):
        load_checkpoint(path)


def test_mean_and_std_lengths_must_agree_without_a_known_channel_count(tmp_path):
    from unet_transforms.checkpoint import read_normalization

    record = {"scale": 1.0, "mean": [0.1, 0.2], "std": [1.0, 1.0, 1.0]}
    with pytest.raises(
        ValueError,
        match=r"metadata\['normalization'\]\['mean'\] and its std must have the same "
        r"number of channels, got 2 and 3",
    ):
        read_normalization({"normalization": record})
    config = {"_target_": "torch.nn.Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 5}
    with pytest.raises(ValueError, match=r"one per input channel of the model \(2\), got 3"):
        save_checkpoint(
            tmp_path / "c.pt",
            torch.nn.Conv2d(2, 2, 5),
            TileGeometry(24, 20),
            metadata={"normalization": record},
            model_config=config,
        )
