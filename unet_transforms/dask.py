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

import collections
import copy
import hashlib
import itertools
import math
import operator
import pickle
import threading
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._model import (
    check_batch_size,
    check_channels,
    check_flag,
    check_image,
    check_model,
    check_tile_output,
    model_device_dtype,
    numpy_dtype,
    parse_device,
    same_device,
)
from ._runner import TTA, Variant, run_tiles, tta_variants
from .functional._mirror import MirrorMode, check_mode, mirror_index
from .geometry import TileGeometry
from .grid import Align, TileGrid
from .inference import default_batch_size
from .merging import Blend, Output, TileMerger, result_dtype

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
    amp: bool = False,
    progress: bool = False,
    blend: Blend | torch.Tensor = "crop",
    output: Output = "logits",
    tta: TTA | None = None,
) -> dask.array.Array:
    """Lazily segments a large image tile by tile with dask, exactly like ``predict_tiled``.

    The overlap-tile plan is ``TileGrid(spatial, geometry, align=align)``, the grid
    :func:`~unet_transforms.predict_tiled` uses for the whole image. The output is cut
    into chunks along keep-window boundaries of that grid (multiples of ``step`` from
    ``grid.origin``), about as large as the input's chunks. Each output chunk is one
    task that runs the tile loop of :func:`~unet_transforms.predict_tiled` on the tiles
    that reach the chunk (for a blend, also the neighbours whose outputs overlap it)
    and merges them with a :class:`~unet_transforms.TileMerger` restricted to the
    chunk. Every pixel is computed from the same tiles, with the same inputs, in the
    same order as in :func:`~unet_transforms.predict_tiled`, so the results are equal;
    no ``map_overlap`` boundary is involved.

    The model is one key of the graph that every block depends on, pickled once (with
    cloudpickle), and each worker process unpickles it once; a future from
    ``client.scatter(model, broadcast=True)`` works too. Scheduler and cluster advice
    (threads, processes, ``distributed``, GPUs) is on the "Huge images" page of the
    documentation (``docs/huge-images.md``).

    Args:
        model: A :class:`torch.nn.Module` mapping ``(N, C, *input_size)`` to
            ``(N, C_out, *output_size)`` or ``(N, C_out, *input_size)``, a
            ``dask.delayed`` wrapping one, or a distributed future from
            ``client.scatter(model)``. Call ``model.eval()`` first.
        array: The image ``(C, *spatial)``: a dask array (its chunks set the size of
            the output chunks; their sizes must be known), a zarr array (read chunk by
            chunk), a numpy array, memory map, tensor or array-like with ``.shape``,
            ``.dtype`` and slicing (wrapped with spatial chunks of 1024 in 2-D, 128 in
            3-D). ``spatial`` has ``geometry.ndim`` axes; real values only.
        geometry: The network's :class:`~unet_transforms.TileGeometry`.
        batch_size: Tiles per forward call inside a block; defaults to
            :func:`~unet_transforms.inference.default_batch_size` of the device the
            model runs on (1 on the CPU, as in :func:`~unet_transforms.predict_tiled`,
            so the results are bitwise equal; other batch sizes may change the last
            bits of CPU convolutions).
        mode: Mirroring at the image border: ``"reflect"`` or ``"symmetric"``.
        device: Where the model runs on the workers; defaults to the device of its
            parameters there. Each worker process moves a copy there once.
        meta_channels: Number of output channels, if known. ``None`` runs the model
            once on a tile of zeros (locally for a module, as a task for a delayed or
            remote model) to measure it, and the output dtype with it; given, the
            dtype is that of the model's first floating-point parameter (float32 for a
            delayed or remote model, or with ``amp``).
        align: Grid alignment: ``"center"`` or ``"start"``.
        amp: Run the model under :func:`torch.autocast`, as in ``predict_tiled``.
        progress: Show a progress bar over the blocks while the result is computed
            with a local scheduler (dask's own callbacks, :mod:`dask.diagnostics`);
            on a distributed cluster use ``distributed.progress`` or the dashboard.
        blend: ``"crop"``, ``"gaussian"``, ``"hann"`` or a weight tensor, as in
            ``predict_tiled``.
        output: ``"logits"``, ``"probabilities"`` or ``"labels"``, as in
            ``predict_tiled``.
        tta: Test-time augmentation, ``None``, ``"flips"`` or ``"d4"``, as in
            ``predict_tiled``: each tile's ``k`` variants are averaged inside its
            block, so the result still equals ``predict_tiled``'s.

    Returns:
        A lazy ``(C_out, *spatial)`` dask array (``spatial`` for labels) with one chunk
        along the channels and spatial chunks that start and end on keep-window
        boundaries (clipped to the image).

    Raises:
        ImportError: If dask is not installed.
        TypeError: If ``array``, ``model`` or ``geometry`` have the wrong type, the
            image is complex, ``amp``/``progress`` are not bools, or the result's dtype
            has no numpy equivalent.
        ValueError: If the image's shape does not fit the geometry or its chunk sizes
            are unknown, ``batch_size`` or ``meta_channels`` is not a positive int,
            ``mode``, ``align``, ``blend``, ``output`` or ``tta`` is unknown,
            ``tta="d4"`` is asked for tiles that are not 2-D squares, or the model
            returns an unexpected shape (at compute time for blocks).

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
        >>> flips = predict_dask(net, image, TileGeometry(24, 20), tta="flips")
        >>> torch.equal(torch.from_numpy(flips.compute()),
        ...             predict_tiled(net, image, TileGeometry(24, 20), tta="flips"))
        True
    """
    try:
        import dask.array as da
        from dask.delayed import delayed
    except ImportError as e:
        raise ImportError(f"predict_dask needs dask: {_INSTALL_HINT}") from e

    options = _check_options(
        model, geometry, mode, batch_size, meta_channels, device, amp, progress, blend, output, tta
    )
    x = _as_dask_array(array, geometry.ndim, da)
    grid = TileGrid(x.shape[1:], geometry, align=align)
    in_channels = int(x.shape[0])
    if isinstance(model, torch.nn.Module):
        check_channels(model, in_channels, "array")
    channels, tile_dtype = _output_spec(model, in_channels, geometry, meta_channels, amp, delayed)
    dtype = result_dtype(output, channels, tile_dtype, blend)
    np_dtype = numpy_dtype(dtype)
    crop = isinstance(blend, str) and blend == "crop"
    plans = [
        _axis_blocks(grid, axis, max(x.chunks[axis + 1]), mode, crop)
        for axis in range(grid.geometry.ndim)
    ]
    result, name = _build_graph(
        model, x, grid, plans, replace(options, channels=channels, dtype=dtype), np_dtype
    )
    if progress:
        _watch_progress(result, name)
    return result


