"""Whole-chunk writes into chunked array-likes (zarr, h5py), and which chunks are stored.

A merger that writes tile by tile into a chunked store would rewrite a chunk once per
tile reaching it (read, decode, update, encode, write). :class:`ChunkWriter` holds the
parts of a storage unit (a zarr shard, or chunk when the array is not sharded; an h5py
chunk) in memory until every part has arrived and stores the unit in one assignment.
For zarr, a unit is then either stored whole or not at all, so the units present in the
store are the complete ones: :func:`stored_units` lists them for ``resume=True``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ._boxes import intersect, relative
from .functional._tile import Box

__all__ = ["ChunkWriter", "is_zarr", "storage_unit", "stored_units", "unit_boxes"]


def is_zarr(target: object) -> bool:
    """Whether ``target`` is a zarr (v3 library) array."""
    module = type(target).__module__
    return module.split(".")[0] == "zarr" and hasattr(target, "metadata")


def storage_unit(target: object, ndim: int) -> tuple[int, ...] | None:
    """The spatial shape (last ``ndim`` axes) of ``target``'s unit of storage, if chunked.

    A zarr array's shards (chunks when it has none); an h5py dataset's chunks; ``None``
    for unchunked targets (tensors, numpy arrays, memory maps, contiguous h5py data).
    """
    unit = getattr(target, "shards", None) if is_zarr(target) else None
    unit = unit or getattr(target, "chunks", None)
    if not isinstance(unit, tuple) or len(unit) < ndim:
        return None
    if not all(isinstance(n, int | np.integer) and n > 0 for n in unit):
        return None
    return tuple(int(n) for n in unit[len(unit) - ndim :])


def unit_boxes(size: Sequence[int], unit: Sequence[int]) -> Iterator[tuple[tuple[int, ...], Box]]:
    """Every unit's grid coordinates and box (clipped to ``size``), in C order."""
    counts = [math.ceil(n / u) for n, u in zip(size, unit, strict=True)]
    for coords in itertools.product(*map(range, counts)):
        box = tuple(
            (c * u, min((c + 1) * u, n)) for c, u, n in zip(coords, unit, size, strict=True)
        )
        yield coords, box


def stored_units(target: Any, ndim: int) -> set[tuple[int, ...]]:
    """The spatial unit coordinates whose every chunk (over the leading axes) is stored.

    Args:
        target: A zarr array.
        ndim: Its number of trailing spatial axes.
    """
    from zarr.core.sync import sync  # zarr's own bridge from its async store API

    store, prefix = target.store, target.store_path.path
    lead_units = (getattr(target, "shards", None) or target.chunks)[: len(target.shape) - ndim]
    lead_counts = [
        math.ceil(n / u) for n, u in zip(target.shape[: len(lead_units)], lead_units, strict=True)
    ]
    unit = storage_unit(target, ndim)
    assert unit is not None
    size = tuple(int(n) for n in target.shape[len(target.shape) - ndim :])

    def stored(coords: tuple[int, ...]) -> bool:
        key = target.metadata.encode_chunk_key(coords)
        return bool(sync(store.exists(f"{prefix}/{key}" if prefix else key)))

    return {
        coords
        for coords, _ in unit_boxes(size, unit)
        if all(stored((*lead, *coords)) for lead in itertools.product(*map(range, lead_counts)))
    }


class ChunkWriter:
    """Collects the parts of each storage unit and writes every unit once, whole.

    Args:
        target: The chunked array-like written into (``(*lead, *size)``).
        unit: Spatial shape of one storage unit.
        expected: For every unit still to write, the number of parts it will receive;
            units left out are complete already and their parts are dropped.
    """

    def __init__(
        self, target: Any, unit: tuple[int, ...], expected: dict[tuple[int, ...], int]
    ) -> None:
        self.target, self.unit = target, unit
        self.size = tuple(int(n) for n in target.shape[len(target.shape) - len(unit) :])
        self._remaining = dict(expected)
        self._buffers: dict[tuple[int, ...], torch.Tensor] = {}
        self.origin = tuple((0, n) for n in self.size)

    def write(self, box: Box, values: torch.Tensor) -> None:
        """Adds ``values`` (``(*lead, *box_size)``) at ``box`` (in ``target``'s coordinates)."""
        spans = [
            range(lo // u, (hi - 1) // u + 1) for (lo, hi), u in zip(box, self.unit, strict=True)
        ]
        for coords in itertools.product(*spans):
            if coords not in self._remaining:
                continue  # stored already
            ubox = tuple(
                (c * u, min((c + 1) * u, n))
                for c, u, n in zip(coords, self.unit, self.size, strict=True)
            )
            part = intersect(box, ubox)
            assert part is not None  # one of the units the box spans
            buffer = self._buffers.get(coords)
            if buffer is None:
                shape = (*values.shape[: values.ndim - len(box)], *(hi - lo for lo, hi in ubox))
                buffer = self._buffers[coords] = torch.empty(shape, dtype=values.dtype)
            buffer[relative(part, ubox)] = values[relative(part, box)]
            self._remaining[coords] -= 1
            if self._remaining[coords] == 0:
                del self._remaining[coords]
                self.target[relative(ubox, self.origin)] = self._buffers.pop(coords).numpy()
