"""Chunk-aligned writes into zarr and h5py-like targets, and resuming interrupted runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import zarr
from hypothesis import given
from hypothesis import strategies as st

from unet_transforms import TileGeometry, TileGrid, predict_tiled
from unet_transforms.merging import TileMerger

NET = torch.nn.Conv2d(1, 2, kernel_size=5).eval()  # valid: 36 -> 32, loses 2 px per side
torch.manual_seed(0)
with torch.no_grad():
    NET.weight.normal_()


class Interrupted(RuntimeError):
    pass


class StopsAfter(torch.nn.Module):
    """NET that raises after ``n`` forward calls, and counts them."""

    def __init__(self, n: int | None = None) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.n is not None and self.calls > self.n:
            raise Interrupted("stopped on purpose")
        out: torch.Tensor = NET(x)
        return out


class ChunkedTarget:
    """A chunked array-like (as an h5py dataset) that records every write's box."""

    def __init__(self, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str) -> None:
        self.data = np.zeros(shape, dtype)
        self.shape, self.chunks, self.dtype = shape, chunks, self.data.dtype
        self.writes: list[tuple[tuple[int, int], ...]] = []

    def __setitem__(self, index: tuple[object, ...], value: np.ndarray) -> None:
        spatial = index[1:] if index[0] is Ellipsis else index
        self.writes.append(tuple((s.start, s.stop) for s in spatial))  # type: ignore[union-attr]
        self.data[index] = value


def run(model, image, geometry, out, **kwargs):
    return predict_tiled(model, image, geometry, out=out, resume=True, **kwargs)


def meets(a, b):
    return all(max(x0, y0) < min(x1, y1) for (x0, x1), (y0, y1) in zip(a, b))


def clip(box, size):
    return tuple((max(lo, 0), min(hi, n)) for (lo, hi), n in zip(box, size))


def unit_boxes(size, unit):
    rows = [(r, min(r + unit[0], size[0])) for r in range(0, size[0], unit[0])]
    cols = [(c, min(c + unit[1], size[1])) for c in range(0, size[1], unit[1])]
    return [(r, c) for r in rows for c in cols]


def tiles_needed(grid, missing, blend):
    """Oracle: the tiles whose outputs reach a keep window that meets a missing unit."""
    cells = [t for t in grid if any(meets(clip(t.keep_box, grid.image_size), u) for u in missing)]
    if blend == "crop":
        return len(cells)
    return sum(
        any(meets(t.output_box, clip(c.keep_box, grid.image_size)) for c in cells) for t in grid
    )


@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    unit=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    multiple=st.booleans(),
    align=st.sampled_from(["start", "center"]),
    blend=st.sampled_from(["crop", "gaussian"]),
    output=st.sampled_from(["logits", "labels"]),
    stop=st.integers(0, 12),
    sharded=st.booleans(),
)
def test_resume_after_an_interruption_equals_one_run(
    height, width, unit, multiple, align, blend, output, stop, sharded
):
    geometry = TileGeometry(36, 32, step=16 if blend == "gaussian" else 32)
    grid = TileGrid((height, width), geometry, align=align)
    image = torch.rand(1, height, width, generator=torch.Generator().manual_seed(height * width))
    expected = predict_tiled(NET, image, geometry, align=align, blend=blend, output=output)
    step = geometry.step[0]
    chunks = tuple(n * step if multiple else n * 7 for n in unit)
    shape = tuple(expected.shape)
    lead = shape[:-2]
    units = tuple(2 * c for c in chunks) if sharded else chunks
    kwargs = {"shards": (*lead, *units)} if sharded else {}
    fill = 255 if output == "labels" else float("nan")  # no result pixel has that value
    target = zarr.create_array(
        store={},
        shape=shape,
        chunks=(*lead, *chunks),
        dtype=expected.numpy().dtype,
        fill_value=fill,
        **kwargs,
    )
    options = {"align": align, "blend": blend, "output": output}
    first = StopsAfter(stop % len(grid))  # stopped before the last tile
    with pytest.raises(Interrupted):
        run(first, image, geometry, target, **options)
    # every unit is either stored whole and right, or not at all
    partial = target[:]
    missing = []
    for box in unit_boxes((height, width), units):
        where = (..., *(slice(lo, hi) for lo, hi in box))
        if np.array_equal(partial[where], np.full_like(partial[where], fill), equal_nan=True):
            missing.append(box)
        else:
            np.testing.assert_array_equal(partial[where], expected.numpy()[where])
    second = StopsAfter()
    result = run(second, image, geometry, target, **options)
    assert result is target
    np.testing.assert_array_equal(target[:], expected.numpy())
    assert second.calls == tiles_needed(grid, missing, blend)
    if align == "start" and multiple and blend == "crop":  # no tile serves two units
        assert second.calls == len(grid) - sum(
            not any(meets(clip(t.keep_box, grid.image_size), u) for u in missing) for t in grid
        )


