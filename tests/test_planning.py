"""plan_geometry: no valid geometry under the budget computes fewer pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from unet_transforms import TileGeometry, TileGrid, plan_geometry


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
    # brute force over square geometries, and every pair of per-axis sizes
    sizes = [g.input_size[0] for g in all_geometries(budget, depth)]
    for a in sizes:
        for b in sizes:
            other = TileGeometry.unet(input_size=(a, b), depth=depth)
            assert cost(size, other) >= best  # fewer pixels, or equal pixels and >= tiles


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
