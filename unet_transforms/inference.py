"""Tiled inference: segment an image of any size with a fixed-size network, exactly."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from ._checks import is_int
from ._model import (
    check_batch_size,
    check_channels,
    check_flag,
    check_image,
    check_model,
    resolve_device,
)
from ._runner import TTA, run_tiles, tta_variants
from .functional._mirror import MirrorMode, check_mode, empty_like_shape
from .geometry import TileGeometry
from .grid import Align, TileGrid
from .merging import Blend, Output, TileMerger

__all__ = ["TTA", "default_batch_size", "predict_tiled"]


def default_batch_size(device: torch.device) -> int:
    """Tiles per forward call when ``batch_size`` is not given.

    On the CPU one tile at a time is fastest per tile: a U-Net's activations for one
    572² tile already exceed the CPU caches, and bigger batches only add memory traffic
    (measured in ``benchmarks/bench_inference.py``). Accelerators need several tiles
    per call to be kept busy.

    Example:
        >>> default_batch_size(torch.device("cpu"))
        1
    """
    return 1 if device.type == "cpu" else 8


def _spatial_ndim_check(image: Any, geometry: TileGeometry) -> tuple[tuple[int, ...], bool]:
    shape = getattr(image, "shape", None)
    if shape is None or not hasattr(image, "__getitem__"):
        raise TypeError(
            "image must be a tensor, a numpy array or an array-like with .shape and slicing "
            f"(zarr, h5py), got {type(image).__name__}"
        )
    shape = tuple(int(s) for s in shape)
    nd = geometry.ndim
    if len(shape) == nd + 1:
        batched = False
    elif len(shape) == nd + 2 and isinstance(image, torch.Tensor):
        batched = True
    else:
        expected = f"(C, {', '.join(['D', 'H', 'W'][-nd:])})"
        if isinstance(image, torch.Tensor):
            expected += f" or (B, C, {', '.join(['D', 'H', 'W'][-nd:])})"
        raise ValueError(f"image must have shape {expected} for a {nd}-D geometry, got {shape}")
    if 0 in shape:
        raise ValueError(f"image must not be empty, got shape {shape}")
    return shape, batched


def predict_tiled(
    model: torch.nn.Module,
    image: Any,
    geometry: TileGeometry,
    *,
    batch_size: int | None = None,
    mode: MirrorMode = "reflect",
    align: Align = "center",
    device: torch.device | str | None = None,
    amp: bool = False,
    progress: bool = False,
    blend: Blend | torch.Tensor = "crop",
    output: Output = "logits",
    out: Any = None,
    tta: TTA | None = None,
    workers: int = 1,
    resume: bool = False,
) -> Any:
    """Segments an image of any size tile by tile with the overlap-tile strategy.

    Tiles are read lazily from the unpadded image (the mirror-extrapolated canvas is
    never built, and only ``batch_size`` tiles exist at a time), moved to ``device``,
    run under :func:`torch.inference_mode` and handed to a
    :class:`~unet_transforms.TileMerger`, which writes them into one preallocated
    result (or ``out``), so peak memory is about the result plus a few tiles'
    activations whatever the image size (and the batch). With ``geometry =
    TileGeometry.unet(...)`` (or ``UNet.geometry(...)``), a valid-convolution U-Net and
    ``blend="crop"``, the result equals one forward pass of the network over the whole
    mirror-extrapolated image, exactly.

    The model's output per tile may have the ``output_size`` of the geometry (a
    valid-convolution network) or its ``input_size`` (a same-padding network such as
    MONAI's or segmentation_models_pytorch's U-Nets; each tile's output is then
    centre-cropped, which discards the border predictions). The model is left in the
    train/eval mode the caller set: call ``model.eval()`` first for inference.

    Args:
        model: Maps ``(N, C, *input_size)`` to ``(N, C_out, *output_size)`` or
            ``(N, C_out, *input_size)``.
        image: ``(C, *spatial)`` tensor, numpy array, memory map or array-like with
            ``.shape`` and numpy-style slicing (zarr, h5py); or a batched
            ``(B, C, *spatial)`` tensor. ``spatial`` has ``geometry.ndim`` axes. Real
            values only (complex images are refused).
        geometry: The network's :class:`TileGeometry`.
        batch_size: Tiles per forward call; defaults to :func:`default_batch_size`
            (1 on the CPU, where it is fastest per tile; 8 on accelerators). CPU
            convolution kernels round differently for different batch sizes, so
            results of different batch sizes agree to float tolerance, not bitwise.
        mode: Mirroring at the image border: ``"reflect"`` or ``"symmetric"``.
        align: Grid alignment: ``"center"`` or ``"start"``.
        device: Where the model runs: tiles are moved there batch by batch. Defaults to
            the device of the model's parameters, and must be that device when the
            model has parameters (the model is not moved or copied). The result stays
            on the image's device (the CPU for arrays).
        amp: Run the model under :func:`torch.autocast` (float16 on CUDA, bfloat16 on
            the CPU); float outputs are merged as float32.
        progress: Show a tqdm progress bar over tiles (needs the ``progress`` extra).
        blend: How overlapping tile outputs are merged: ``"crop"`` (each pixel from the
            keep window of one tile, exact), ``"gaussian"``, ``"hann"`` or a weight
            tensor of the output tile's spatial shape; see :class:`TileMerger`.
        output: ``"logits"``, ``"probabilities"`` (softmax over the channels, sigmoid
            for one channel) or ``"labels"`` (argmax per pixel as uint8 up to 256
            classes, int16 up to 32,768, int32 beyond; one channel: sigmoid > 0.5).
        out: An array-like to write the result into, tile by tile (a tensor, numpy
            memory map, zarr or h5py array of the result's shape and a dtype that holds
            it without loss); it is returned. A chunked ``out`` (zarr, h5py) is written
            one whole storage unit (zarr shard or chunk) at a time; with
            ``align="start"`` and units that are multiples of the step, each tile's
            output lies in one unit.
        tta: Test-time augmentation: ``None`` (each tile once), ``"flips"`` (every
            tile in all ``2**ndim`` flips) or ``"d4"`` (2-D square tiles: the 4
            rotations by 90° of the tile and of its mirror image, 8 in all). Each
            variant's output is transformed back and the ``k`` outputs (raw logits) are
            averaged per tile before merging and ``output`` post-processing; the cost
            is ``k`` forwards per tile (``batch_size`` counts forwards). With a
            ``TileGeometry.unet`` geometry this equals the average over the same
            transforms of one forward pass over the whole transformed
            mirror-extrapolated image (``docs/inference.md``).
        workers: Forward calls run at once, each in a thread of its own with its
            share of torch's threads (``torch.get_num_threads() // workers`` during the
            call, restored afterwards); tiles are still read and merged in order, so
            the result equals that of one worker with ``torch.get_num_threads() //
            workers`` threads (torch's kernels may round differently with another
            thread count: to float tolerance, as with ``batch_size``). On a CPU,
            ``workers=2`` with one torch thread each uses two cores better than one
            call with two threads (``benchmarks/bench_inference.py``). With one
            worker and no ``tta``, an image that is not in memory (memory map, zarr,
            h5py) is read a batch ahead by a reader thread.
        resume: With a zarr ``out`` that an interrupted run of the same call was
            writing into: the storage units already stored are kept and their tiles
            skipped (zarr stores a unit whole or not at all), so the result equals an
            uninterrupted run. Pass it on the first run too: units holding only the fill
            value are then stored as well, and count as complete.

    Returns:
        ``(C_out, *spatial)`` (``spatial`` for labels), with a leading ``B`` for a
        batched tensor; ``out`` when given.

    Raises:
        TypeError: If ``image`` is not array-like or complex, ``model`` is not a module,
            ``amp``/``progress`` are not bools, ``device`` is not a ``torch.device``, str
            or None, or ``out`` cannot hold the result.
        ValueError: If the image's shape does not fit the geometry, ``batch_size`` is not
            positive, ``device`` is not a device or not the model's, the model or the
            image is on the meta device, the model returns an unexpected shape,
            ``blend``/``output``/``tta`` are unknown, ``tta="d4"`` is asked for tiles
            that are not 2-D squares, or ``resume=True`` is given without a zarr ``out``
            or with a batched image.

    Example:
        >>> import torch
        >>> net = torch.nn.Conv2d(1, 2, kernel_size=5).eval()  # loses 2 px per side
        >>> image = torch.rand(1, 100, 70)
        >>> out = predict_tiled(net, image, TileGeometry(36, 32))
        >>> out.shape
        torch.Size([2, 100, 70])
        >>> from unet_transforms import mirror_pad
        >>> whole = net(mirror_pad(image, [(2, 2), (2, 2)])[None])[0]
        >>> torch.allclose(out, whole, atol=1e-6)
        True
        >>> labels = predict_tiled(net, image, TileGeometry(36, 32), output="labels")
        >>> labels.dtype, torch.equal(labels, out.argmax(0).byte())
        (torch.uint8, True)
        >>> flips = predict_tiled(net, image, TileGeometry(36, 32), tta="flips")
        >>> whole = [net(mirror_pad(image, [(2, 2), (2, 2)]).flip(d)[None])[0].flip(d)
        ...          for d in [(), (-1,), (-2,), (-2, -1)]]
        >>> torch.allclose(flips, sum(whole) / 4, atol=1e-6)
        True
    """
    check_model(model)
    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    check_mode(mode)
    variants = tta_variants(tta, geometry)
    if not is_int(workers) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    amp = check_flag("amp", amp)
    progress = check_flag("progress", progress)
    resume = check_flag("resume", resume)
    shape, batched = _spatial_ndim_check(image, geometry)
    if resume and batched:
        raise ValueError(
            "resume=True takes one (C, *spatial) image, got a batched image of shape "
            f"{shape}: predict each sample into its own zarr array"
        )
    check_image(image)
    check_channels(model, shape[1] if batched else shape[0])
    run_device, model_dtype = resolve_device(model, device)
    batch_size = check_batch_size(batch_size) or default_batch_size(run_device)
    grid = TileGrid(shape[-geometry.ndim :], geometry, align=align)
    result_device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    options: dict[str, Any] = {"blend": blend, "output": output, "device": result_device}
    if batched:
        mergers: list[TileMerger] = []
        batch = _BatchResult(shape[0], out)
        for b in range(shape[0]):
            mergers.append(
                TileMerger(grid, out=batch.sample(b), **options)
                if out is not None
                else _SampleMerger(grid, batch, b, **options)
            )
    else:
        mergers = [TileMerger(grid, out=out, resume=resume, **options)]
    samples = [image[b] for b in range(shape[0])] if batched else [image]
    total = sum(len(merger.tile_indices()) for merger in mergers)
    with _progress(total, progress) as bar:
        for sample, merger in zip(samples, mergers, strict=True):
            run_tiles(
                model,
                sample,
                merger,
                batch_size=batch_size,
                mode=mode,
                device=run_device,
                dtype=model_dtype,
                amp=amp,
                on_batch=bar.update if progress else None,
                tta=variants,
                workers=workers,
            )
    if batched:
        for merger in mergers:
            merger.result()  # every tile is there
        return out if out is not None else batch.full
    return mergers[0].result()


class _BatchResult:
    """The one result of a batched prediction; each sample's merger writes into its slice."""

    def __init__(self, size: int, out: Any) -> None:
        if out is not None and (
            not hasattr(out, "shape") or len(out.shape) < 1 or int(out.shape[0]) != size
        ):
            raise ValueError(
                f"out must have the batch size {size} as its first axis, got shape "
                f"{tuple(getattr(out, 'shape', ()))}"
            )
        self.size, self.out = size, out
        self.full: Any = None

    def sample(self, b: int) -> Any:
        if isinstance(self.out, torch.Tensor | np.ndarray):
            return self.out[b]  # a view
        return _Indexed(self.out, b)

    def allocate(
        self,
        b: int,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        zeros: bool,
    ) -> torch.Tensor:
        if self.full is None:  # the samples' mergers are alike: the first one allocates
            with torch.inference_mode(False):
                self.full = empty_like_shape((self.size, *shape), dtype, device, zeros)
        view: torch.Tensor = self.full[b]
        return view


class _SampleMerger(TileMerger):
    """A sample's merger that writes into the batch's one result, allocated once."""

    def __init__(self, grid: TileGrid, batch: _BatchResult, b: int, **options: Any) -> None:
        super().__init__(grid, **options)
        self._batch, self._b = batch, b

    def _allocate(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, zeros: bool
    ) -> Any:
        return self._batch.allocate(self._b, shape, dtype, device, zeros)


class _Indexed:
    """``target[b]`` of an array-like that has no views (zarr, h5py), for writing."""

    def __init__(self, target: Any, b: int) -> None:
        self.target, self.b = target, b
        self.shape = tuple(target.shape[1:])
        self.dtype = target.dtype

    def __setitem__(self, index: tuple[Any, ...], value: Any) -> None:
        spatial = index[1:] if index and index[0] is Ellipsis else index
        lead = (slice(None),) * (len(self.shape) - len(spatial))
        self.target[(self.b, *lead, *spatial)] = value


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "progress=True needs tqdm: pip install 'unet-transforms[progress]'"
        ) from e
    return tqdm(total=total, unit="tile", desc="predict_tiled")
