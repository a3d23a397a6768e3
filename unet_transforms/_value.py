"""Plain immutable values: equality, hashing and refused assignment from a few fields."""

from __future__ import annotations

from typing import ClassVar


class ImmutableValue:
    """Compares and hashes by the attributes named in ``_value_fields``; assigning or
    deleting an attribute raises ``AttributeError`` (``__init__`` sets them with
    ``object.__setattr__``). Not a dataclass: Lightning's hyperparameter handling
    refuses frozen dataclasses.

    Example:
        >>> class Size(ImmutableValue):
        ...     _value_fields = ("n",)
        ...     def __init__(self, n: int) -> None:
        ...         object.__setattr__(self, "n", n)
        >>> Size(2) == Size(2), len({Size(2), Size(2)})
        (True, 1)
        >>> Size(2).n = 3
        Traceback (most recent call last):
        ...
        AttributeError: Size is immutable: cannot set 'n'
    """

    __slots__ = ()
    _value_fields: ClassVar[tuple[str, ...]] = ()

    def _value_key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._value_fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not (isinstance(other, type(self)) or isinstance(self, type(other))):
            return NotImplemented
        assert isinstance(other, ImmutableValue)
        return self._value_key() == other._value_key()

    def __hash__(self) -> int:
        return hash(self._value_key())
