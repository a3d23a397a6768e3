"""save_checkpoint / load_checkpoint: a UNet, its geometry and metadata round-trip."""

from __future__ import annotations

import pathlib

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
    with pytest.raises(TypeError, match=r"model must be a unet_transforms\.models\.UNet"):
        save_checkpoint(path, torch.nn.Conv2d(1, 1, 1), net.geometry(input_size=36))
    with pytest.raises(TypeError, match="geometry must be a TileGeometry, got int"):
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
