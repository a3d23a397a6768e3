"""The one tile loop: read, batch, run and hand every tile to a merger.

:func:`~unet_transforms.predict_tiled` runs it once per image, and every block of
:func:`~unet_transforms.dask.predict_dask` runs it on the tiles of its chunk. With
test-time augmentation each tile is run in ``k`` flipped (or rotated) versions whose
outputs are transformed back and averaged before the merger sees them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from ._boxes import inside, slices
from ._checks import is_one_of
from ._model import batches, check_tile_output
from .functional._mirror import MirrorMode
from .functional._tile import crop_tile
from .geometry import TileGeometry
from .grid import TileGrid
from .merging import TileMerger

__all__ = ["TTA", "Variant", "read_windows", "run_tiles", "tta_variants"]

TTA = Literal["flips", "d4"]
"""Test-time augmentation: every flip of the spatial axes, or the 8 symmetries of a square."""
Variant = tuple[tuple[int, ...], int]
"""One augmentation: the spatial axes flipped (negative, from the last) and the number
of 90° rotations of the last two axes applied after the flips."""


def tta_variants(tta: object, geometry: TileGeometry) -> tuple[Variant, ...]:
    """The augmentations of ``tta`` for tiles of ``geometry``, identity first.

    ``"flips"`` gives all ``2**ndim`` subsets of flipped axes; ``"d4"`` (2-D, square
    tiles) the 4 rotations by 90° of the tile and of its left-right mirror image;
    ``None`` gives ``()`` (no augmentation).

    Raises:
        ValueError: If ``tta`` is not ``None``, ``"flips"`` or ``"d4"``, or ``"d4"`` is
            asked for tiles that are not 2-D squares.

    Example:
        >>> from unet_transforms import TileGeometry
        >>> tta_variants("flips", TileGeometry(6, 4))
        (((), 0), ((-1,), 0), ((-2,), 0), ((-2, -1), 0))
        >>> len(tta_variants("d4", TileGeometry(6, 4))), tta_variants(None, TileGeometry(6, 4))
        (8, ())
    """
    if tta is None:
        return ()
    if not is_one_of(tta, ("flips", "d4")):
        raise ValueError(f"tta must be None, 'flips' or 'd4', got {tta!r}")
    nd = geometry.ndim
    if tta == "flips":
        subsets = itertools.product((False, True), repeat=nd)
        return tuple((tuple(a - nd for a in range(nd) if s[a]), 0) for s in subsets)
    square = len(set(geometry.input_size)) == 1 and len(set(geometry.output_size)) == 1
    if nd != 2 or not square:
        raise ValueError(
            "tta='d4' needs 2-D square tiles (a rotation must keep the tile's shape), got "
            f"input_size {geometry.input_size} and output_size {geometry.output_size}"
        )
    return tuple((flips, k) for flips in ((), (-1,)) for k in range(4))


def _augment(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    flips, k = variant
    x = x.flip(flips) if flips else x
    return torch.rot90(x, k, (-2, -1)) if k else x


def _restore(y: torch.Tensor, variant: Variant) -> torch.Tensor:
    flips, k = variant
    y = torch.rot90(y, -k, (-2, -1)) if k else y
    return y.flip(flips) if flips else y


def read_windows(
    grid: TileGrid, image: Any, indices: Sequence[int], mode: MirrorMode
) -> torch.Tensor:
    """The input windows of tiles ``indices``, stacked into one new tensor ``(n, ...)``.

    A window inside a tensor image is copied once, straight into the stack; the others
    are read by :func:`~unet_transforms.functional.crop_tile` (mirrored at the border;
    arrays are read only where needed), as :meth:`TileGrid.extract
    <unet_transforms.TileGrid.extract>` reads them. ``image`` is the grid's image (the
    callers planned the grid from it).

    Example:
        >>> from unet_transforms import TileGeometry, TileGrid
        >>> grid, image = TileGrid((9, 9), TileGeometry(6, 4)), torch.rand(1, 9, 9)
        >>> batch = read_windows(grid, image, [0, 4], "reflect")
        >>> batch.shape, torch.equal(batch[1], grid.extract(image, 4))
        (torch.Size([2, 1, 6, 6]), True)
    """
    plain = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else None
    size = grid.image_size
    windows = []
    for i in indices:
        box = grid[i].input_box
        if plain is not None and inside(box, size):
            windows.append(plain[slices(box)])
        else:
            windows.append(crop_tile(image, box, mode))
    return torch.stack(windows)


def run_tiles(
    model: torch.nn.Module,
    image: Any,
    merger: TileMerger,
    *,
    batch_size: int,
    mode: MirrorMode,
    device: torch.device,
    dtype: torch.dtype,
    amp: bool,
    channels: int | None = None,
    on_batch: Callable[[int], object] | None = None,
    tta: Sequence[Variant] = (),
    workers: int = 1,
) -> None:
    """Runs the tiles of ``merger.tile_indices()`` through ``model`` and adds them.

    Each tile's input window is read from the unpadded ``image`` (mirrored at the
    border, :meth:`TileGrid.extract <unet_transforms.TileGrid.extract>`), ``batch_size``
    forwards are stacked, moved to ``device`` as ``dtype`` and run under
    :func:`torch.inference_mode` (and :func:`torch.autocast` with ``amp``, whose float
    outputs are taken as float32); the merger post-processes and writes them.

    With ``tta`` (from :func:`tta_variants`) every tile is run once per variant: the
    input window is flipped/rotated on ``device``, the output transformed back (it is
    centred in the input window, so it maps onto the same output window) and the
    ``k`` outputs are summed in variant order in at least float32, divided by ``k`` and
    cast back to the output's dtype before the merger gets them. The variants of
    consecutive tiles share batches: ``batch_size`` counts forwards, not tiles.

    Args:
        model: The network.
        image: ``(C, *spatial)`` tensor or array-like.
        merger: Receives the outputs; its grid plans the tiles.
        batch_size: Forwards (tiles times variants) per forward call.
        mode: Mirroring at the image border.
        device: Where the model runs.
        dtype: The dtype tiles are cast to (the model's).
        amp: Whether to run under autocast.
        channels: The number of output channels the caller planned for, if any.
        on_batch: Called after every batch with the number of tiles it completed.
        tta: The test-time augmentations; ``()`` runs each tile once, as it is.
        workers: Forward calls in flight at once, each in its own thread with its share
            of torch's threads (restored afterwards). Tiles are read and merged in
            order by the calling thread, so results do not depend on ``workers``. With
            one worker, no ``tta`` and an array source that is not in memory (a memory
            map, zarr or h5py array, whose reads may wait on the disk or decompress), a
            reader thread reads the next batch's windows while the current batch runs.

    Raises:
        TypeError, ValueError: If the model returns something other than a tensor of
            the geometry's shape (or of ``channels`` channels), or with ``tta`` one that
            is not floating-point (outputs are averaged).

    Example:
        >>> from unet_transforms import TileGeometry, TileGrid
        >>> from unet_transforms.merging import TileMerger
        >>> grid = TileGrid((9, 9), TileGeometry(6, 4))
        >>> merger = TileMerger(grid)
        >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)  # same padding: centres are kept
        >>> run_tiles(net, torch.rand(1, 9, 9), merger, batch_size=2, mode="reflect",
        ...           device=torch.device("cpu"), dtype=torch.float32, amp=False,
        ...           tta=tta_variants("flips", grid.geometry))
        >>> merger.result().shape
        torch.Size([1, 9, 9])
    """
    grid = merger.grid
    indices = merger.tile_indices()
    variants = tuple(tta) or (((), 0),)
    k = len(variants)
    # every forward is (tile, variant); a tile's variants are consecutive, so at most one
    # tile spans two batches, and its input is carried over rather than read again
    units = [(i, v) for i in indices for v in range(k)]
    carried: dict[int, torch.Tensor] = {}
    sums: dict[int, torch.Tensor] = {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        # inference mode and autocast are per thread: entered where the model runs
        autocast = torch.autocast(device_type=device.type) if amp else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out: torch.Tensor = model(x)
        return out

    def prepare(batch: range) -> tuple[list[tuple[int, int]], torch.Tensor]:
        chosen = [units[u] for u in batch]
        fresh = [i for i in dict.fromkeys(i for i, _ in chosen) if i not in carried]
        with torch.inference_mode():
            if fresh:
                read = read_windows(grid, image, fresh, mode)
                read = read.to(device=device, dtype=dtype, non_blocking=True)
                carried.update(zip(fresh, read, strict=True))
            if k == 1:
                return chosen, read
            x = torch.stack([_augment(carried[i], variants[v]) for i, v in chosen])
        return chosen, x

    def read_and_run(
        batch: range,
    ) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        chosen = [units[u] for u in batch]
        with torch.inference_mode():
            x = read_windows(grid, image, [i for i, _ in chosen], mode)
            x = x.to(device=device, dtype=dtype, non_blocking=True)
        return chosen, x, forward(x)

    def finish(chosen: list[tuple[int, int]], x: torch.Tensor, y: torch.Tensor) -> None:
        check_tile_output(y, len(chosen), grid.geometry, x.shape)
        if channels is not None and y.shape[1] != channels:
            raise ValueError(
                f"model returned {y.shape[1]} channels but the result was planned for "
                f"{channels} (meta_channels)"
            )
        if amp and y.is_floating_point():
            y = y.float()
        if k > 1 and not y.is_floating_point():
            raise TypeError(
                f"tta averages the model's outputs, which must be floating-point, got "
                f"dtype {y.dtype}"
            )
        done = 0
        with torch.inference_mode():
            for j, (i, v) in enumerate(chosen):
                if k == 1:
                    carried.pop(i, None)
                    merger.add(i, y[j])
                    done += 1
                    continue
                back = _restore(y[j], variants[v])
                if v == 0:  # a copy: the sum is accumulated in place
                    sums[i] = back.to(torch.promote_types(y.dtype, torch.float32), copy=True)
                else:
                    sums[i].add_(back)
                if v == k - 1:
                    del carried[i]
                    merger.add(i, sums.pop(i).div_(k).to(y.dtype))
                    done += 1
        if on_batch is not None:
            on_batch(done)

    in_memory = isinstance(image, torch.Tensor) or type(image) is np.ndarray
    if workers == 1 and (k > 1 or in_memory):
        for batch in batches(len(units), batch_size):
            chosen, x = prepare(batch)
            finish(chosen, x, forward(x))
        return
    if workers == 1:
        # an array source (memmap, zarr, h5py): a reader thread reads the next batch's
        # input windows while this one runs
        with concurrent.futures.ThreadPoolExecutor(1) as reader:
            order = iter(batches(len(units), batch_size))
            ahead = reader.submit(prepare, next(order))
            for batch in order:
                chosen, x = ahead.result()
                ahead = reader.submit(prepare, batch)
                finish(chosen, x, forward(x))
            chosen, x = ahead.result()
            finish(chosen, x, forward(x))
        return
    # ``workers`` forwards in flight; tiles are read and merged here, in order
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            pending: collections.deque[Any] = collections.deque()
            for batch in batches(len(units), batch_size):
                if k == 1:  # no carried inputs: the worker reads its tiles too
                    pending.append(pool.submit(read_and_run, batch))
                else:
                    chosen, x = prepare(batch)
                    pending.append(pool.submit(lambda c, t: (c, t, forward(t)), chosen, x))
                if len(pending) >= workers:
                    finish(*pending.popleft().result())
            while pending:
                finish(*pending.popleft().result())
    finally:
        torch.set_num_threads(threads)
