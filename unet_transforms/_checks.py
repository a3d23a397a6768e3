"""Argument checks shared by the modules: one definition of "an integer"."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

__all__ = ["as_int", "as_list_if_1d", "check_dense", "holds_int", "is_int", "is_one_of"]


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer scalar: ``int``, a numpy or 0-d tensor integer.

    ``bool`` is not an integer here, and neither are arrays with axes (numpy gives
    them ``__index__`` but refuses to convert them).

    Example:
        >>> import numpy as np
        >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0), is_int(np.array([3]))
        (True, True, False, False, False)
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return False
    if getattr(value, "ndim", 0) != 0 or "bool" in str(getattr(value, "dtype", "")):
        return False  # arrays with axes; 0-d bool tensors (they have __index__ too)
    try:
        value.__index__()
    except TypeError:  # e.g. a 0-d float tensor
        return False
    return True


def as_list_if_1d(value: Any) -> Any:
    """A 1-D numpy array or tensor as a list of its entries; anything else unchanged.

    Example:
        >>> import numpy as np
        >>> as_list_if_1d(np.array([572, 572])), as_list_if_1d(5)
        ([572, 572], 5)
    """
    if getattr(value, "ndim", None) == 1 and hasattr(value, "tolist"):
        return value.tolist()
    return value


def as_int(name: str, value: object) -> int:
    """``value`` as an ``int``: integers, and integral floats as YAML and JSON give them.

    ``8.0`` is 8 (a config file may write any number as a float); ``8.5``, ``True``,
    ``"8"``, NaN and infinities are refused with a message that names ``name``.

    Raises:
        TypeError: If ``value`` is not a number (strings, bools and containers included).
        ValueError: If it is a float that is not integral (``8.5``, NaN, infinity).

    Example:
        >>> as_int("depth", 4), as_int("depth", 4.0)
        (4, 4)
        >>> as_int("depth", 4.5)
        Traceback (most recent call last):
        ...
        ValueError: depth must be an integer, got 4.5
    """
    if is_int(value):
        return operator.index(value)  # type: ignore[arg-type]
    if isinstance(value, float | np.floating) and not isinstance(value, bool):
        if not math.isfinite(value) or not float(value).is_integer():
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")


def holds_int(dtype: torch.dtype, value: int) -> bool:
    """Whether the integer or bool ``dtype`` holds ``value`` (compared in the dtype, a
    value outside its range would wrap: a uint8 tensor ``== 256`` matches its 0s).

    Example:
        >>> import torch
        >>> holds_int(torch.uint8, 255), holds_int(torch.uint8, 256), holds_int(torch.bool, 2)
        (True, False, False)
    """
    if dtype == torch.bool:
        return value in (0, 1)
    info = torch.iinfo(dtype)
    return info.min <= value <= info.max


_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def as_int64_if_wide_unsigned(t: torch.Tensor) -> torch.Tensor:
    """``t`` as int64 if it is uint16, uint32 or uint64 (torch implements few ops for
    those: no ``aminmax``, ``min``, ``gt`` or ``masked_fill`` on the CPU), else ``t``.

    Example:
        >>> import torch
        >>> as_int64_if_wide_unsigned(torch.tensor([1], dtype=torch.uint16)).dtype
        torch.int64
    """
    return t.to(torch.int64) if t.dtype in _WIDE_UNSIGNED else t


def is_one_of(value: object, choices: tuple[str, ...]) -> bool:
    """Whether ``value`` is one of the string ``choices``; never asks an array for its
    truth value (``np.array([1]) in ("a",)`` raises numpy's own error).

    Example:
        >>> import numpy as np
        >>> is_one_of("reflect", ("reflect", "symmetric")), is_one_of(np.zeros(2), ("a",))
        (True, False)
    """
    return isinstance(value, str) and value in choices


def check_dense(x: torch.Tensor, name: str) -> None:
    """Raises ``TypeError`` unless ``x`` is a dense tensor holding data.

    Sparse (any non-strided layout), nested, quantized and meta tensors have no
    elements to crop or mirror the way this library reads them.

    Args:
        x: The tensor.
        name: The argument's name, for the message.

    Example:
        >>> import torch
        >>> check_dense(torch.zeros(2, 2), "x")
        >>> check_dense(torch.zeros(2, 2).to_sparse(), "x")
        Traceback (most recent call last):
        ...
        TypeError: x must be a dense tensor (strided, not nested, quantized or on the meta device), got a tensor of layout torch.sparse_coo (sparse)
    """
    if isinstance(x, tv_tensors.TVTensor):
        x = x.as_subclass(torch.Tensor)  # a tv_tensor answers these 40x slower
    if x.is_nested:
        kind = "nested tensor"
    elif x.layout != torch.strided:
        kind = f"tensor of layout {x.layout} (sparse)"
    elif x.is_quantized:
        kind = f"quantized tensor ({x.dtype})"
    elif x.is_meta:
        kind = "meta tensor (it has no data)"
    else:
        return
    raise TypeError(
        f"{name} must be a dense tensor (strided, not nested, quantized or on the meta "
        f"device), got a {kind}"
    )
