"""Saving and loading a trained U-Net together with its tile geometry."""

from __future__ import annotations

import io
import os
import re
import warnings
from typing import Any

import torch

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


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    geometry: TileGeometry,
    *,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Saves a :class:`~unet_transforms.models.UNet`, its constructor arguments and geometry.

    The file is a plain dict of tensors, numbers and strings, so it loads with
    ``torch.load(weights_only=True)``.

    Args:
        path: Where to write.
        model: The trained ``UNet``.
        geometry: The tile geometry to segment with.
        metadata: Extra values to keep (e.g. the input scaling): anything that loads
            with ``torch.load(weights_only=True)``, such as numbers, strings, lists,
            tuples, dicts and tensors (numpy scalars and arrays must be converted).

    Raises:
        TypeError: If ``model`` is not a ``UNet``, ``geometry`` not a ``TileGeometry``,
            or ``metadata`` holds other values.
        ValueError: If the geometry's number of axes differs from the model's.

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
    torch.save(
        {
            "format": FORMAT,
            "model_args": {name: getattr(model, name) for name in _UNET_ARGS},
            "state_dict": model.state_dict(),
            "geometry": {
                "input_size": list(geometry.input_size),
                "output_size": list(geometry.output_size),
                "step": list(geometry.step),
            },
            "metadata": dict(metadata or {}),
        },
        path,
    )


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, TileGeometry, dict[str, Any]]:
    """Loads what :func:`save_checkpoint` wrote.

    Args:
        path: The checkpoint file.
        map_location: Where to put the weights.

    Returns:
        ``(model, geometry, metadata)``; the model is in eval mode.

    Raises:
        ValueError: If the file is not a checkpoint of this library.
        FileNotFoundError: If the file does not exist.

    Example:
        >>> import tempfile, os
        >>> from unet_transforms.models import UNet
        >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
        >>> net = UNet(in_channels=3, out_channels=4, base_channels=2, depth=2)
        >>> save_checkpoint(path, net, net.geometry(input_size=60))
        >>> model, geometry, metadata = load_checkpoint(path)
        >>> model.out_channels, geometry, metadata, model.training
        (4, TileGeometry(60, 20), {}, False)
    """
    from .models import UNet

    try:
        with warnings.catch_warnings():  # torch warns about some non-checkpoint files
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        # torch's own text (a key, a pickling essay) says nothing useful about a file
        # that is not a checkpoint; it stays available as the exception's cause
        raise ValueError(
            f"cannot read checkpoint {os.fspath(path)!r}: not a file written by "
            f"save_checkpoint (torch.load raised {type(e).__name__})"
        ) from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f"{os.fspath(path)!r} is not a unet-transforms checkpoint (expected format {FORMAT!r})"
        )
    missing = [k for k in ("model_args", "state_dict", "geometry") if k not in data]
    if missing:
        raise ValueError(f"checkpoint {os.fspath(path)!r} is incomplete: missing {missing}")
    args = data["model_args"]
    model = UNet(
        args["in_channels"],
        args["out_channels"],
        depth=args["depth"],
        base_channels=args["base_channels"],
        convs_per_level=args["convs_per_level"],
        padding=args["padding"],
        ndim=args["ndim"],
    )
    model.load_state_dict(data["state_dict"])
    model.eval()
    g = data["geometry"]
    geometry = TileGeometry(g["input_size"], g["output_size"], step=g["step"])
    return model, geometry, dict(data.get("metadata", {}))


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
