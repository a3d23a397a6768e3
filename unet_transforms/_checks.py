"""Argument checks shared by the modules: one definition of "an integer"."""

from __future__ import annotations

__all__ = ["is_int"]


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
    if getattr(value, "ndim", 0) != 0:
        return False
    try:
        value.__index__()
    except TypeError:  # e.g. a 0-d float tensor
        return False
    return True
