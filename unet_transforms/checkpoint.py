"""Saving and loading a trained U-Net together with its tile geometry."""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ._atomic import atomic_write, destination
from .geometry import TileGeometry

__all__ = ["load_checkpoint", "save_checkpoint"]

FORMAT = "unet-transforms/checkpoint-v1"
_UNET_ARGS = (
    "in_channels",
    "out_channels",
    "depth",
    "base_channels",
    "convs_per_level",
    "padding",
    "ndim",
)
# Bounds of a loadable checkpoint's model_args, checked before anything is built: far
# beyond any trained U-Net (the paper's widest layer has 1024 channels), tight enough
# that describing the model on the meta device is instant and its sizes fit in int64.
_MAX_CHANNELS = 1 << 16
_MAX_WIDTH = 1 << 20  # base_channels * 2**depth, the widest layer
_MAX_CONVS_PER_LEVEL = 16
_ARG_BOUNDS = {
    "in_channels": (1, _MAX_CHANNELS),
    "out_channels": (1, _MAX_CHANNELS),
    "depth": (0, 20),
    "base_channels": (1, _MAX_WIDTH),
    "convs_per_level": (1, _MAX_CONVS_PER_LEVEL),
    "padding": (0, 1),
    "ndim": (2, 3),
}
_GEOMETRY_KEYS = ("input_size", "output_size", "step")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    geometry: TileGeometry,
    *,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Saves a :class:`~unet_transforms.models.UNet`, its constructor arguments and geometry.

    The file is a plain dict of tensors, numbers and strings, so it loads with
    ``torch.load(weights_only=True)``. It is written atomically: to a temporary file in
    the same folder, flushed to disk, then renamed over ``path``. An error, a full disk,
    ``KeyboardInterrupt`` or SIGTERM during the write leaves ``path`` as it was (an older
    checkpoint stays loadable) and removes the temporary file.

    Args:
        path: Where to write: a file in an existing folder.
        model: The trained ``UNet``.
        geometry: The tile geometry to segment with.
        metadata: Extra values to keep (e.g. the input scaling): anything that loads
            with ``torch.load(weights_only=True)``, such as numbers, strings, lists,
            tuples, dicts and tensors (numpy scalars and arrays must be converted).

    Raises:
        TypeError: If ``path`` is not a str or path-like, ``model`` not a ``UNet``,
            ``geometry`` not a ``TileGeometry``, or ``metadata`` holds other values.
        ValueError: If ``path`` is a directory or its folder does not exist, or the
            geometry's number of axes differs from the model's.
        OSError: If the file cannot be written (``path`` is then unchanged).

    Example:
        >>> import tempfile, os
        >>> from unet_transforms.models import UNet
        >>> net = UNet(base_channels=2, depth=1)
        >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
        >>> save_checkpoint(path, net, net.geometry(input_size=36), metadata={"scale": 0.5})
        >>> model, geometry, meta = load_checkpoint(path)
        >>> geometry.output_size, meta["scale"]
        ((20, 20), 0.5)
    """
    from .models import UNet

    target = destination(path)
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a unet_transforms.models.UNet, got {type(model).__name__}")
    if not isinstance(geometry, TileGeometry):
        raise TypeError(f"geometry must be a TileGeometry, got {type(geometry).__name__}")
    if geometry.ndim != model.ndim:
        raise ValueError(
            f"geometry must have the model's {model.ndim} spatial axes, got a "
            f"{geometry.ndim}-D geometry {geometry!r}"
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    _check_loadable(dict(metadata or {}))
    data = {
        "format": FORMAT,
        "model_args": {name: getattr(model, name) for name in _UNET_ARGS},
        "state_dict": model.state_dict(),
        "geometry": _geometry_data(geometry),
        "metadata": dict(metadata or {}),
    }
    with atomic_write(target) as file:
        torch.save(data, file)


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, TileGeometry, dict[str, Any]]:
    """Loads what :func:`save_checkpoint` wrote, after checking it.

    The file is read with ``torch.load(weights_only=True)`` (no code runs), then its
    contents are checked before any model is built: every ``model_args`` field is an
    int within bounds, the model they describe has exactly the state dict's tensor
    names and shapes (so its parameter count matches the file's), and the geometry has
    all its fields, with the model's number of axes.

    Args:
        path: The checkpoint file.
        map_location: The device to put the weights on; it is checked first.

    Returns:
        ``(model, geometry, metadata)``; the model is in eval mode.

    Raises:
        ValueError: If the file is not a checkpoint of this library, or a field is
            missing, of the wrong type, out of bounds or does not fit the state dict (the
            message names the field); or if ``map_location`` is not a usable device.
        TypeError: If ``map_location`` is not a str or ``torch.device``.
        FileNotFoundError: If the file does not exist.

    Example:
        >>> import tempfile, os
        >>> from unet_transforms.models import UNet
        >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
        >>> net = UNet(in_channels=3, out_channels=4, base_channels=2, depth=2)
        >>> save_checkpoint(path, net, net.geometry(input_size=60))
        >>> model, geometry, metadata = load_checkpoint(path)
        >>> model.out_channels, geometry.input_size, geometry.output_size, model.training
        (4, (60, 60), (20, 20), False)
    """
    from .models import UNet

    device = _check_map_location(map_location)
    try:
        with warnings.catch_warnings():  # torch warns about some non-checkpoint files
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        # torch's own text (a key, a pickling essay) says nothing useful about a file
        # that is not a checkpoint; it stays available as the exception's cause
        raise ValueError(
            f"cannot read checkpoint {os.fspath(path)!r}: not a file written by "
            f"save_checkpoint (torch.load raised {type(e).__name__})"
        ) from e
    args, geometry, metadata = _check_metadata(data, os.fspath(path))
    with torch.device("meta"):  # the described model, without memory
        described = UNet(**args)
    state = data["state_dict"]
    _check_state_dict(state, described.state_dict(), os.fspath(path))
    model = described.to_empty(device=device)
    model.load_state_dict(state)
    return model.eval(), geometry, metadata


def _geometry_data(geometry: TileGeometry) -> dict[str, list[int]]:
    """The geometry as the checkpoint stores it: plain lists of ints."""
    return {key: list(getattr(geometry, key)) for key in _GEOMETRY_KEYS}


def _check_map_location(map_location: object) -> torch.device:
    """``map_location`` as a device that exists here; ValueError naming it otherwise.

    Checked before the file is read, so that an unusable device is not reported as a
    broken file.
    """
    if not isinstance(map_location, str | torch.device):
        raise TypeError(
            "map_location must be a torch.device or a string such as 'cpu' or 'cuda:0', "
            f"got {type(map_location).__name__}"
        )
    try:
        device = torch.device(map_location)
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"map_location must name a torch device such as 'cpu' or 'cuda:0', got "
            f"{map_location!r}"
        ) from e
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # no driver, torch built without it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"map_location={str(device)!r} is not available on this machine: {first}"
        ) from e
    return device


def _check_metadata(
    data: object, path: str
) -> tuple[dict[str, int], TileGeometry, dict[str, Any]]:
    """Checks a loaded checkpoint's plain fields: ``(model_args, geometry, metadata)``.

    Raises ValueError naming the first bad field, before anything is built.
    """
    where = f"checkpoint {path!r}"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f"{path!r} is not a unet-transforms checkpoint (expected format {FORMAT!r})"
        )
    missing = [k for k in ("model_args", "state_dict", "geometry") if k not in data]
    if missing:
        raise ValueError(f"{where} is incomplete: missing {missing}")
    for key in ("model_args", "state_dict", "geometry"):
        if not isinstance(data[key], Mapping):
            raise ValueError(f"{where}: {key} must be a dict, got {type(data[key]).__name__}")
    given = data["model_args"]
    args: dict[str, int] = {}
    for name in _UNET_ARGS:
        if name not in given:
            raise ValueError(f"{where}: model_args.{name} is missing")
        low, high = _ARG_BOUNDS[name]
        value = given[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(
                f"{where}: model_args.{name} must be an int in [{low}, {high}], got {value!r}"
            )
        args[name] = value
    unknown = sorted(map(str, set(given) - set(_UNET_ARGS)))
    if unknown:
        raise ValueError(f"{where}: model_args has unknown fields {unknown}")
    width = args["base_channels"] * 2 ** args["depth"]
    if width > _MAX_WIDTH:
        raise ValueError(
            f"{where}: model_args.base_channels * 2**model_args.depth (the widest layer) "
            f"must be at most {_MAX_WIDTH}, got {args['base_channels']} * 2**{args['depth']} "
            f"= {width}"
        )
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    return args, _check_geometry(data["geometry"], args["ndim"], where), dict(metadata)


def _check_geometry(stored: Mapping[Any, Any], ndim: int, where: str) -> TileGeometry:
    """The stored geometry as a TileGeometry with ``ndim`` axes; ValueError naming the field."""
    sizes = {}
    for key in _GEOMETRY_KEYS:
        if key not in stored:
            raise ValueError(f"{where}: geometry.{key} is missing")
        value = stored[key]
        if (
            not isinstance(value, list | tuple)
            or len(value) != ndim
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(
                f"{where}: geometry.{key} must be a list of {ndim} ints (model_args.ndim="
                f"{ndim}), got {value!r}"
            )
        sizes[key] = list(value)
    try:
        return TileGeometry(sizes["input_size"], sizes["output_size"], step=sizes["step"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: geometry: {e}") from e


def _check_state_dict(
    state: Mapping[Any, Any], expected: Mapping[str, torch.Tensor], path: str
) -> None:
    """Raises ValueError unless ``state`` has exactly ``expected`` 's names and shapes."""
    where = f"checkpoint {path!r}"
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"{where}: state_dict[{name!r}] must be a floating-point tensor, got {kind}"
            )
    missing = [name for name in expected if name not in state]
    unexpected = [str(name) for name in state if name not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{where}: state_dict does not fit model_args: missing {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{'...' if len(unexpected) > 3 else ''}"
        )
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            described = sum(t.numel() for t in expected.values())
            stored = sum(t.numel() for t in state.values())
            raise ValueError(
                f"{where}: state_dict[{name!r}] has shape {tuple(state[name].shape)}, "
                f"model_args give {tuple(tensor.shape)} (they describe a UNet of "
                f"{described} parameters, the state_dict holds {stored})"
            )


def _check_loadable(metadata: dict[str, Any]) -> None:
    """Raises unless ``metadata`` reads back with ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(metadata, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except Exception as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        detail = f"found {found.group(1)}" if found else type(e).__name__
        raise TypeError(
            "metadata must hold only values that load with torch.load(weights_only=True) "
            "(numbers, strings, lists, tuples, dicts, tensors; numpy values must be "
            f"converted, e.g. with float() or .tolist()): {detail}"
        ) from e
