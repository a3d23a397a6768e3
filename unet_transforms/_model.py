"""What tiled inference needs to know about a model: its device, dtype and outputs."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ._checks import is_int
from .geometry import TileGeometry

__all__ = [
    "batches",
    "check_batch_size",
    "check_channels",
    "check_flag",
    "check_image",
    "check_model",
    "check_tile_output",
    "model_device_dtype",
    "numpy_dtype",
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


def check_model(model: object) -> None:
    """Raises unless ``model`` is a module with real (not meta-device) parameters.

    Example:
        >>> check_model(torch.nn.Identity())
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.device.type == "meta":
            raise ValueError(
                "model has parameters on the meta device (shapes without data): load its "
                "weights first, e.g. model.to_empty(device='cpu') and load_state_dict(...)"
            )


def check_image(image: object, name: str = "image") -> None:
    """Raises if the image is complex (TypeError) or a tensor without data (meta device).

    Example:
        >>> check_image(torch.zeros(1, 2, 2))
    """
    dtype = getattr(image, "dtype", None)
    complex_ = dtype.is_complex if isinstance(dtype, torch.dtype) else False
    if not isinstance(dtype, torch.dtype) and dtype is not None:
        try:
            complex_ = np.dtype(dtype).kind == "c"
        except TypeError:  # not a numpy dtype: nothing to say about it
            complex_ = False
    if complex_:
        raise TypeError(
            f"{name} must be real, got dtype {dtype}: segmentation networks take real "
            "images; pass image.real or image.abs() explicitly"
        )
    if isinstance(image, torch.Tensor) and image.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (a shape without data)")


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool (numpy bools included), else TypeError.

    Example:
        >>> check_flag("amp", True)
        True
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_batch_size(batch_size: object, name: str = "batch_size") -> int | None:
    """A positive int batch size (or ``None``), else ValueError.

    Example:
        >>> check_batch_size(np.int64(2)), check_batch_size(None)
        (2, None)
    """
    if batch_size is None:
        return None
    if not is_int(batch_size) or operator.index(batch_size) < 1:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a positive int or None, got {batch_size!r}")
    return operator.index(batch_size)  # type: ignore[arg-type]


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


def numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    """The numpy dtype of a torch dtype; TypeError if it has none (bfloat16).

    Example:
        >>> numpy_dtype(torch.float32)
        dtype('float32')
    """
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError as e:
        raise TypeError(
            f"the model's output dtype {dtype} has no numpy equivalent; cast the output "
            "(e.g. to float32) inside the model"
        ) from e
