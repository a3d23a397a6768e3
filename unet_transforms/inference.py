"""Tiled inference: segment an image of any size with a fixed-size network, exactly."""

from __future__ import annotations

import contextlib
import operator
from typing import Any

import torch

from ._checks import is_int
from ._model import batches, check_channels, check_tile_output, resolve_device
from .functional._mirror import MirrorMode, check_mode, empty_like_shape
from .geometry import TileGeometry
from .grid import Align, TileGrid

__all__ = ["default_batch_size", "predict_tiled"]


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
) -> torch.Tensor:
    """Segments an image of any size tile by tile with the overlap-tile strategy.

    Tiles are read lazily from the unpadded image (the mirror-extrapolated canvas is
    never built, and only ``batch_size`` tiles exist at a time), moved to ``device``,
    run under :func:`torch.inference_mode` and written straight into a preallocated
    result, so peak memory is about the result plus a few tiles' activations whatever
    the image size. With ``geometry = TileGeometry.unet(...)`` (or
    ``UNet.geometry(...)``) and a valid-convolution U-Net, the result equals one forward
    pass of the network over the whole mirror-extrapolated image, exactly.

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
            ``(B, C, *spatial)`` tensor. ``spatial`` has ``geometry.ndim`` axes.
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
            the CPU); the result is float32.
        progress: Show a tqdm progress bar over tiles (needs the ``progress`` extra).

    Returns:
        ``(C_out, *spatial)``, or ``(B, C_out, *spatial)`` for a batched tensor.

    Raises:
        TypeError: If ``image`` is not array-like or ``model`` is not a module.
        ValueError: If the image's shape does not fit the geometry, ``batch_size`` is not
            positive, ``device`` is not a device or not the model's, or the model
            returns an unexpected shape.

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
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    check_mode(mode)
    shape, batched = _spatial_ndim_check(image, geometry)
    check_channels(model, shape[1] if batched else shape[0])
    run_device, model_dtype = resolve_device(model, device)
    if batch_size is None:
        batch_size = default_batch_size(run_device)
    if not is_int(batch_size) or operator.index(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = operator.index(batch_size)
    grid = TileGrid(shape[-geometry.ndim :], geometry, align=align)
    if batched:
        results = [
            _predict_one(
                model, image[b], grid, batch_size, mode, run_device, model_dtype, amp, progress
            )
            for b in range(shape[0])
        ]
        return torch.stack(results)
    return _predict_one(
        model, image, grid, batch_size, mode, run_device, model_dtype, amp, progress
    )


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


def _predict_one(
    model: torch.nn.Module,
    image: Any,
    grid: TileGrid,
    batch_size: int,
    mode: MirrorMode,
    device: torch.device,
    dtype: torch.dtype,
    amp: bool,
    progress: bool,
) -> torch.Tensor:
    geometry = grid.geometry
    result_device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    result: torch.Tensor | None = None
    autocast = torch.autocast(device_type=device.type) if amp else contextlib.nullcontext()
    with torch.inference_mode(), _progress(len(grid), progress) as bar:
        for batch in batches(len(grid), batch_size):
            tiles = [grid.extract(image, i, mode) for i in batch]
            x = torch.stack(tiles) if len(tiles) > 1 else tiles[0].unsqueeze(0)
            x = x.to(device=device, dtype=dtype, non_blocking=True)
            with autocast:
                y = model(x)
            check_tile_output(y, len(batch), geometry, x.shape)
            if result is None:
                out_dtype = torch.float32 if amp and y.is_floating_point() else y.dtype
                with torch.inference_mode(False):  # a normal tensor, usable with autograd
                    result = empty_like_shape(
                        (y.shape[1], *grid.image_size), out_dtype, result_device
                    )
            for j, i in enumerate(batch):
                grid.paste(result, i, y[j])
            if progress:
                bar.update(len(batch))
    assert result is not None
    return result