def interrupt_then_resume(image, geometry, target, stop_after, stored, resumed_calls):
    """Stops a run after ``stop_after`` forwards, checks ``stored`` whole units, resumes:
    the resumed run needs ``resumed_calls`` forwards and equals one uninterrupted run."""
    first = StopsAfter(stop_after)
    with pytest.raises(Interrupted):
        run(first, image, geometry, target, align="start")
    assert target.nchunks_initialized == stored
    second = StopsAfter()
    run(second, image, geometry, target, align="start")
    assert second.calls == resumed_calls
    np.testing.assert_array_equal(target[:], predict_tiled(NET, image, geometry).numpy())


def test_resume_skips_exactly_the_tiles_of_stored_units():
    geometry = TileGeometry(36, 32)
    image = torch.rand(1, 128, 96)
    target = zarr.create_array(store={}, shape=(2, 128, 96), chunks=(2, 64, 32), dtype="f4")
    # 12 tiles in 4 x 3; units of 2 x 1 tiles, written row by row. Tiles 0-4 ran: the
    # units (0, 0) and (0, 1) hold tiles 0, 3 and 1, 4
    interrupt_then_resume(image, geometry, target, 5, stored=2, resumed_calls=12 - 4)
    # a third run has nothing left to do
    third = StopsAfter()
    assert run(third, image, geometry, target, align="start") is target
    assert third.calls == 0


def test_resume_stores_units_of_fill_values_so_they_count_as_complete():
    geometry = TileGeometry(36, 32)
    zeros = torch.nn.Conv2d(1, 1, 5).eval()
    torch.nn.init.zeros_(zeros.weight)
    torch.nn.init.zeros_(zeros.bias)
    target = zarr.create_array(store={}, shape=(1, 64, 64), chunks=(1, 32, 32), dtype="f4")
    assert target.config.write_empty_chunks is False  # zarr's default, left as it is
    run(zeros, torch.rand(1, 64, 64), geometry, target, align="start")
    assert target.nchunks_initialized == 4