# ---------------------------------------------------------------------- checks
@dataclass(frozen=True)
class _Options:
    """What every block needs to know besides its region (one object in the graph)."""

    mode: MirrorMode
    batch_size: int | None
    device: str | None
    amp: bool
    blend: Blend | torch.Tensor
    output: Output
    tta: tuple[Variant, ...] = ()
    channels: int = 0
    dtype: torch.dtype = torch.float32


def _check_options(
    model: object,
    geometry: object,
    mode: MirrorMode,
    batch_size: object,
    meta_channels: object,
    device: object,
    amp: object,
    progress: object,
    blend: Blend | torch.Tensor,
    output: Output,
    tta: object,
) -> _Options:
    """Checks every argument but the array before anything is planned."""
    from dask.base import is_dask_collection

    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    check_mode(mode)
    size = check_batch_size(batch_size)
    check_batch_size(meta_channels, "meta_channels")
    if isinstance(model, torch.nn.Module):
        check_model(model)
    elif not (is_dask_collection(model) or _is_future(model)):
        raise TypeError(
            "model must be a torch.nn.Module, a dask.delayed module or a distributed future "
            f"(client.scatter(model)), got {type(model).__name__}"
        )
    parsed = parse_device(device)
    check_flag("progress", progress)
    TileMerger(TileGrid(geometry.output_size, geometry), blend=blend, output=output)  # checks
    variants = tta_variants(tta, geometry)
    device_name = None if parsed is None else str(parsed)
    return _Options(mode, size, device_name, check_flag("amp", amp), blend, output, variants)


