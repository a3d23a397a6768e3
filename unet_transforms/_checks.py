"""Argument checks shared by the modules: one definition of "an integer"."""

from __future__ import annotations

from typing import Any

__all__ = ["as_list_if_1d", "is_int"]


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
