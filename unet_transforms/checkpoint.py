"""Saving and loading a trained U-Net together with its tile geometry."""

from __future__ import annotations

import inspect
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

import torch

from ._atomic import atomic_write, destination
from ._checks import as_int
from .config import from_config, to_config, to_plain
from .geometry import TileGeometry, as_geometry
from .models import ARG_BOUNDS as _ARG_BOUNDS
from .models import MAX_WIDTH as _MAX_WIDTH

__all__ = ["NORMALIZATION", "load_checkpoint", "read_normalization", "save_checkpoint"]

NORMALIZATION = "normalization"
"""The metadata key of the normalisation record (see :func:`read_normalization`)."""

FORMAT = "unet-transforms/checkpoint-v2"
_FORMAT_V1 = "unet-transforms/checkpoint-v1"  # model_args and geometry lists; still read
_UNET = "unet_transforms.models.UNet"
_UNET_ARGS = (
    "in_channels",
    "out_channels",
    "depth",
    "base_channels",
    "convs_per_level",
    "padding",
    "ndim",
)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    geometry: TileGeometry | Mapping[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> None:
    """Saves a model, the config that builds it, its weights and its tile geometry.

    The model and the geometry are stored as their configs (:func:`~unet_transforms.to_config`):
    a :class:`~unet_transforms.models.UNet` (or any module with ``to_config()``) describes
    itself; any other ``nn.Module`` is saved with ``model_config``, the config that builds
    it (``{"_target_": "monai.networks.nets.UNet", ...}``), which
    :func:`load_checkpoint` builds only when its ``allow`` names the target.

    The file is a plain dict of tensors, numbers and strings, so it loads with
    ``torch.load(weights_only=True)``. It is written atomically: to a temporary file in
    the same folder, flushed to disk, then renamed over ``path``. An error, a full disk,
    ``KeyboardInterrupt`` or SIGTERM during the write leaves ``path`` as it was (an older
    checkpoint stays loadable) and removes the temporary file.

    Args:
        path: Where to write; its folder must exist.
        model: The trained network.
        geometry: The tile geometry to segment with (or a mapping of its arguments).
        metadata: Further plain values to keep. Its ``"normalization"`` entry, if
            any, is the record of how raw pixels become the model's input, which
            ``unet-transforms segment`` applies: ``{"scale": "dtype_max" or a number,
            "mean": [...], "std": [...]}`` (see :func:`read_normalization`); it is
            checked here.
        model_config: The config that builds ``model``, for a model without
            ``to_config()``.

    Raises:
        TypeError: If ``path`` is not a path, ``model`` not a module or without a
            config, ``metadata`` holds other values.
        ValueError: If the folder is missing, ``path`` is a directory, the
            geometry's number of axes differs from a UNet's, or
            ``metadata["normalization"]`` is not a valid record for the model's input
            channels (the message names the field).

    Example:
        >>> import tempfile, os
        >>> from unet_transforms.models import UNet
        >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
        >>> net = UNet(base_channels=2, depth=1)
        >>> save_checkpoint(path, net, net.geometry(input_size=36), metadata={"scale": 0.5})
        >>> model, geometry, meta = load_checkpoint(path)
        >>> geometry, meta["scale"]
        (TileGeometry(input_size=36, output_size=20), 0.5)
    """
    from .models import UNet

    target = destination(path)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    compiled = getattr(model, "_orig_mod", None)  # torch.compile's wrapper
    if isinstance(compiled, torch.nn.Module):
        model = compiled  # its state dict without the wrapper's "_orig_mod." prefix
    geometry = as_geometry(geometry)
    if isinstance(model, UNet) and geometry.ndim != model.ndim:
        raise ValueError(
            f"geometry must have the model's {model.ndim} spatial axes, got a "
            f"{geometry.ndim}-D geometry {geometry!r}"
        )
    if model_config is not None:
        if not isinstance(model_config, Mapping) or not isinstance(
            model_config.get("_target_"), str
        ):
            raise TypeError(
                "model_config must be a mapping with a '_target_' string (the config that "
                f"builds the model), got {model_config!r}"
            )
        config: dict[str, Any] = to_plain(model_config)
    else:
        if not callable(getattr(model, "to_config", None)):
            raise TypeError(
                f"model {type(model).__name__} has no to_config(): pass model_config="
                "{'_target_': 'package.Class', **arguments}, the config that builds it"
            )
        config = to_config(model)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    if metadata is not None and NORMALIZATION in metadata:
        _check_record(metadata[NORMALIZATION], f"metadata[{NORMALIZATION!r}]", _channels(model))
    _check_loadable(dict(metadata or {}))
    data = {
        "format": FORMAT,
        "model": config,
        "state_dict": model.state_dict(),
        "geometry": geometry.to_config(),
        "metadata": dict(metadata or {}),
    }
    with atomic_write(target) as file:
        torch.save(data, file)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    allow: Iterable[str | Callable[..., Any]] = (),
) -> tuple[torch.nn.Module, TileGeometry, dict[str, Any]]:
    """Loads what :func:`save_checkpoint` wrote, after checking it.

    The file is read with ``torch.load(weights_only=True)`` (no code runs), then its
    contents are checked before any model is built: a UNet's arguments are ints within
    bounds, the model the config describes (built on the meta device, without memory)
    has exactly the state dict's tensor names and shapes (so its parameter count matches
    the file's), and the geometry is valid, with a UNet's number of axes. The model's
    config is built by :func:`~unet_transforms.from_config`: the library's own names, or
    a target named in ``allow``, never whatever the file names. Files of the first
    format (``model_args`` and geometry lists) still load.

    Args:
        path: The checkpoint file.
        map_location: The device to put the weights on; it is checked first.
        allow: Further model targets to build (dotted names or callables), e.g.
            ``["monai.networks.nets.UNet"]``.

    Returns:
        ``(model, geometry, metadata)``; the model is in eval mode.

    Raises:
        ValueError: If the file is not a checkpoint of this library, or a field is
            missing, of the wrong type, out of bounds, not allowed or does not fit the
            state dict (the message names the field), ``metadata["normalization"]``
            included; or if ``map_location`` is not a usable device.
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
    device = _check_map_location(map_location)
    where = f"checkpoint {os.fspath(path)!r}"
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
    config, geometry, metadata = _check_metadata(data, where)
    try:
        with torch.device("meta"):  # the described model, without memory
            described = from_config(config, allow=allow)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: model: {e}") from e
    if not isinstance(described, torch.nn.Module):
        raise ValueError(f"{where}: model builds a {type(described).__name__}, not a module")
    state = data["state_dict"]
    _check_state_dict(state, described.state_dict(), where)
    model = described.to_empty(device=device)
    model.load_state_dict(state)
    return model.eval(), geometry, metadata


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
    data: object, where: str
) -> tuple[dict[str, Any], TileGeometry, dict[str, Any]]:
    """Checks a loaded checkpoint's plain fields: ``(model config, geometry, metadata)``.

    Raises ValueError naming the first bad field, before anything is built.
    """
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, _FORMAT_V1):
        raise ValueError(
            f"{where.removeprefix('checkpoint ')} is not a unet-transforms checkpoint "
            f"(expected format {FORMAT!r})"
        )
    field = "model" if data["format"] == FORMAT else "model_args"
    missing = [k for k in (field, "state_dict", "geometry") if k not in data]
    if missing:
        raise ValueError(f"{where} is incomplete: missing {missing}")
    for key in (field, "state_dict", "geometry"):
        if not isinstance(data[key], Mapping):
            raise ValueError(f"{where}: {key} must be a dict, got {type(data[key]).__name__}")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    # the first format stored a UNet's arguments; the second its config
    config = {"_target_": _UNET, **data[field]} if field == "model_args" else dict(data[field])
    ndim = None
    if config.get("_target_") == _UNET:
        args = _check_unet_args(config, field, where)
        config, ndim = {"_target_": _UNET, **args}, args["ndim"]
    stored = data["geometry"]
    if field == "model_args":  # every field was required there
        for key in ("input_size", "output_size", "step"):
            if key not in stored:
                raise ValueError(f"{where}: geometry.{key} is missing")
    try:
        geometry = as_geometry(stored, "geometry")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e
    if ndim is not None and geometry.ndim != ndim:
        raise ValueError(
            f"{where}: geometry must have {ndim} axes ({field}.ndim={ndim}), got {geometry!r}"
        )
    if NORMALIZATION in metadata:
        channels = config.get("in_channels")
        channels = channels if type(channels) is int else None
        try:
            _check_record(metadata[NORMALIZATION], f"metadata[{NORMALIZATION!r}]", channels)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
    return config, geometry, dict(metadata)


def _check_unet_args(config: Mapping[str, Any], field: str, where: str) -> dict[str, int]:
    """A UNet's arguments (defaults filled in) as ints within bounds; ValueError naming the
    field otherwise."""
    from .models import UNet

    defaults = {
        name: p.default
        for name, p in inspect.signature(UNet.__init__).parameters.items()
        if name in _UNET_ARGS
    }
    given = {k: v for k, v in config.items() if k != "_target_"}
    unknown = sorted(map(str, set(given) - set(_UNET_ARGS)))
    if unknown:
        raise ValueError(f"{where}: {field} has unknown fields {unknown}")
    args: dict[str, int] = {}
    for name in _UNET_ARGS:
        if field == "model_args" and name not in given:
            raise ValueError(f"{where}: model_args.{name} is missing")
        value = given.get(name, defaults[name])
        low, high = _ARG_BOUNDS[name]
        try:
            number: int | None = as_int(name, value)
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(
                f"{where}: {field}.{name} must be an int in [{low}, {high}], got {value!r}"
            )
        args[name] = number
    width = args["base_channels"] * 2 ** args["depth"]
    if width > _MAX_WIDTH:
        raise ValueError(
            f"{where}: {field}.base_channels * 2**{field}.depth (the widest layer) "
            f"must be at most {_MAX_WIDTH}, got {args['base_channels']} * 2**{args['depth']} "
            f"= {width}"
        )
    return args


def _check_state_dict(
    state: Mapping[Any, Any], expected: Mapping[str, torch.Tensor], where: str
) -> None:
    """Raises ValueError unless ``state`` has exactly ``expected`` 's names and shapes, and
    tensors of the same kind (floating point where the model's are; integer buffers such
    as BatchNorm's ``num_batches_tracked`` of the model's dtype)."""
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{where}: state_dict[{name!r}] must be a tensor, got {type(value).__name__}"
            )
    missing = [name for name in expected if name not in state]
    unexpected = [str(name) for name in state if name not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{where}: state_dict does not fit the model config: missing {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{'...' if len(unexpected) > 3 else ''}"
        )
    for name, tensor in expected.items():
        value = state[name]
        if tensor.is_floating_point() and not value.is_floating_point():
            raise ValueError(
                f"{where}: state_dict[{name!r}] must be a floating-point tensor, got {value.dtype}"
            )
        if not tensor.is_floating_point() and value.dtype != tensor.dtype:
            raise ValueError(
                f"{where}: state_dict[{name!r}] must be a {tensor.dtype} tensor (as the "
                f"model's), got {value.dtype}"
            )
        if value.shape != tensor.shape:
            described = sum(t.numel() for t in expected.values())
            stored = sum(t.numel() for t in state.values())
            raise ValueError(
                f"{where}: state_dict[{name!r}] has shape {tuple(state[name].shape)}, "
                f"the model config gives {tuple(tensor.shape)} (it describes a model of "
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


def read_normalization(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The normalisation record of a checkpoint's metadata, checked and spelled out.

    The record says how raw pixels become the model's input, per channel ``c``::

        x[c] = (pixels[c] / scale - mean[c]) / std[c]

    It is ``metadata["normalization"]`` (:data:`NORMALIZATION`) =
    ``{"scale": ..., "mean": [...], "std": [...]}``:

    - ``scale``: ``"dtype_max"`` (integer images divided by their dtype's maximum, 255
      for 8-bit and 65535 for 16-bit; float images as they are) or a positive number
      every image is divided by (``1`` for none).
    - ``mean``, ``std``: one number per input channel of the model, or one number (or
      a one-element list) for every channel; ``std`` positive. ``0`` and ``1`` for no
      normalisation.

    Checkpoints that store flat ``metadata["mean"]`` and ``metadata["std"]`` (numbers
    or lists, as older versions of the example wrote) are read as
    ``{"scale": "dtype_max", "mean": ..., "std": ...}``.

    Args:
        metadata: The third value :func:`load_checkpoint` returns.

    Returns:
        ``{"scale": "dtype_max" | float, "mean": [float, ...], "std": [float, ...]}``
        (``mean`` and ``std`` as lists of the same length), or ``None`` if the metadata
        has neither a record nor flat ``mean`` and ``std``.

    Raises:
        TypeError: If ``metadata`` is not a mapping.
        ValueError: If the record (or the flat ``mean``/``std``) is malformed; the
            message names the field.

    Example:
        >>> read_normalization({"normalization": {"scale": "dtype_max", "mean": [0.5, 0.4],
        ...                                       "std": 0.25}})
        {'scale': 'dtype_max', 'mean': [0.5, 0.4], 'std': [0.25, 0.25]}
        >>> read_normalization({"mean": 0.38, "std": 0.21})  # the older flat fields
        {'scale': 'dtype_max', 'mean': [0.38], 'std': [0.21]}
        >>> read_normalization({}) is None
        True
    """
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    if NORMALIZATION in metadata:
        return _check_record(metadata[NORMALIZATION], f"metadata[{NORMALIZATION!r}]", None)
    if "mean" in metadata and "std" in metadata:
        mean = _check_numbers(metadata["mean"], "metadata['mean']", positive=False)
        std = _check_numbers(metadata["std"], "metadata['std']", positive=True)
        return {"scale": "dtype_max", **_broadcast_pair(mean, std, "metadata['mean']")}
    return None


