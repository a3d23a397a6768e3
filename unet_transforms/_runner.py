"""The one tile loop: read, batch, run and hand every tile to a merger.

:func:`~unet_transforms.predict_tiled` runs it once per image, and every block of
:func:`~unet_transforms.dask.predict_dask` runs it on the tiles of its chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ._model import batches, check_tile_output
from .functional._mirror import MirrorMode
from .merging import TileMerger

__all__ = ["run_tiles"]


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
) -> None:
    """Runs the tiles of ``merger.tile_indices()`` through ``model`` and adds them.

    Each tile's input window is read from the unpadded ``image`` (mirrored at the
    border, :meth:`TileGrid.extract <unet_transforms.TileGrid.extract>`), ``batch_size``
    tiles are stacked, moved to ``device`` as ``dtype`` and run under
    :func:`torch.inference_mode` (and :func:`torch.autocast` with ``amp``, whose float
    outputs are taken as float32); the merger post-processes and writes them.

    Args:
        model: The network.
        image: ``(C, *spatial)`` tensor or array-like.
        merger: Receives the outputs; its grid plans the tiles.
        batch_size: Tiles per forward call.
        mode: Mirroring at the image border.
        device: Where the model runs.
        dtype: The dtype tiles are cast to (the model's).
        amp: Whether to run under autocast.
        channels: The number of output channels the caller planned for, if any.
        on_batch: Called with the number of tiles after every batch (progress).

    Raises:
        TypeError, ValueError: If the model returns something other than a tensor of
            the geometry's shape (or of ``channels`` channels).

    Example:
        >>> from unet_transforms import TileGeometry, TileGrid
        >>> from unet_transforms.merging import TileMerger
        >>> grid = TileGrid((9, 9), TileGeometry(6, 4))
        >>> merger = TileMerger(grid)
        >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)  # same padding: centres are kept
        >>> run_tiles(net, torch.rand(1, 9, 9), merger, batch_size=2, mode="reflect",
        ...           device=torch.device("cpu"), dtype=torch.float32, amp=False)
        >>> merger.result().shape
        torch.Size([1, 9, 9])
    """
    grid = merger.grid
    indices = merger.tile_indices()
    autocast = torch.autocast(device_type=device.type) if amp else contextlib.nullcontext()
    with torch.inference_mode():
        for batch in batches(len(indices), batch_size):
            chosen = [indices[k] for k in batch]
            tiles = [grid.extract(image, i, mode) for i in chosen]
            x = torch.stack(tiles) if len(tiles) > 1 else tiles[0].unsqueeze(0)
            x = x.to(device=device, dtype=dtype, non_blocking=True)
            with autocast:
                y = model(x)
            check_tile_output(y, len(chosen), grid.geometry, x.shape)
            if channels is not None and y.shape[1] != channels:
                raise ValueError(
                    f"model returned {y.shape[1]} channels but the result was planned for "
                    f"{channels} (meta_channels)"
                )
            if amp and y.is_floating_point():
                y = y.float()
            for j, i in enumerate(chosen):
                merger.add(i, y[j])
            if on_batch is not None:
                on_batch(len(chosen))
