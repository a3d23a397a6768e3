"""TileGeometry: validation, U-Net size arithmetic, measuring a model."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from unet_transforms import TileGeometry
from unet_transforms.geometry import _UNetArithmetic


def unet_forward_size(size: int, depth: int, convs: int, kernel: int) -> int | None:
    """Independent oracle: simulate the feature-map sizes of a valid U-Net."""
    loss = convs * (kernel - 1)
    skips = []
    for _ in range(depth):
        size -= loss
        if size <= 0 or size % 2:
            return None
        skips.append(size)
        size //= 2
    size -= loss
    if size <= 0:
        return None
    for _ in skips:
        size = 2 * size - loss
        if size <= 0:
            return None
    return size


def test_paper_numbers():
    g = TileGeometry.unet(input_size=572)
    assert (g.input_size, g.output_size, g.margin, g.step) == (
        (572,) * 2,
        (388,) * 2,
        (92,) * 2,
        (384,) * 2,
    )
    assert TileGeometry.unet(output_size=388).input_size == (572, 572)
    g3 = TileGeometry.unet(input_size=(116, 132, 132), depth=3, ndim=3)
    assert g3.output_size == (28, 44, 44) and g3.step == (24, 40, 40) and g3.ndim == 3


def test_valid_inputs_of_the_classic_net_are_188_plus_16k():
    valid = [n for n in range(1, 700) if unet_forward_size(n, 4, 2, 3) is not None]
    assert valid == list(range(188, 700, 16))
    for n in valid[1:]:  # 188 gives output 4 < 16: no exact stride exists
        assert TileGeometry.unet(input_size=n).output_size[0] == unet_forward_size(n, 4, 2, 3)


@given(
    st.integers(1, 400),
    st.integers(0, 4),
    st.integers(1, 3),
    st.sampled_from([1, 3, 5]),
)
def test_unet_arithmetic_matches_simulation(size, depth, convs, kernel):
    expected = unet_forward_size(size, depth, convs, kernel)
    if expected is None:
        with pytest.raises(ValueError, match="not a valid U-Net input"):
            TileGeometry.unet(
                input_size=size, depth=depth, convs_per_level=convs, kernel_size=kernel
            )
        return
    if expected < 2**depth:
        with pytest.raises(ValueError, match="smaller than 2\\*\\*depth"):
            TileGeometry.unet(
                input_size=size, depth=depth, convs_per_level=convs, kernel_size=kernel
            )
        return
    g = TileGeometry.unet(input_size=size, depth=depth, convs_per_level=convs, kernel_size=kernel)
    assert g.output_size == (expected, expected)
    assert g.step[0] % 2**depth == 0 and g.step[0] <= expected < g.step[0] + 2**depth
    back = TileGeometry.unet(
        output_size=expected, depth=depth, convs_per_level=convs, kernel_size=kernel
    )
    assert back == g


@pytest.mark.parametrize("depth", range(6))
@pytest.mark.parametrize(("convs", "kernel"), [(1, 1), (1, 3), (2, 3), (3, 5)])
def test_smallest_valid_input_is_the_first_the_network_takes(depth, convs, kernel):
    net = _UNetArithmetic(depth, convs, kernel)
    first = next(size for size in range(1, 10**6) if net.forward(size) is not None)
    assert net.valid_inputs_around(first) == (first, first + 2**depth)
    if first > 1:
        assert net.valid_inputs_around(first - 1) == (None, first)


def test_deep_networks_are_planned_without_searching():
    g = TileGeometry.unet(output_size=4 + 2**30, depth=30)  # computed, not searched
    assert g.step == (2**30, 2**30)
    assert _UNetArithmetic(30, 2, 3).forward(g.input_size[0]) == g.output_size[0]


def test_invalid_unet_sizes_name_the_nearest_valid_ones():
    with pytest.raises(
        ValueError, match=r"input size 570 on axis 0 .* nearest valid input sizes: 556 or 572"
    ):
        TileGeometry.unet(input_size=570)
    with pytest.raises(ValueError, match=r"nearest valid output sizes: 388 or 404"):
        TileGeometry.unet(output_size=390)
    with pytest.raises(
        ValueError,
        match=r"input size 100 .* \(valid sizes are 204 \+ 16k\); nearest valid input sizes: 204 \(the smallest\)",
    ):
        TileGeometry.unet(input_size=100)
    # 188 is a valid network input, but its output (4) is too small for exact tiling:
    # only sizes that TileGeometry.unet accepts are suggested
    with pytest.raises(ValueError, match=r"nearest valid input sizes: 204 \(the smallest\)"):
        TileGeometry.unet(input_size=190)
    assert TileGeometry.unet(input_size=204).output_size == (20, 20)
    with pytest.raises(
        ValueError, match=r"input size 571 on axis 1 .* nearest valid input sizes: 556 or 572"
    ):
        TileGeometry.unet(input_size=(572, 571))
    with pytest.raises(ValueError, match="exactly one of input_size and output_size"):
        TileGeometry.unet()
    with pytest.raises(ValueError, match="exactly one of input_size and output_size"):
        TileGeometry.unet(input_size=572, output_size=388)
    with pytest.raises(ValueError, match="depth must be an int >= 0, got -1"):
        TileGeometry.unet(input_size=572, depth=-1)
    with pytest.raises(ValueError, match="ndim must be 2 or 3, got 4"):
        TileGeometry.unet(input_size=572, ndim=4)
    with pytest.raises(ValueError, match=r"smaller than 2\*\*depth=16.*at least 204"):
        TileGeometry.unet(input_size=188)


def test_normalisation_and_value_semantics():
    g = TileGeometry(572, 388)
    assert g.step == (388, 388) and g.ndim == 2
    assert TileGeometry([10, 12, 14], [6, 8, 10], step=4).step == (4, 4, 4)
    assert g == TileGeometry((572, 572), (388, 388))
    assert hash(g) == hash(TileGeometry((572, 572), (388, 388)))
    assert pickle.loads(pickle.dumps(g)) == g
    with pytest.raises(AttributeError):
        g.step = (1, 1)  # type: ignore[misc]
    assert repr(TileGeometry.unet(input_size=572)) == "TileGeometry(572, 388, step=384)"
    assert eval(repr(TileGeometry((8, 10), (4, 6), step=(2, 3)))) == TileGeometry(
        (8, 10), (4, 6), step=(2, 3)
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (
            (0, 0),
            {},
            ValueError,
            r"must be positive, got input_size=0 and output_size=0 on axis 0",
        ),
        ((10, 12), {}, ValueError, r"output_size=12 > input_size=10 on axis 0 \(height\)"),
        ((10, 7), {}, ValueError, r"10 - 7 = 3 on axis 0"),
        (((10, 10), (8, 7)), {}, ValueError, r"on axis 1 \(width\)"),
        ((10, 8), {"step": 9}, ValueError, r"step must be in \[1, output_size=8\], got 9"),
        ((10, 8), {"step": 0}, ValueError, r"step must be in \[1, output_size=8\], got 0"),
        (((10, 10), (8, 8, 8)), {}, ValueError, r"output_size must have 2 entries"),
        (((10,), (8,)), {}, ValueError, r"must have 2 or 3 entries"),
        ((10.5, 8), {}, ValueError, r"input_size must be an integer, got 10.5"),
        ((float("nan"), 8), {}, ValueError, r"input_size must be an integer, got nan"),
        (("10", 8), {}, TypeError, r"got str"),
        ((True, 1), {}, TypeError, r"got bool"),
        (((10, 10.5), 8), {}, ValueError, r"input_size\[1\] must be an integer, got 10.5"),
        ((b"<<", 8), {}, TypeError, r"input_size must be an int or a sequence of ints, got bytes"),
    ],
)
def test_bad_geometries(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        TileGeometry(*args, **kwargs)


def test_from_model_valid_and_same_padding():
    valid = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 5)
    )
    assert TileGeometry.from_model(valid, (40, 30), in_channels=3) == TileGeometry(
        (40, 30), (34, 24)
    )
    same = torch.nn.Conv3d(1, 1, 3, padding=1)
    assert TileGeometry.from_model(same, (8, 9, 10)).output_size == (8, 9, 10)
    assert TileGeometry.from_model(valid, 40, in_channels=3, step=8).step == (8, 8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_from_model_feeds_the_parameters_dtype(dtype):
    model = torch.nn.Conv2d(1, 1, 3).to(dtype)
    assert TileGeometry.from_model(model, 16) == TileGeometry(16, 14)


def test_unet_sequence_sizes_set_the_number_of_axes():
    g = TileGeometry.unet(input_size=(116, 132, 132), depth=3)
    assert g == TileGeometry.unet(input_size=(116, 132, 132), depth=3, ndim=3) and g.ndim == 3
    assert TileGeometry.unet(output_size=(28, 44, 44), depth=3).input_size == (116, 132, 132)
    assert TileGeometry.unet(input_size=572, ndim=3).input_size == (572,) * 3
    with pytest.raises(ValueError, match=r"input_size must have 3 entries \(ndim=3\)"):
        TileGeometry.unet(input_size=(572, 572), ndim=3)


def test_numpy_and_tensor_sizes():
    assert TileGeometry(np.array([12, 14]), np.int64(8)) == TileGeometry((12, 14), 8)
    assert TileGeometry(100, np.array([60, 60, 60])) == TileGeometry((100,) * 3, (60,) * 3)
    assert TileGeometry(torch.tensor(12), 8) == TileGeometry(12, 8)
    with pytest.raises(TypeError, match="input_size must be an int or a sequence of ints"):
        TileGeometry(torch.tensor(True), 1)
    assert TileGeometry.unet(input_size=np.array([116, 132, 132]), depth=3).ndim == 3


def test_from_model_keeps_modes_and_buffers():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    net.train()
    net[1].eval()  # a mixed state must survive
    running = net[1].running_mean.clone()
    TileGeometry.from_model(net, 16)
    assert net.training and not net[1].training
    assert torch.equal(net[1].running_mean, running)


def test_from_model_errors():
    class TupleNet(torch.nn.Module):
        def forward(self, x):
            return (x,)

    with pytest.raises(TypeError, match="model must return a tensor, got tuple"):
        TileGeometry.from_model(TupleNet(), 8)
    with pytest.raises(ValueError, match=r"output_size=10 > input_size=8"):
        TileGeometry.from_model(torch.nn.Upsample(size=(10, 10)), 8)
    with pytest.raises(ValueError, match=r"2 spatial axes, got shape \(1, 64\)"):
        TileGeometry.from_model(torch.nn.Flatten(), 8)
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        TileGeometry.from_model(torch.nn.Identity(), 8, in_channels=0)


# ------------------------------------------------ bounded work (issue 11, item 4)
@given(
    st.integers(0, 62),
    st.integers(1, 3),
    st.sampled_from([1, 2, 3, 5]),
    st.integers(1, 10**6),
    st.integers(-3, 3),
)
def test_closed_form_matches_the_simulation_at_any_depth(depth, convs, kernel, bottom, shift):
    # an input built up from a bottom size, and its neighbours: valid or not, the
    # closed form agrees with the layer-by-layer simulation (linear in depth only)
    loss = convs * (kernel - 1)
    size = 2**depth * (bottom + 2 * loss) - loss + shift
    net = _UNetArithmetic(depth, convs, kernel)
    assert net.forward(size) == unet_forward_size(size, depth, convs, kernel)
    smallest = net.input_for_min_output(2**depth)
    assert unet_forward_size(smallest, depth, convs, kernel) >= 2**depth
    below = smallest - 2**depth
    assert (unet_forward_size(below, depth, convs, kernel) or 0) < 2**depth


@pytest.mark.parametrize(("convs", "kernel"), [(1, 1), (2, 3), (3, 5)])
@pytest.mark.parametrize("depth", [0, 3, 4])
def test_input_for_min_output_against_a_scan(depth, convs, kernel):
    net = _UNetArithmetic(depth, convs, kernel)
    for min_output in range(0, 80):
        expected = next(
            n
            for n in range(1, 10**5)
            if (unet_forward_size(n, depth, convs, kernel) or 0) >= max(min_output, 1)
        )
        assert net.input_for_min_output(min_output) == expected


def test_deepest_network_is_computed_in_closed_form():
    g = TileGeometry.unet(output_size=2**62, depth=62, kernel_size=1)
    assert g.input_size == g.output_size == g.step == (2**62, 2**62)
    g = TileGeometry.unet(input_size=2**62 * 13 - 4, depth=62)  # bottom output 5
    assert _UNetArithmetic(62, 2, 3).forward(g.input_size[0]) == g.output_size[0]
    assert g.output_size[0] == unet_forward_size(2**62 * 13 - 4, 62, 2, 3)


@pytest.mark.parametrize("depth", [63, 10**5, 10**6, 10**100])
def test_absurd_depths_are_refused_at_once(depth):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"depth must be at most 62 .*, got {depth}"):
        TileGeometry.unet(input_size=572, depth=depth)
    with pytest.raises(ValueError, match="depth must be at most 62"):
        TileGeometry.unet(output_size=388, depth=depth, ndim=3)
    assert time.perf_counter() - start < 5  # a backstop only: depth=10**6 used to hang


def test_as_geometry_takes_jsonargparse_class_path_form():
    """LightningCLI passes {'class_path', 'init_args'} on as a plain mapping where its own
    type check refuses an integral float such as 212.0."""
    from unet_transforms.geometry import as_geometry

    for path in ("unet_transforms.TileGeometry", "unet_transforms.geometry.TileGeometry"):
        value = {"class_path": path, "init_args": {"input_size": 212.0, "output_size": 124}}
        assert as_geometry(value) == TileGeometry(212, 124)
    with pytest.raises(TypeError, match=r"geometry\.init_args must be a mapping"):
        as_geometry({"class_path": "unet_transforms.TileGeometry", "init_args": [212]})
    with pytest.raises(TypeError, match="unknown key 'class_path'"):  # other classes
        as_geometry({"class_path": "os.system", "init_args": {}})
