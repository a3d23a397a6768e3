"""Tiled inference with dask: a lazy prediction whose blocks are whole keep windows.

:func:`predict_dask` turns :func:`~unet_transforms.predict_tiled` into a lazy
:class:`dask.array.Array`, for images larger than memory (zarr, many-gigapixel slides)
and for clusters. The overlap-tile plan is the same :class:`~unet_transforms.TileGrid`
as for the whole image; every output chunk is a union of whole keep windows of that
grid, so the result equals :func:`~unet_transforms.predict_tiled` exactly.

dask is imported only when :func:`predict_dask` runs; ``import unet_transforms`` never
loads it. Install it with ``pip install 'unet-transforms[dask]'``.
"""

from __future__ import annotations

import copy
import itertools
import math
import operator
import pickle
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._checks import is_int
from ._model import (
    batches,
    check_channels,
    check_tile_output,
    model_device_dtype,
    parse_device,
    same_device,
)
from .functional._mirror import MirrorMode, check_mode, mirror_index
from .geometry import TileGeometry
from .grid import Align, TileGrid
from .inference import default_batch_size

if TYPE_CHECKING:
    import dask.array
    from dask.delayed import Delayed
    from distributed import Future

__all__ = ["predict_dask"]

_INSTALL_HINT = "pip install 'unet-transforms[dask]'"
# Spatial chunk size used for inputs that are not dask arrays yet (numpy, tensors,
# array-likes); zarr arrays keep their own chunks.
_DEFAULT_CHUNK = {2: 1024, 3: 128}