_RECORD_FIELDS = ("scale", "mean", "std")


def _channels(model: torch.nn.Module) -> int | None:
    channels = getattr(model, "in_channels", None)
    return channels if type(channels) is int else None


def _check_record(record: object, name: str, channels: int | None) -> dict[str, Any]:
    """A normalisation record spelled out; ValueError naming the field otherwise.

    ``channels``: the model's input channels, when known; ``mean`` and ``std`` must
    then have one value or that many.
    """
    if not isinstance(record, Mapping):
        raise ValueError(
            f"{name} must be a dict {{'scale': 'dtype_max' or a number, 'mean': [...], "
            f"'std': [...]}}, got {type(record).__name__}"
        )
    missing = [field for field in _RECORD_FIELDS if field not in record]
    unknown = sorted(str(field) for field in record if field not in _RECORD_FIELDS)
    if missing or unknown:
        raise ValueError(
            f"{name} must have exactly the fields {list(_RECORD_FIELDS)}, got "
            f"{sorted(map(str, record))} (missing {missing}, unknown {unknown})"
        )
    scale = record["scale"]
    if not (isinstance(scale, str) and scale == "dtype_max"):
        if not (_is_finite(scale) and scale > 0):
            raise ValueError(
                f"{name}['scale'] must be 'dtype_max' or a positive finite number, got {scale!r}"
            )
        scale = float(scale)
    mean = _check_numbers(record["mean"], f"{name}['mean']", positive=False)
    std = _check_numbers(record["std"], f"{name}['std']", positive=True)
    for field, values in (("mean", mean), ("std", std)):
        if channels is not None and len(values) not in (1, channels):
            raise ValueError(
                f"{name}[{field!r}] must have one value or one per input channel of the "
                f"model ({channels}), got {len(values)}"
            )
    return {"scale": scale, **_broadcast_pair(mean, std, f"{name}['mean']")}


def _is_finite(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or float (not a bool) with a finite float value."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _check_numbers(value: object, name: str, *, positive: bool) -> list[float]:
    """A number or a non-empty list/tuple of finite numbers (positive ones if asked)."""
    values: list[Any] = list(value) if isinstance(value, list | tuple) else [value]
    kind = "positive finite numbers" if positive else "finite numbers"
    if not values or not all(_is_finite(v) and (v > 0 or not positive) for v in values):
        raise ValueError(
            f"{name} must be a number or a non-empty list of {kind} (one per channel), "
            f"got {value!r}"
        )
    return [float(v) for v in values]


def _broadcast_pair(mean: list[float], std: list[float], name: str) -> dict[str, list[float]]:
    """``mean`` and ``std`` at the same length: a single value repeats."""
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise ValueError(
            f"{name} and its std must have the same number of channels, got "
            f"{len(mean)} and {len(std)}"
        )
    n = max(len(mean), len(std))
    return {"mean": mean * (n // len(mean)), "std": std * (n // len(std))}