def _output_spec(
    model: Any,
    in_channels: int,
    geometry: TileGeometry,
    meta_channels: int | None,
    amp: bool,
    delayed: Any,
) -> tuple[int, torch.dtype]:
    """Output channels and the dtype of the tiles the merger gets: measured or given."""
    if meta_channels is None:
        if isinstance(model, torch.nn.Module):
            channels, dtype = _probe(model, in_channels, geometry)
        else:
            channels, dtype = delayed(_probe, pure=True)(model, in_channels, geometry).compute()
    else:
        channels = operator.index(meta_channels)
        dtype = torch.float32
        if isinstance(model, torch.nn.Module):
            dtype = model_device_dtype(model)[1]
    if amp and dtype.is_floating_point:
        dtype = torch.float32
    return channels, dtype


# ---------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _AxisBlock:
    """One block along one axis: its image extent, its tiles and what they read."""

    keep: tuple[int, int]  # the union of its keep windows, clipped to the image
    source: tuple[int, int]  # the image pixels its tiles' (mirrored) input windows read


def _axis_blocks(
    grid: TileGrid, axis: int, chunk: int, mode: MirrorMode, crop: bool
) -> list[_AxisBlock]:
    """Cuts one axis into blocks of whole keep windows, about ``chunk`` pixels each.

    All windows come from the grid; a blend's block also reads the input windows of
    the neighbouring tiles whose outputs reach into it.
    """
    count, size = grid.shape[axis], grid.image_size[axis]
    step = grid.geometry.step[axis]
    per_block = max(1, (chunk + step // 2) // step)
    whole = [(0, n) for n in grid.image_size]

    def tile(position: int) -> Any:
        return grid[
            grid.flat_index([position if a == axis else 0 for a in range(grid.geometry.ndim)])
        ]

    blocks = []
    for start in range(0, count, per_block):
        stop = min(start + per_block, count)
        lo = max(tile(start).keep_box[axis][0], 0)
        hi = min(tile(stop - 1).keep_box[axis][1], size)
        box = [*whole[:axis], (lo, hi), *whole[axis + 1 :]]
        tiles = grid.overlapping(box, "keep" if crop else "output")[axis]
        window = range(tile(tiles[0]).input_box[axis][0], tile(tiles[-1]).input_box[axis][1])
        read = mirror_index(window, size, mode)
        blocks.append(_AxisBlock((lo, hi), (int(read.min()), int(read.max()) + 1)))
    return blocks


def _build_graph(
    model: Any,
    x: Any,
    grid: TileGrid,
    plans: list[list[_AxisBlock]],
    options: _Options,
    np_dtype: np.dtype[Any],
) -> tuple[dask.array.Array, str]:
    """One task per block, each depending on the model's one key and its input region."""
    import dask.array as da
    from dask.delayed import delayed

    # The model enters the graph once, as a single key every block depends on. A module
    # travels as its pickled bytes: workers pass those on, never the live module a
    # block may be running (see _ShippedModel).
    model_ref = (
        delayed(_ShippedModel(model), pure=True) if isinstance(model, torch.nn.Module) else model
    )
    lead = () if options.output == "labels" else (options.channels,)
    from dask.base import tokenize

    # A name that dask's key_split keeps whole (letters only, no hex token), so that
    # the blocks stay recognisable when the optimizer fuses them with their neighbours.
    token = tokenize(x.name, grid, plans, options, model_ref.key)
    name = "predict_dask-" + token.translate(str.maketrans("0123456789abcdef", "ghijklmnopqrstuv"))
    predict = delayed(_predict_block, pure=True)
    meta = np.empty((0,) * (len(lead) + grid.geometry.ndim), dtype=np_dtype)
    blocks: dict[tuple[int, ...], dask.array.Array] = {}
    for where in itertools.product(*(range(len(p)) for p in plans)):
        parts = [plans[axis][b] for axis, b in enumerate(where)]
        region = x[(slice(None), *(slice(*p.source) for p in parts))]
        box = tuple(p.keep for p in parts)
        block = predict(
            model_ref,
            region,
            grid,
            tuple(p.source[0] for p in parts),
            box,
            options,
            dask_key_name=f"{name}-{'-'.join(map(str, where))}",
        )
        shape = (*lead, *(hi - lo for lo, hi in box))
        blocks[where] = da.from_delayed(  # type: ignore[no-untyped-call]
            block, shape=shape, dtype=np_dtype, meta=meta
        )
    nested = _nest(blocks, tuple(len(p) for p in plans))
    out: dask.array.Array = da.block([nested] if lead else nested)  # type: ignore[no-untyped-call]
    return out, name


def _watch_progress(result: dask.array.Array, name: str) -> None:
    """Shows a bar over the blocks named ``name`` whenever a local scheduler runs them.

    A dask callback (what :class:`dask.diagnostics.ProgressBar` is built on) registered
    for as long as the graph of the blocks lives: as long as ``result`` or any array
    derived from it (rechunked, sliced, summed), whose graphs share the blocks' layers;
    it ignores every other computation.
    """
    from dask.callbacks import Callback

    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "progress=True needs tqdm: pip install 'unet-transforms[progress]'"
        ) from e
    word = name.rsplit("-", 1)[1]  # in a block's key, fused or not, and in no other key

    class BlockProgress(Callback):
        bar: Any = None

        def _start_state(self, dsk: Any, state: Any) -> None:
            total = sum(1 for key in dsk if word in str(key))
            self.bar = tqdm(total=total, unit="block", desc="predict_dask") if total else None

        def _posttask(self, key: Any, *args: Any) -> None:
            if self.bar is not None and word in str(key):
                self.bar.update(1)

        def _finish(self, *args: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    callback = BlockProgress()  # type: ignore[no-untyped-call]
    callback.register()
    layer = next(layer for key, layer in result.dask.layers.items() if word in str(key))
    weakref.finalize(layer, callback.unregister)


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
    if given is not None and any(isinstance(n, float) and math.isnan(n) for n in given):
        raise ValueError(
            f"array has unknown chunk sizes (shape {tuple(given)}): call "
            "array.compute_chunk_sizes() first"
        )
    check_image(array, "array")
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


def _probe(
    model: torch.nn.Module, in_channels: int, geometry: TileGeometry
) -> tuple[int, torch.dtype]:
    """Output channels and dtype of the model, from one tile of zeros."""
    check_model(model)  # a delayed or remote model is only seen here (and in blocks)
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


_UNSHIPPED: collections.OrderedDict[bytes, _ShippedModel] = collections.OrderedDict()
_UNSHIPPED_LOCK = threading.Lock()
_MAX_UNSHIPPED = 4  # models a process keeps unpickled (the most recent ones)


def _unship(payload: bytes) -> _ShippedModel:
    """This process's copy of the pickled model: one per payload, so a worker that gets
    the model again (a scheduler may drop a dependency and fetch it later, e.g. for a
    stolen task) keeps running the module it unpickled first."""
    key = hashlib.blake2b(payload, digest_size=16).digest()
    with _UNSHIPPED_LOCK:
        shipped = _UNSHIPPED.get(key)
        if shipped is None:
            shipped = _UNSHIPPED[key] = _ShippedModel(None, payload)
            if len(_UNSHIPPED) > _MAX_UNSHIPPED:
                _UNSHIPPED.popitem(last=False)
        else:
            _UNSHIPPED.move_to_end(key)
        return shipped


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
    region_start: tuple[int, ...],
    box: tuple[tuple[int, int], ...],
    options: _Options,
) -> np.ndarray[Any, Any]:
    """Runs the tiles that reach ``box`` and returns the merged block."""
    if isinstance(model, _ShippedModel):
        model = model.module
    check_model(model)
    run_model, run_device = _on_device(model, options.device)
    _, model_dtype = model_device_dtype(run_model)
    merger = TileMerger(grid, blend=options.blend, output=options.output, region=box, device="cpu")
    run_tiles(
        run_model,
        _Region(np.asarray(region), region_start, grid.image_size),
        merger,
        batch_size=options.batch_size or default_batch_size(run_device),
        mode=options.mode,
        device=run_device,
        dtype=model_dtype,
        amp=options.amp,
        channels=options.channels,
        tta=options.tta,
    )
    result: np.ndarray[Any, Any] = merger.result().to(options.dtype).numpy()
    return result