def predict_dask(
    model: torch.nn.Module | Delayed | Future[Any],
    array: Any,
    geometry: TileGeometry,
    *,
    batch_size: int | None = None,
    mode: MirrorMode = "reflect",
    device: torch.device | str | None = None,
    meta_channels: int | None = None,
    align: Align = "center",
) -> dask.array.Array:
    """Lazily segments a large image tile by tile with dask, exactly like ``predict_tiled``.

    The overlap-tile plan is ``TileGrid(spatial, geometry, align=align)``, the grid
    :func:`~unet_transforms.predict_tiled` uses for the whole image. The output is cut
    into chunks along keep-window boundaries of that grid (multiples of ``step`` from
    ``grid.origin``), about as large as the input's chunks. Each output chunk is one
    task: it gets the image pixels that its tiles' input windows read (the chunk plus
    the network's context, and whatever the mirroring at the border reflects), cuts
    its tiles with :meth:`TileGrid.extract <unet_transforms.TileGrid.extract>` as
    :func:`~unet_transforms.predict_tiled` does, runs them through the model and keeps
    their keep windows. Every pixel comes from the same tile with the same input as in
    :func:`~unet_transforms.predict_tiled`, so the results are equal; no
    ``map_overlap`` boundary is involved (dask's ``'reflect'`` is numpy's
    ``'symmetric'``, and halos deeper than the image fail).

    The model is one key of the graph that every block depends on, pickled once (with
    cloudpickle, so a model class defined in a notebook travels too), so the
    distributed scheduler sends it with the graph once and the workers copy its bytes
    between themselves, once per worker; each worker process unpickles it once. A
    worker never serializes the live module, which a block may be running (and a
    ``forward`` that caches something on the module may be changing) at that moment.
    On a real cluster, scatter it yourself and pass the future::

        from distributed import Client
        client = Client("tcp://scheduler:8786")
        remote = client.scatter(model.eval(), broadcast=True)  # one copy per worker
        image = dask.array.from_zarr("slide.zarr")              # (C, H, W)
        pred = predict_dask(remote, image, geometry, meta_channels=2, device="cuda")
        pred.argmax(axis=0).astype("uint8").to_zarr("labels.zarr")

    ``broadcast=True`` puts a copy on every worker before any block runs; without it,
    workers fetch the module from each other while blocks may be running it, as
    distributed does for any scattered object. Workers need torch and
    unet_transforms installed. With ``device`` set, each worker process moves a copy
    of the model there once and keeps it. dask's local
    ``"processes"`` scheduler (not ``distributed``) sends every task's inputs, the
    model included, with every task and every result back through the parent: use
    ``distributed.LocalCluster`` for processes on one machine. With the ``"threads"``
    scheduler, torch's own threads multiply with dask's: ``torch.set_num_threads(1)``
    and one dask thread per core is usually fastest on the CPU. distributed's nannies
    start CPU workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which pins glibc's mmap
    threshold and made CPU inference about twice as slow in
    ``benchmarks/bench_dask.py``; unset it with ``dask.config.set(
    {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})`` before
    starting the cluster.

    Args:
        model: A :class:`torch.nn.Module` mapping ``(N, C, *input_size)`` to
            ``(N, C_out, *output_size)`` or ``(N, C_out, *input_size)``, a
            ``dask.delayed`` wrapping one, or a distributed future from
            ``client.scatter(model)``. Call ``model.eval()`` first.
        array: The image ``(C, *spatial)``: a dask array (its chunks set the size of
            the output chunks), a zarr array (read chunk by chunk), a numpy array,
            memory map, tensor or array-like with ``.shape``, ``.dtype`` and slicing
            (wrapped with spatial chunks of 1024 in 2-D, 128 in 3-D).
            ``spatial`` has ``geometry.ndim`` axes.
        geometry: The network's :class:`~unet_transforms.TileGeometry`.
        batch_size: Tiles per forward call inside a block; defaults to
            :func:`~unet_transforms.inference.default_batch_size` of the device the
            model runs on (1 on the CPU, which is fastest there, and what
            :func:`~unet_transforms.predict_tiled` uses, so the results are bitwise
            equal; other batch sizes may change the last bits of CPU convolutions, as
            in :func:`~unet_transforms.predict_tiled`).
        mode: Mirroring at the image border: ``"reflect"`` or ``"symmetric"``.
        device: Where the model runs on the workers; defaults to the device of its
            parameters there. Tiles are moved there batch by batch; the blocks are
            numpy arrays in host memory.
        meta_channels: Number of output channels, if known. ``None`` runs the model
            once on a tile of zeros (locally for a module, as a task for a delayed or
            remote model) to measure it, and the output dtype with it; given, the
            dtype is that of the model's first floating-point parameter (float32 for a
            delayed or remote model) and blocks are cast to it.
        align: Grid alignment: ``"center"`` or ``"start"``.

    Returns:
        A lazy ``(C_out, *spatial)`` dask array with one chunk along the channels and
        spatial chunks that start and end on keep-window boundaries (clipped to the
        image).

    Raises:
        ImportError: If dask is not installed.
        TypeError: If ``array``, ``model`` or ``geometry`` have the wrong type, or the
            model's output dtype has no numpy equivalent.
        ValueError: If the image's shape does not fit the geometry, ``batch_size`` or
            ``meta_channels`` is not a positive int, ``mode`` or ``align`` is unknown,
            or the model returns an unexpected shape (at compute time for blocks).

    Example:
        >>> import dask.array as da
        >>> import numpy as np
        >>> import torch
        >>> from unet_transforms import TileGeometry, predict_tiled
        >>> net = torch.nn.Conv2d(1, 2, kernel_size=5).eval()  # loses 2 px per side
        >>> image = np.random.default_rng(0).random((1, 100, 70), dtype=np.float32)
        >>> lazy = predict_dask(net, da.from_array(image, chunks=(1, 40, 40)),
        ...                     TileGeometry(24, 20))
        >>> lazy.shape, lazy.chunks
        ((2, 100, 70), ((2,), (40, 40, 20), (35, 35)))
        >>> expected = predict_tiled(net, image, TileGeometry(24, 20))
        >>> torch.equal(torch.from_numpy(lazy.compute()), expected)
        True
    """
    try:
        import dask.array as da
        from dask.base import is_dask_collection
        from dask.delayed import delayed
    except ImportError as e:
        raise ImportError(f"predict_dask needs dask: {_INSTALL_HINT}") from e

    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    check_mode(mode)
    if batch_size is not None:
        if not is_int(batch_size) or operator.index(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        batch_size = operator.index(batch_size)
    if meta_channels is not None:
        if not is_int(meta_channels) or operator.index(meta_channels) < 1:
            raise ValueError(
                f"meta_channels must be a positive int or None, got {meta_channels!r}"
            )
        meta_channels = operator.index(meta_channels)
    if not isinstance(model, torch.nn.Module) and not (
        is_dask_collection(model) or _is_future(model)
    ):
        raise TypeError(
            "model must be a torch.nn.Module, a dask.delayed module or a distributed future "
            f"(client.scatter(model)), got {type(model).__name__}"
        )
    parsed = parse_device(device)
    device_name = None if parsed is None else str(parsed)

    x = _as_dask_array(array, geometry.ndim, da)
    nd = geometry.ndim
    grid = TileGrid(x.shape[1:], geometry, align=align)
    in_channels = int(x.shape[0])
    if isinstance(model, torch.nn.Module):
        check_channels(model, in_channels, "array")

    # Output channels and dtype: measured once, or taken from the caller.
    if meta_channels is None:
        if isinstance(model, torch.nn.Module):
            channels, out_dtype = _probe(model, in_channels, geometry)
        else:
            channels, out_dtype = delayed(_probe, pure=True)(
                model, in_channels, geometry
            ).compute()
    else:
        channels = meta_channels
        out_dtype = torch.float32
        if isinstance(model, torch.nn.Module):
            out_dtype = model_device_dtype(model)[1]
    np_dtype = _numpy_dtype(out_dtype)

    # The model enters the graph once, as a single key every block depends on. A module
    # travels as its pickled bytes: workers pass those on, never the live module a
    # block may be running (see _ShippedModel).
    model_ref = (
        delayed(_ShippedModel(model), pure=True) if isinstance(model, torch.nn.Module) else model
    )

    # Per axis: blocks of whole tiles, about as large as the input's chunks.
    plans = []
    for axis in range(nd):
        target = max(x.chunks[axis + 1])
        step = geometry.step[axis]
        per_block = max(1, (target + step // 2) // step)
        plans.append(_axis_blocks(grid, axis, per_block, mode))

    predict = delayed(_predict_block, pure=True)
    meta = np.empty((0,) * (nd + 1), dtype=np_dtype)
    blocks: dict[tuple[int, ...], dask.array.Array] = {}
    for where in itertools.product(*(range(len(p)) for p in plans)):
        parts = [plans[axis][b] for axis, b in enumerate(where)]
        region = x[(slice(None), *(slice(*p.source) for p in parts))]
        shape = tuple(p.keep[1] - p.keep[0] for p in parts)
        block = predict(
            model_ref,
            region,
            grid,
            mode,
            tuple(p.tiles for p in parts),
            tuple(p.source[0] for p in parts),
            tuple(p.keep[0] for p in parts),
            shape,
            batch_size,
            device_name,
            channels,
            out_dtype,
        )
        blocks[where] = da.from_delayed(  # type: ignore[no-untyped-call]
            block, shape=(channels, *shape), dtype=np_dtype, meta=meta
        )
    nested = _nest(blocks, tuple(len(p) for p in plans))
    out: dask.array.Array = da.block([nested])  # type: ignore[no-untyped-call]
    return out


# ---------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _AxisBlock:
    """One block along one axis: grid positions, image extent, source extent."""

    tiles: tuple[int, int]  # grid positions [start, stop) along the axis
    keep: tuple[int, int]  # the union of their keep windows, clipped to the image
    source: tuple[int, int]  # the image pixels their (mirrored) input windows read


def _axis_blocks(grid: TileGrid, axis: int, per_block: int, mode: MirrorMode) -> list[_AxisBlock]:
    """Cuts one axis of the grid into blocks of ``per_block`` tiles (the last may be smaller).

    All windows come from the grid's tiles; the only arithmetic here is the C-order
    flat index of a tile and the union of consecutive windows.
    """
    count = grid.shape[axis]
    stride = math.prod(grid.shape[axis + 1 :])
    size = grid.image_size[axis]
    tile_size = grid.geometry.output_size
    blocks = []
    for start in range(0, count, per_block):
        stop = min(start + per_block, count)
        first, last = start * stride, (stop - 1) * stride
        keep_lo = grid.keep_slices(first, tile_size)[1][axis].start
        keep_hi = grid.keep_slices(last, tile_size)[1][axis].stop
        window = range(grid[first].input_box[axis][0], grid[last].input_box[axis][1])
        read = mirror_index(window, size, mode)
        blocks.append(
            _AxisBlock((start, stop), (keep_lo, keep_hi), (int(read.min()), int(read.max()) + 1))
        )
    return blocks


def _nest(blocks: dict[tuple[int, ...], Any], shape: tuple[int, ...]) -> list[Any]:
    """The blocks as nested lists (the layout :func:`dask.array.block` takes)."""

    def level(prefix: tuple[int, ...]) -> list[Any]:
        n = shape[len(prefix)]
        if len(prefix) + 1 == len(shape):
            return [blocks[(*prefix, i)] for i in range(n)]
        return [level((*prefix, i)) for i in range(n)]

    return level(())


def _is_future(model: object) -> bool:
    try:
        from distributed import Future
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    return isinstance(model, Future)


def _as_dask_array(array: Any, ndim: int, da: Any) -> Any:
    """Wraps the input as a dask array and checks its shape: ``(C, *spatial)``."""
    given = getattr(array, "shape", None)
    if given is not None and len(given) != ndim + 1:
        axes = ", ".join(["D", "H", "W"][-ndim:])
        raise ValueError(
            f"array must have shape (C, {axes}) for a {ndim}-D geometry, got {tuple(given)}"
        )
    chunks = (-1, *(_DEFAULT_CHUNK[ndim],) * ndim)
    if isinstance(array, da.Array):
        x = array
    elif type(array).__module__.split(".")[0] == "zarr":
        x = da.from_zarr(array)
    elif isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            tensor = tensor.float()
        x = da.from_array(tensor.numpy(), chunks=chunks)
    elif hasattr(array, "shape") and hasattr(array, "dtype") and hasattr(array, "__getitem__"):
        x = da.from_array(array, chunks=chunks)
    else:
        raise TypeError(
            "array must be a dask array, a zarr array, a numpy array, a tensor or an "
            f"array-like with .shape, .dtype and slicing, got {type(array).__name__}"
        )
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != ndim + 1:
        axes = ", ".join(["D", "H", "W"][-ndim:])
        raise ValueError(f"array must have shape (C, {axes}) for a {ndim}-D geometry, got {shape}")
    if 0 in shape:
        raise ValueError(f"array must not be empty, got shape {shape}")
    return x


def _numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError as e:
        raise TypeError(
            f"the model's output dtype {dtype} has no numpy equivalent; cast the output "
            "(e.g. to float32) inside the model"
        ) from e


def _probe(
    model: torch.nn.Module, in_channels: int, geometry: TileGeometry
) -> tuple[int, torch.dtype]:
    """Output channels and dtype of the model, from one tile of zeros."""
    device, dtype = model_device_dtype(model)
    with torch.inference_mode():
        y = model(torch.zeros((1, in_channels, *geometry.input_size), device=device, dtype=dtype))
    check_tile_output(y, 1, geometry, (1, in_channels, *geometry.input_size))
    return int(y.shape[1]), y.dtype


# ---------------------------------------------------------------------- one block
class _Region:
    """A region of a larger image, read in the larger image's coordinates.

    Lets :meth:`TileGrid.extract` (and so :func:`crop_tile`) cut tiles from the part of
    the image a block task holds, as if it held the whole image. Reading outside the
    region is a planning bug and raises.
    """

    def __init__(self, data: np.ndarray[Any, Any], start: tuple[int, ...], size: tuple[int, ...]):
        self.data = data
        self.start = start
        self.shape = (*data.shape[: data.ndim - len(size)], *size)
        self.dtype = data.dtype

    def __getitem__(self, index: tuple[Any, ...]) -> np.ndarray[Any, Any]:
        spatial = index[1:] if index and index[0] is Ellipsis else index
        if len(spatial) != len(self.start) or not all(isinstance(s, slice) for s in spatial):
            raise TypeError(f"expected (..., *slices) for the spatial axes, got {index!r}")
        local: list[slice] = []
        sizes = self.data.shape[self.data.ndim - len(self.start) :]
        for s, offset, n in zip(spatial, self.start, sizes, strict=True):
            lo, hi = s.start - offset, s.stop - offset
            if s.step not in (None, 1) or lo < 0 or hi > n:
                raise ValueError(
                    f"read {s} outside the block's region [{offset}, {offset + n})"
                )  # pragma: no cover - would be a planning bug
            local.append(slice(lo, hi))
        where: tuple[Any, ...] = (Ellipsis, *local)
        out: np.ndarray[Any, Any] = self.data[where]
        return out


class _ShippedModel:
    """A module as it travels in a dask graph: pickled once, unpickled once per process.

    Where the graph is built, it holds the caller's module, which blocks run by a local
    scheduler use as is. Pickling it pickles the module once (cloudpickle) and keeps
    the bytes; a copy unpickled elsewhere holds only those bytes and unpickles the
    module on first use. Pickling a copy again (a worker handing it to another
    worker) passes the same bytes on and never touches the module, which a block may
    be running at that moment: serializing a live module can fail when its
    ``forward`` adds an attribute meanwhile.
    """

    __slots__ = ("_lock", "_module", "_payload")

    def __init__(self, module: torch.nn.Module | None, payload: bytes | None = None):
        self._module = module
        self._payload = payload
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        with self._lock:
            if self._payload is None:
                import cloudpickle

                self._payload = cloudpickle.dumps(self._module, protocol=pickle.HIGHEST_PROTOCOL)
            return _unship, (self._payload,)

    def __dask_tokenize__(self) -> object:
        from dask.base import tokenize

        if self._module is not None:
            return ("_ShippedModel", tokenize(self._module))
        return ("_ShippedModel", tokenize(self._payload))

    @property
    def module(self) -> torch.nn.Module:
        with self._lock:
            if self._module is None:
                assert self._payload is not None  # one of the two is always set
                self._module = pickle.loads(self._payload)
            return self._module


def _unship(payload: bytes) -> _ShippedModel:
    return _ShippedModel(None, payload)


_MOVED: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.nn.Module]] = (
    weakref.WeakKeyDictionary()
)
_MOVED_LOCK = threading.Lock()


def _on_device(model: torch.nn.Module, device: str | None) -> tuple[torch.nn.Module, torch.device]:
    """The model on ``device``: itself, or a copy made once per process and device."""
    model_device, _ = model_device_dtype(model)
    if device is None:
        return model, model_device
    run = torch.device(device)
    if same_device(run, model_device):
        return model, model_device
    with _MOVED_LOCK:
        copies = _MOVED.setdefault(model, {})
        if device not in copies:
            copies[device] = copy.deepcopy(model).to(run)
        return copies[device], run


def _predict_block(
    model: torch.nn.Module | _ShippedModel,
    region: np.ndarray[Any, Any],
    grid: TileGrid,
    mode: MirrorMode,
    tiles: tuple[tuple[int, int], ...],
    region_start: tuple[int, ...],
    block_start: tuple[int, ...],
    block_shape: tuple[int, ...],
    batch_size: int | None,
    device: str | None,
    channels: int,
    dtype: torch.dtype,
) -> np.ndarray[Any, Any]:
    """Runs the tiles ``tiles`` (per-axis grid ranges) and returns their keep windows."""
    if isinstance(model, _ShippedModel):
        model = model.module
    run_model, run_device = _on_device(model, device)
    if batch_size is None:
        batch_size = default_batch_size(run_device)
    _, model_dtype = model_device_dtype(run_model)
    geometry = grid.geometry
    source = _Region(np.asarray(region), region_start, grid.image_size)
    indices = [
        int(np.ravel_multi_index(position, grid.shape))
        for position in itertools.product(*(range(a, b) for a, b in tiles))
    ]
    result = torch.empty((channels, *block_shape), dtype=dtype)
    with torch.inference_mode():
        for batch in batches(len(indices), batch_size):
            chosen = [indices[k] for k in batch]
            tensors = [grid.extract(source, i, mode) for i in chosen]
            x = torch.stack(tensors) if len(tensors) > 1 else tensors[0].unsqueeze(0)
            x = x.to(device=run_device, dtype=model_dtype)
            y = run_model(x)
            check_tile_output(y, len(chosen), geometry, x.shape)
            if y.shape[1] != channels:
                raise ValueError(
                    f"model returned {y.shape[1]} channels but the dask array was planned "
                    f"for {channels} (meta_channels)"
                )
            y = y.cpu()
            tile_size = tuple(y.shape[2:])
            for j, i in enumerate(chosen):
                src, dst = grid.keep_slices(i, tile_size)
                to: tuple[Any, ...] = (
                    Ellipsis,
                    *(
                        slice(d.start - s, d.stop - s)
                        for d, s in zip(dst, block_start, strict=True)
                    ),
                )
                frm: tuple[Any, ...] = (Ellipsis, *src)
                result[to] = y[j][frm]
    return result.numpy()
