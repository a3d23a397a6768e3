"""What tiled inference needs to know about a model: its device, dtype and outputs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ._checks import is_int
from .geometry import TileGeometry

__all__ = [
    "batches",
    "check_channels",
    "check_tile_output",
    "model_device_dtype",
    "parse_device",
    "resolve_device",
    "same_device",
]


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first floating-point parameter (CPU, float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def parse_device(device: object) -> torch.device | None:
    """``device`` as a :class:`torch.device` (``None`` stays ``None``); ValueError if bad.

    Example:
        >>> parse_device("cpu"), parse_device(None)
        (device(type='cpu'), None)
    """
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str | int) or isinstance(device, bool):
        raise TypeError(
            f"device must be a torch.device, a string such as 'cuda:0' or None, got "
            f"{type(device).__name__}"
        )
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}"
        ) from e


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same, ``cuda`` matching any ``cuda:k``."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def resolve_device(model: torch.nn.Module, device: object) -> tuple[torch.device, torch.dtype]:
    """Where tiles go and which dtype they take: ``device``, which must be the model's
    own when it has parameters (the model is never moved or copied), or the model's."""
    model_device, dtype = model_device_dtype(model)
    run_device = parse_device(device) or model_device
    if any(True for _ in model.parameters()) and not same_device(run_device, model_device):
        raise ValueError(
            f"device is {str(run_device)!r} but the model's parameters are on "
            f"{str(model_device)!r}: move the model first (model.to({str(run_device)!r})) "
            f"or leave device=None"
        )
    return run_device, dtype


def check_channels(model: torch.nn.Module, channels: int, what: str = "image") -> None:
    """Raises if the model declares ``in_channels`` (as UNet and MONAI's networks do)
    and the input has another number of channels."""
    expected = getattr(model, "in_channels", None)
    if is_int(expected) and expected != channels:
        raise ValueError(
            f"{what} has {channels} channels but the model takes in_channels={expected}"
        )


def check_tile_output(y: object, n: int, geometry: TileGeometry, x_shape: Sequence[int]) -> None:
    """Raises unless ``y`` is the output for ``n`` tiles: ``(n, C_out, *output_size)``
    (valid convolutions) or ``(n, C_out, *input_size)`` (same padding)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(y).__name__}")
    if (
        y.ndim != geometry.ndim + 2
        or y.shape[0] != n
        or tuple(y.shape[2:]) not in (geometry.output_size, geometry.input_size)
    ):
        raise ValueError(
            f"model output must have shape ({n}, C_out, *{geometry.output_size}) "
            f"(output_size) or ({n}, C_out, *{geometry.input_size}) (input_size), got "
            f"{tuple(y.shape)} for input {tuple(x_shape)}; measure the network's geometry "
            "with TileGeometry.from_model(model, input_size)"
        )


def batches(n: int, size: int) -> Iterator[range]:
    """``range`` s of at most ``size`` consecutive indices covering ``range(n)``.

    Example:
        >>> [list(b) for b in batches(5, 2)]
        [[0, 1], [2, 3], [4]]
    """
    for start in range(0, n, size):
        yield range(start, min(start + size, n))
