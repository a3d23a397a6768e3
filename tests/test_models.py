"""models.UNet: sizes agree with TileGeometry.unet, validation, same padding, 3-D."""

from __future__ import annotations

import pytest
import torch

from unet_transforms import TileGeometry
from unet_transforms.models import UNet


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("convs", [1, 2, 3])
def test_forward_size_matches_geometry(depth, convs):
    net = UNet(1, 2, depth=depth, base_channels=1, convs_per_level=convs).eval()
    inp = net._sizes.input_for_min_output(2**depth)
    for n in (inp, inp + 2**depth):
        g = net.geometry(input_size=n)
        with torch.inference_mode():
            out = net(torch.zeros(1, 1, n, n + 2**depth))
        assert out.shape[2] == g.output_size[0]
        assert out.shape[3] == net.geometry(input_size=n + 2**depth).output_size[0]


def test_paper_sizes_2d_and_3d():
    net = UNet(1, 2, base_channels=1)
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    assert net.geometry(input_size=572) == TileGeometry.unet(input_size=572)
    net3 = UNet(1, 3, depth=3, base_channels=1, ndim=3)
    with torch.inference_mode():
        assert net3(torch.zeros(1, 1, 116, 132, 132)).shape == (1, 3, 28, 44, 44)
    assert net3.geometry(input_size=(116, 132, 132)).step == (24, 40, 40)


def test_same_padding():
    net = UNet(2, 3, depth=2, base_channels=2, padding=1)
    assert net(torch.zeros(1, 2, 32, 40)).shape == (1, 3, 32, 40)
    assert net.geometry(input_size=64, output_size=48) == TileGeometry(64, 48)
    assert net.geometry(input_size=64) == TileGeometry(64, 64)
    with pytest.raises(
        ValueError,
        match=r"input size 30 on axis 0 must be a multiple of 2\*\*depth=4 for a same-padding U-Net; nearest: 28 or 32",
    ):
        net(torch.zeros(1, 2, 30, 32))
    with pytest.raises(ValueError, match="must be a multiple of 2"):
        net.geometry(input_size=30)
    with pytest.raises(ValueError, match="needs input_size"):
        net.geometry(output_size=30)
    # sizes are per spatial axis of this network: never truncated or broadcast
    with pytest.raises(ValueError, match=r"input_size must have 2 entries \(ndim=2\)"):
        net.geometry(input_size=(16, 32, 48))
    net3 = UNet(1, 2, depth=2, base_channels=1, padding=1, ndim=3)
    assert net3.geometry(input_size=16) == TileGeometry((16,) * 3, (16,) * 3)
    with pytest.raises(ValueError, match=r"input_size must have 3 entries \(ndim=3\)"):
        net3.geometry(input_size=(16, 32))
    with pytest.raises(ValueError, match=r"output_size must have 3 entries \(ndim=3\)"):
        net3.geometry(input_size=16, output_size=(8, 8))


def test_invalid_inputs_name_the_nearest_sizes():
    net = UNet(1, 2, base_channels=1)
    with pytest.raises(ValueError, match="nearest valid input sizes: 556 or 572"):
        net(torch.zeros(1, 1, 570, 572))
    with pytest.raises(
        ValueError,
        match=r"input must have shape \(N, 1, \*2 spatial sizes\), got \(1, 3, 572, 572\)",
    ):
        net(torch.zeros(1, 3, 572, 572))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_channels": 0}, ValueError, "in_channels must be >= 1, got 0"),
        ({"depth": -1}, ValueError, "depth must be >= 0, got -1"),
        ({"base_channels": 2.5}, ValueError, "base_channels must be an integer, got 2.5"),
        ({"base_channels": "8"}, TypeError, "base_channels must be an int, got str"),
        ({"padding": 2}, ValueError, r"padding must be 0 \(valid\) or 1 \(same\), got 2"),
        ({"ndim": 1}, ValueError, "ndim must be 2 or 3, got 1"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        UNet(**kwargs)


def test_repr_and_training_step():
    net = UNet(1, 2, depth=1, base_channels=2)
    assert "depth=1, base_channels=2" in repr(net)
    x = torch.rand(2, 1, 36, 36)
    loss = net(x).sum()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