def test_resume_on_a_local_store_after_the_process_is_killed(tmp_path):
    """A SIGKILL mid-run: the stored units are whole, and resuming completes the result."""
    path = tmp_path / "result.zarr"
    script = textwrap.dedent(
        f"""
        import os, signal, torch, zarr
        from unet_transforms import TileGeometry, predict_tiled
        torch.manual_seed(0)
        net = torch.nn.Conv2d(1, 2, 5).eval()
        calls = 0
        def killer(module, args, out):
            global calls
            calls += 1
            if calls == {{kill_at}}:
                os.kill(os.getpid(), signal.SIGKILL)
        net.register_forward_hook(killer)
        image = torch.rand(1, 150, 130, generator=torch.Generator().manual_seed(1))
        target = zarr.open_array({str(path)!r}, mode="a", shape=(2, 150, 130),
                                 chunks=(2, 64, 64), dtype="f4", fill_value=float("nan"))
        predict_tiled(net, image, TileGeometry(36, 32), out=target, align="start",
                      resume=True)
        print(calls)
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script.replace("{kill_at}", "10")], capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL
    partial = zarr.open_array(str(path), mode="r")
    assert partial.nchunks_initialized == 2  # tiles 0-8 complete units (0, 0) and (0, 1)
    missing = [
        u
        for u in unit_boxes((150, 130), (64, 64))
        if np.isnan(partial[(..., *map(lambda b: slice(*b), u))]).all()
    ]
    assert len(missing) == 7
    resumed = subprocess.run(
        [sys.executable, "-c", script.replace("{kill_at}", "0")],
        capture_output=True,
        text=True,
        check=True,
    )
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 5).eval()
    image = torch.rand(1, 150, 130, generator=torch.Generator().manual_seed(1))
    expected = predict_tiled(net, image, TileGeometry(36, 32), align="start")
    np.testing.assert_array_equal(zarr.open_array(str(path))[:], expected.numpy())
    grid = TileGrid((150, 130), TileGeometry(36, 32), align="start")
    assert int(resumed.stdout) == tiles_needed(grid, missing, "crop") == len(grid) - 8
    assert not [p for p in os.listdir(path) if p.startswith(".")]


@pytest.mark.parametrize("align", ["start", "center"])
@pytest.mark.parametrize("blend", ["crop", "hann"])
def test_chunked_targets_get_every_unit_once_and_whole(align, blend):
    geometry = TileGeometry(36, 32, step=16 if blend == "hann" else 32)
    image = torch.rand(1, 100, 75)
    target = ChunkedTarget((2, 100, 75), (1, 32, 48), "float32")
    predict_tiled(NET, image, geometry, out=target, align=align, blend=blend)
    expected = predict_tiled(NET, image, geometry, align=align, blend=blend)
    np.testing.assert_allclose(target.data, expected.numpy(), rtol=0, atol=1e-6)
    units = [
        ((r, min(r + 32, 100)), (c, min(c + 48, 75))) for r in range(0, 100, 32) for c in (0, 48)
    ]
    assert sorted(target.writes) == sorted(units)


def test_unchunked_targets_are_written_per_tile():
    image = torch.rand(1, 64, 64)
    target = ChunkedTarget((2, 64, 64), (2, 64, 64), "float32")
    target.chunks = None  # contiguous, as an unchunked h5py dataset
    predict_tiled(NET, image, TileGeometry(36, 32), out=target, align="start")
    assert len(target.writes) == 4


def test_merger_resume_lists_only_the_tiles_still_needed():
    grid = TileGrid((64, 64), TileGeometry(36, 32), align="start")
    target = zarr.create_array(store={}, shape=(64, 64), chunks=(32, 64), dtype="f4")
    target[:32] = 1.0  # the first row of units is stored
    merger = TileMerger(grid, out=target, resume=True)
    assert merger.tile_indices() == [2, 3]
    for i in merger.tile_indices():
        merger.add(i, torch.full((32, 32), 2.0))
    assert merger.result() is target
    np.testing.assert_array_equal(target[:], np.repeat([1.0, 2.0], 32)[:, None] * np.ones(64))
    # a merger without resume does all of them
    assert TileMerger(grid, out=target).tile_indices() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (None, "resume=True needs out= a zarr array"),
        (np.zeros((2, 40, 40), "f4"), "got ndarray"),
        (torch.zeros(2, 40, 40), "got Tensor"),
        (ChunkedTarget((2, 40, 40), (2, 8, 8), "float32"), "got ChunkedTarget"),
    ],
)
def test_resume_without_a_zarr_target_is_refused(out, message):
    with pytest.raises(ValueError, match=message):
        predict_tiled(NET, torch.rand(1, 40, 40), TileGeometry(36, 32), out=out, resume=True)


def test_resume_must_be_a_bool_and_takes_one_image():
    target = zarr.create_array(store={}, shape=(2, 2, 40, 40), chunks=(1, 2, 8, 8), dtype="f4")
    with pytest.raises(TypeError, match="resume must be True or False, got 'yes'"):
        predict_tiled(NET, torch.rand(1, 40, 40), TileGeometry(36, 32), resume="yes")
    with pytest.raises(ValueError, match="resume=True takes one"):
        predict_tiled(NET, torch.rand(2, 1, 40, 40), TileGeometry(36, 32), out=target, resume=True)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_resume_in_a_group_and_in_either_zarr_format(tmp_path, zarr_format):
    """Chunk keys are found for arrays inside a group, and in zarr's v2 and v3 formats."""
    geometry = TileGeometry(36, 32)
    image = torch.rand(1, 96, 96)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
    target = group.create_array("a/logits", shape=(2, 96, 96), chunks=(2, 32, 64), dtype="f4")
    # 3 x 3 tiles; tiles 0-3 ran: the first row's units (0, 0) (tiles 0, 1) and (0, 1)
    # (tile 2) are whole
    interrupt_then_resume(image, geometry, target, 4, stored=2, resumed_calls=9 - 3)
