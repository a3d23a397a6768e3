"""plan_geometry: no valid geometry under the budget computes fewer pixels."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from unet_transforms import TileGeometry, TileGrid, plan_geometry, planning
from unet_transforms.geometry import _UNetArithmetic
from unet_transforms.planning import _best_input


def all_geometries(max_input: int, depth: int):
    for n in range(1, max_input + 1):
        try:
            yield TileGeometry.unet(input_size=n, depth=depth)
        except ValueError:
            continue


def cost(size, geometry):
    grid = TileGrid(size, geometry)
    return len(grid) * math.prod(geometry.input_size), len(grid)


def test_the_512_example():
    g = plan_geometry((512, 512), max_input_size=800)
    assert g.input_size == (700, 700) and g.output_size == (516, 516) and g.step == (512, 512)
    assert len(TileGrid(512, g)) == 1
    assert cost(512, g)[0] / 512**2 == pytest.approx(1.87, abs=0.01)
    assert cost(512, TileGeometry.unet(input_size=572))[0] / 512**2 == pytest.approx(
        4.99, abs=0.01
    )


@given(
    st.tuples(st.integers(1, 900), st.integers(1, 900)),
    st.integers(210, 700),
    st.sampled_from([2, 3, 4]),
)
def test_no_valid_geometry_under_the_budget_is_cheaper(size, budget, depth):
    chosen = plan_geometry(size, max_input_size=budget, depth=depth)
    assert max(chosen.input_size) <= budget
    best = cost(size, chosen)
    # brute force over every pair of per-axis sizes; a grid's tiles are the product of
    # its per-axis tile counts (TileGrid.shape), each taken from a 2-D grid once
    geometries = list(all_geometries(budget, depth))
    rows = [(TileGrid(size, g).shape[0], g.input_size[0]) for g in geometries]
    cols = [(TileGrid(size, g).shape[1], g.input_size[1]) for g in geometries]
    for tiles_a, a in rows:
        for tiles_b, b in cols:
            # fewer pixels, or equal pixels and >= tiles
            assert (tiles_a * tiles_b * a * b, tiles_a * tiles_b) >= best


def test_3d_and_per_axis_budget():
    g = plan_geometry((40, 300, 300), max_input_size=(116, 300, 300), depth=3, ndim=3)
    assert g.ndim == 3 and g.input_size[0] <= 116 and max(g.input_size[1:]) <= 300


def test_errors():
    with pytest.raises(
        ValueError, match=r"no valid U-Net input size fits max_input_size=150 .* smallest .* 204"
    ):
        plan_geometry(512, max_input_size=150)
    with pytest.raises(
        ValueError, match="max_input_size must be a positive int or 2 positive ints"
    ):
        plan_geometry(512, max_input_size=0)
    with pytest.raises(ValueError, match="max_input_size must be"):
        plan_geometry(512, max_input_size=(600, 600, 600))
    with pytest.raises(ValueError, match="image_size must be positive"):
        plan_geometry(0, max_input_size=600)
    with pytest.raises(
        ValueError, match=r"image_size must have 2 or 3 entries, got \(6, 6, 6, 6\)"
    ):
        plan_geometry((6, 6, 6, 6), max_input_size=300)
    with pytest.raises(ValueError, match=r"image_size must have 3 entries \(ndim=3\)"):
        plan_geometry((60, 60), max_input_size=300, ndim=3)
    with pytest.raises(ValueError, match="max_input_size must be"):
        plan_geometry(512, max_input_size=600.0)
    with pytest.raises(TypeError, match=r"ndim must be an int \(2 or 3\), got float"):
        plan_geometry(512, max_input_size=800, ndim=2.0)
    with pytest.raises(ValueError, match="ndim must be 2 or 3, got 4"):
        plan_geometry(512, max_input_size=800, ndim=4)


def test_numpy_integers_are_integers():
    expected = plan_geometry(512, max_input_size=800)
    assert plan_geometry(np.int64(512), max_input_size=np.int64(800)) == expected
    assert plan_geometry(np.array([512, 512]), max_input_size=(800, np.int32(800))) == expected


def unet_output(n: int, depth: int, convs: int, kernel: int) -> int | None:
    """Output size of a valid U-Net for input n, simulated layer by layer (None: invalid)."""
    loss, skips = convs * (kernel - 1), []
    for _ in range(depth):
        n -= loss
        if n < 2 or n % 2:
            return None
        skips.append(n)
        n //= 2
    n -= loss
    for _ in skips:
        n = 2 * n - loss
        if n < 1:
            return None
    return n if n >= 1 else None


@given(
    st.tuples(st.integers(1, 400), st.integers(1, 400), st.integers(1, 400)),
    st.tuples(st.integers(90, 260), st.integers(90, 260), st.integers(90, 260)),
    st.sampled_from([(2, 1, 3), (2, 2, 3), (3, 2, 3), (2, 1, 5)]),
)
def test_3d_per_axis_budgets_against_an_independent_brute_force(size, budget, net):
    depth, convs, kernel = net
    period = 2**depth
    per_axis = []
    for cap in budget:  # every usable input size and its output, simulated independently
        options = []
        for n in range(1, cap + 1):
            out = unet_output(n, depth, convs, kernel)
            if out is not None and out >= period:
                options.append((n, out // period * period))
        per_axis.append(options)
    if not all(per_axis):
        with pytest.raises(ValueError, match="no valid U-Net input size fits"):
            plan_geometry(
                size,
                max_input_size=budget,
                depth=depth,
                convs_per_level=convs,
                kernel_size=kernel,
                ndim=3,
            )
        return
    chosen = plan_geometry(
        size, max_input_size=budget, depth=depth, convs_per_level=convs, kernel_size=kernel, ndim=3
    )

    def pixels_and_tiles(inputs, steps):
        tiles = math.prod(math.ceil(n / s) for n, s in zip(size, steps))
        return tiles * math.prod(inputs), tiles

    best = pixels_and_tiles(chosen.input_size, chosen.step)
    assert all(i <= c for i, c in zip(chosen.input_size, budget))
    for a in per_axis[0]:
        for b in per_axis[1]:
            for c in per_axis[2]:
                combo = (a, b, c)
                assert pixels_and_tiles([n for n, _ in combo], [s for _, s in combo]) >= best


# ------------------------------------------------ bounded work (issue 11, item 4)
def per_axis_costs(size: int, cap: int, depth: int, convs: int, kernel: int):
    """(pixels read, tiles, input) of every usable input up to cap, simulated layer by layer."""
    period = 2**depth
    costs = []
    for n in range(1, cap + 1):
        out = unet_output(n, depth, convs, kernel)
        if out is not None and out >= period:
            tiles = math.ceil(size / (out // period * period))
            costs.append((tiles * n, tiles, n))
    return costs


@pytest.mark.parametrize(
    ("size", "cap", "net"),
    [
        (10**9, 10**9, (4, 2, 3)),
        (10**9, 10**5, (4, 2, 3)),
        (2**62, 2**62, (10, 2, 3)),
        (10**30, 10**6, (0, 1, 3)),
        (10**12, 10**7, (0, 1, 1)),  # no margin: the bound on tile counts stops the search
        (2**62, 2**62, (62, 1, 1)),
    ],
)
def test_huge_sizes_are_planned_with_bounded_work(size, cap, net):
    depth, convs, kernel = net
    arithmetic = _UNetArithmetic(depth, convs, kernel)
    start = time.perf_counter()
    best, tried = _best_input(arithmetic, size, cap)
    g = plan_geometry(
        (size, size), max_input_size=cap, depth=depth, convs_per_level=convs, kernel_size=kernel
    )
    assert time.perf_counter() - start < 5  # a backstop only: the old search took hours
    assert 1 <= tried <= planning._SEARCH_STEPS
    assert g.input_size == (best, best) and best <= cap
    assert arithmetic.forward(best) == g.output_size[0] >= 2**depth


def test_realistic_networks_stop_long_before_the_bound():
    for depth, convs, kernel in [(4, 2, 3), (3, 2, 3), (2, 1, 3), (0, 1, 3)]:
        net = _UNetArithmetic(depth, convs, kernel)
        for size in (1, 511, 512, 99991, 10**6, 9876543):
            for cap in (1000, 10**4, 10**6):
                assert _best_input(net, size, cap)[1] <= 100


@given(
    st.integers(1, 3000),
    st.integers(1, 400),
    st.sampled_from([(0, 1, 1), (1, 1, 1), (2, 1, 1), (0, 1, 3), (2, 1, 3)]),
    st.integers(1, 4),
)
def test_search_is_exact_or_within_its_bound(size, cap, net, steps):
    depth, convs, kernel = net
    costs = per_axis_costs(size, cap, depth, convs, kernel)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planning, "_SEARCH_STEPS", steps)
        best, tried = _best_input(_UNetArithmetic(depth, convs, kernel), size, cap)
    if not costs:
        assert best is None and tried == 0
        return
    assert best in [n for _, _, n in costs] and 1 <= tried <= steps
    pixels = next(c for c, _, n in costs if n == best)
    if tried < steps:  # the lower bound stopped the search: the optimum
        assert (pixels, best) == (min(costs)[0], min(costs)[2])
    else:
        assert pixels <= min(costs)[0] * (1 + 2 / steps)


def test_search_is_exact_with_its_real_bound():
    for size, cap in [(1000, 400), (2999, 333), (777, 777), (1, 50)]:
        for depth, convs, kernel in [(0, 1, 1), (2, 1, 1), (1, 1, 3)]:
            costs = per_axis_costs(size, cap, depth, convs, kernel)
            best, _ = _best_input(_UNetArithmetic(depth, convs, kernel), size, cap)
            assert best == min(costs)[2]


def test_absurd_depths_are_refused():
    with pytest.raises(ValueError, match=r"depth must be at most 62 .* got 1000000"):
        plan_geometry(512, max_input_size=800, depth=10**6)
