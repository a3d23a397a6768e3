"""Where a random training window lies: fair random windows and label-aware samplers.

:class:`~unet_transforms.PairedTileCrop` (and :class:`~unet_transforms.OverlapTileCrop`)
choose a random tile's *output* window with ``index="random"`` or with one of the
samplers of this module, passed as ``index=``:

- ``index="random"``: a *fair* window. Per axis the output window's start is uniform
  over ``[-(out - 1), size - 1]``, so every image pixel, border included, is covered by
  a window with the same probability ``out / (size + out - 1)`` per axis. Windows reach
  past the border, where the image is mirrored (and the label gets ``mask_fill``).
- :class:`LabelSampler`: a class by weight, then a pixel of that class.
- :class:`WeightedSampler`: a pixel in proportion to a weight map carried in the sample.
- :class:`ForegroundSampler`: with some probability a window holding at least a
  fraction of foreground, otherwise a fair window.

A sampler draws a *centre pixel*; the window is the one whose output holds that pixel at
index ``out // 2`` on each axis. Samplers draw from torch's global RNG (``torch.manual_seed``
and DataLoader worker seeding govern them), pickle, and describe themselves as configs.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import numbers
import re
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from torchvision.transforms.v2 import functional as tvF

from ._boxes import unravel
from ._checks import as_int, as_int64_if_wide_unsigned, holds_int, is_int
from .config import Configurable
from .weightmap import WeightMap

__all__ = [
    "ForegroundSampler",
    "LabelSampler",
    "Sampler",
    "SamplerFallbackWarning",
    "WeightedSampler",
    "random_window_range",
    "random_window_start",
]

_DRAW_RANGE = 2**62
# The sample a transform with a sampler is being called with (for WeightedSampler's key).
_SAMPLE: contextvars.ContextVar[tuple[Any, ...] | None] = contextvars.ContextVar(
    "unet_transforms_sample", default=None
)
_CACHE_BYTES = 2**28  # per sampler: derived data of the labels seen last
_CACHE_ENTRIES = 64


class SamplerFallbackWarning(UserWarning):
    """A sampler found nothing to draw from (e.g. its classes are absent from a label)
    and drew a fair random window instead; warned once per sampler instance.

    Example:
        >>> import warnings
        >>> import torch
        >>> from unet_transforms import PairedTileCrop, TileGeometry
        >>> crop = PairedTileCrop(TileGeometry(8, 4), index=LabelSampler({1: 1}))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = crop(torch.rand(1, 9, 9), torch.zeros(9, 9, dtype=torch.long))
        ...     _ = crop(torch.rand(1, 9, 9), torch.zeros(9, 9, dtype=torch.long))
        >>> print(*(w.category.__name__ for w in caught))
        SamplerFallbackWarning
    """


# --------------------------------------------------------------------------- fair windows
def random_window_range(
    size: Sequence[int], output_size: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Per axis, the inclusive range ``(first, last)`` of a fair window's output start.

    ``(-(out - 1), size - 1)``: every window that overlaps the image. Drawn uniformly,
    each image pixel is covered with probability ``out / (size + out - 1)`` per axis,
    the same for border and centre pixels, for every image size (smaller than the
    window too).

    Args:
        size: The image's spatial size.
        output_size: The output window's size (``geometry.output_size``).

    Raises:
        ValueError: If the sizes are not positive or differ in length.

    Example:
        >>> random_window_range((10, 3), (4, 4))
        ((-3, 9), (-3, 2))
    """
    size, output_size = _sizes(size, "size"), _sizes(output_size, "output_size")
    if len(size) != len(output_size):
        raise ValueError(
            f"size and output_size must have the same length, got {size} and {output_size}"
        )
    return tuple((1 - o, n - 1) for n, o in zip(size, output_size, strict=True))


def random_window_start(size: Sequence[int], output_size: Sequence[int]) -> list[int]:
    """A fair window's output start, drawn uniformly over :func:`random_window_range`
    from torch's global RNG (one draw for all axes, reduced modulo each range: the bias
    is below ``2**-30``).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> start = random_window_start((10, 3), (4, 4))
        >>> -3 <= start[0] <= 9 and -3 <= start[1] <= 2
        True
    """
    ranges = random_window_range(size, output_size)
    draws = torch.randint(_DRAW_RANGE, (len(ranges),)).tolist()
    return [a + r % (b - a + 1) for r, (a, b) in zip(draws, ranges, strict=True)]


def _sizes(value: Sequence[int], name: str) -> tuple[int, ...]:
    sizes = tuple(value)
    if not sizes or not all(is_int(s) and s >= 1 for s in sizes):
        raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}")
    return tuple(int(s) for s in sizes)


# --------------------------------------------------------------------------- base
class Sampler:
    """Base of the window samplers: draws the output window's start of one tile.

    Subclasses implement :meth:`draw_centre` (and list ``Configurable`` first in their
    bases, as the samplers here do, to have configs). The transforms call
    :meth:`output_start` from ``make_params`` with the sample's label leaves, inside
    :meth:`bound_to` (which gives the sampler the whole sample, e.g. for
    :class:`WeightedSampler`'s key). Derived data of a label (class locations,
    cumulative weights) is cached per label tensor, keyed by its memory, shape, strides
    and version counter, for as long as that memory is in use (so
    ``tv_tensors.Mask(label)`` made anew per call finds it); bounded, and not pickled.
    In-place changes that torch's version counter does not see (made through numpy, or
    through ``tensor.data``) are not seen by the cache: pass a new tensor
    (``label.clone()``) after such a change. ``LabelSampler`` and ``ForegroundSampler``
    check each drawn centre against the label as it is and raise a ``ValueError`` that
    says so where it no longer fits.

    Example:
        >>> import torch
        >>> sampler = LabelSampler("balanced")
        >>> label = torch.tensor([[0, 0, 1], [0, 0, 0]])
        >>> _ = torch.manual_seed(0)
        >>> starts = {tuple(sampler.output_start((2, 3), (1, 1), [label])) for _ in range(40)}
        >>> (0, 2) in starts
        True
    """

    def __init__(self) -> None:
        self._warned = False
        self._cache = _Cache()

    def __getstate__(self) -> dict[str, Any]:
        getstate = getattr(super(), "__getstate__", None)  # object's, from Python 3.11
        state = dict((getstate() if getstate is not None else None) or self.__dict__)
        state.pop("_cache", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = _Cache()

    def draw_centre(
        self, size: tuple[int, ...], output_size: tuple[int, ...], labels: list[Any]
    ) -> tuple[int, ...] | None:
        """The centre pixel of the next window, or ``None`` for a fair random window.

        Args:
            size: The image's spatial size.
            output_size: The output window's size.
            labels: The sample's label leaves (``tv_tensors.Mask``, the target of an
                ``(image, target)`` call), unwrapped, in sample order.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement draw_centre")

    def read_maps(self) -> list[Any]:
        """The leaves of the bound sample that the sampler reads and the transform
        passes through (the transforms do not refuse them as left-behind maps)."""
        return []

    def output_start(
        self, size: Sequence[int], output_size: Sequence[int], labels: list[Any]
    ) -> list[int]:
        """The output window's start: the window whose output has the drawn centre at
        index ``out // 2`` per axis, or a fair random window."""
        size, output_size = _sizes(size, "size"), _sizes(output_size, "output_size")
        centre = self.draw_centre(size, output_size, labels)
        if centre is None:
            return random_window_start(size, output_size)
        return [c - o // 2 for c, o in zip(centre, output_size, strict=True)]

    @contextlib.contextmanager
    def bound_to(self, inputs: tuple[Any, ...]) -> Iterator[None]:
        """Makes ``inputs`` (a transform's call arguments) the sample this thread's
        draws read, for the duration of the ``with`` block."""
        token = _SAMPLE.set(inputs)
        try:
            yield
        finally:
            _SAMPLE.reset(token)

    def _fall_back(self, reason: str) -> None:
        """Warns once per instance that a fair random window replaces the draw."""
        self._warn_once(f"{reason}; drawing a fair random window instead")

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"{type(self).__name__}: {message} (warned once per sampler)",
                SamplerFallbackWarning,
                stacklevel=5,
            )

    def _class_label(self, labels: list[Any]) -> Any:
        """The sample's class label: its first label leaf that is not a ``WeightMap``."""
        for label in labels:
            if not isinstance(label, WeightMap):
                return label
        raise ValueError(
            f"{type(self).__name__} needs a label in the sample (a tv_tensors.Mask, or the "
            "target of t(image, target)) to draw windows from, got "
            f"{len(labels)} label(s){' (weight maps only)' if labels else ''}"
        )


class _Cache:
    """Derived data per tensor, for as long as its memory is in use (so that a key of
    memory address, shape, strides and version counter cannot name another tensor's
    data); least recently used entries are dropped beyond ``_CACHE_ENTRIES`` entries or
    ``_CACHE_BYTES`` bytes."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[Any, ...], tuple[Any, Any, int]] = OrderedDict()

    def get(
        self,
        tensor: torch.Tensor,
        owner: np.ndarray | None,
        extra: object,
        build: Callable[[], tuple[Any, int]],
    ) -> Any:
        """``build()``'s value for ``tensor``, built once while its memory is in use;
        ``owner``, the numpy array ``tensor`` shares its memory with, keeps the entry (each
        ``torch.from_numpy`` of it is a new storage object, alive for one call only)."""
        try:
            key = (
                tensor.data_ptr(),
                tuple(tensor.shape),
                tensor.stride(),
                tensor.dtype,
                tensor.device,
                tensor._version,
                extra,
            )
            # the storage's Python object lives as long as any tensor uses the memory
            # (torch preserves it): wrappers such as tv_tensors.Mask(label) share it
            ref: Any = weakref.ref(owner if owner is not None else tensor.untyped_storage())
        except (RuntimeError, TypeError, NotImplementedError):  # e.g. inference tensors
            return build()[0]
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is not None:
            self._entries.move_to_end(key)
            return entry[1]
        value, nbytes = build()
        for dead in [k for k, e in self._entries.items() if e[0]() is None]:
            del self._entries[dead]
        self._entries[key] = (ref, value, nbytes)
        while len(self._entries) > _CACHE_ENTRIES or (
            len(self._entries) > 1 and sum(e[2] for e in self._entries.values()) > _CACHE_BYTES
        ):
            self._entries.popitem(last=False)
        return value


# --------------------------------------------------------------------------- helpers
def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, PIL.Image.Image):
        pil: torch.Tensor = tvF.pil_to_tensor(value)
        return pil
    if isinstance(value, np.ndarray):
        # a copy only where torch.from_numpy needs one (another byte order, a negative
        # stride): a shared array keeps its address, which the sampler caches key on
        if not value.dtype.isnative:
            value = value.astype(value.dtype.newbyteorder("="))
        elif any(stride < 0 for stride in value.strides):
            value = value.copy()
        if not value.flags.writeable:  # a read-only map: samplers only read it
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                return torch.from_numpy(value)
        return torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected a tensor, PIL image or numpy array, got {type(value).__name__}")
    plain: torch.Tensor = value.as_subclass(torch.Tensor)
    return plain


def _cache_source(raw: Any, value: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
    """The tensor (and numpy owner) a sampler's cache entry is kept for: the caller's
    tensor, or for a read-only numpy array (a memory map opened with ``mode="r"``, an
    array with ``flags.writeable = False``) converted without a copy, the array itself,
    which is the same object across calls where a tensor made from it is not. A
    writable array, which could change unseen, gets a new entry per call."""
    if isinstance(raw, torch.Tensor):
        return raw, None
    if (
        isinstance(raw, np.ndarray)
        and not raw.flags.writeable  # numpy has no change counter: read-only arrays only
        and raw.size
        and value.data_ptr() == raw.ctypes.data
    ):
        return value, raw
    return value, None


def _leading(value: torch.Tensor, size: tuple[int, ...], what: str) -> torch.Tensor:
    """``value`` as its spatial axes only: every axis before them must have size 1."""
    ndim = len(size)
    if value.ndim < ndim or tuple(value.shape[value.ndim - ndim :]) != size:
        raise ValueError(
            f"{what} must have the image's spatial size {size} on its last {ndim} axes, "
            f"got shape {tuple(value.shape)}"
        )
    if any(s != 1 for s in value.shape[: value.ndim - ndim]):
        raise ValueError(
            f"{what} must hold one value per pixel: its axes before the {ndim} spatial "
            f"axes must have size 1, got shape {tuple(value.shape)}"
        )
    return value.reshape(size)


def _row_cum(rows: torch.Tensor) -> torch.Tensor:
    """Inclusive cumulative sum of per-row totals."""
    return rows.reshape(-1).cumsum(0)


_STALE = (
    "the label changed in place where torch's version counter does not see it (through "
    "numpy or tensor.data) after the sampler cached what it derived from it: pass a new "
    "tensor or array (label.clone(), array.copy()) after such a change"
)


def _draw_count(
    row_cum: torch.Tensor, size: tuple[int, ...], row: Callable[[tuple[int, ...]], torch.Tensor]
) -> tuple[int, ...]:
    """A pixel uniformly among those a bool ``row(coords)`` marks, ``row_cum`` counting
    them per row (a row: all of the last axis at given leading coordinates)."""
    total = int(row_cum[-1])
    r = torch.randint(total, ()).to(row_cum.device)
    i = int(torch.searchsorted(row_cum, r, right=True))
    k = int(r) - (int(row_cum[i - 1]) if i else 0)
    coords = unravel(i, size[:-1])
    hits = row(coords).nonzero()
    if k >= len(hits):
        raise ValueError(_STALE)
    col = int(hits[k, 0])
    return (*coords, col)


def _draw_weight(
    row_cum: torch.Tensor, size: tuple[int, ...], row: Callable[[tuple[int, ...]], torch.Tensor]
) -> tuple[int, ...]:
    """A pixel in proportion to the non-negative weights ``row(coords)`` gives,
    ``row_cum`` summing them per row (float64)."""
    i = _search(row_cum, torch.rand((), dtype=torch.float64) * row_cum[-1])
    coords = unravel(i, size[:-1])
    weights = row(coords).to(torch.float64).cumsum(0)
    cached = row_cum[i] - (row_cum[i - 1] if i else 0)
    if not torch.isclose(weights[-1], cached, rtol=1e-6, atol=0):
        raise ValueError(_STALE)  # the row's weights are not those the table summed
    col = _search(weights, torch.rand((), dtype=torch.float64) * weights[-1])
    return (*coords, col)


def _search(cum: torch.Tensor, u: torch.Tensor) -> int:
    """The index ``i`` with ``cum[i - 1] <= u < cum[i]`` (entries of zero weight are
    never found); ``u`` rounded up to the total gives the last entry of positive weight."""
    i = int(torch.searchsorted(cum, u.to(cum.device), right=True))
    if i >= cum.numel():
        i = int(torch.searchsorted(cum, cum[-1], right=False))
    return i


def _check_number(value: object, name: str, low: float, high: float, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not (low < number if low_open else low <= number) or not number <= high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


# --------------------------------------------------------------------------- samplers
_INT_KEY = re.compile(r"^[+-]?\d+$")


class LabelSampler(Configurable, Sampler):
    """Centres windows on the pixels of a class drawn by weight.

    Each draw picks a class among those present in the label (``ignore_index``
    excluded), with probability proportional to its weight, then a pixel uniformly among
    that class's pixels, border pixels included; the window is centred on it. Classes
    without a weight are never drawn. If a weighted class is absent from a label the
    draw is among the present ones; if none is present, a fair random window is drawn
    (one :class:`SamplerFallbackWarning` per sampler).

    The label is the sample's first label leaf that is not a ``WeightMap`` (a
    ``tv_tensors.Mask``, or the target of ``t(image, target)``), with an integer or bool
    dtype and one class per pixel (axes before the spatial ones of size 1).

    Args:
        class_weights: ``"balanced"`` (each present class equally likely), a mapping
            from class to weight (``{0: 1, 1: 9}``; keys may be strings of ints, as JSON
            writes them), or a list of weights for classes ``0, 1, ...``.
        ignore_index: A class whose pixels are never centres (e.g. 255), or ``None``.

    Raises:
        ValueError: For negative or non-finite weights, no positive weight, or a weight
            for ``ignore_index``.
        TypeError: For arguments of the wrong type.

    Example:
        >>> import torch
        >>> from unet_transforms import PairedTileCrop, TileGeometry
        >>> crop = PairedTileCrop(TileGeometry(12, 4), index=LabelSampler({0: 1, 1: 9}))
        >>> label = torch.zeros(50, 50, dtype=torch.long)
        >>> label[20, 30] = 1
        >>> _ = torch.manual_seed(0)
        >>> hits = sum(int(crop(torch.rand(1, 50, 50), label)[1].select(0, 2)[2]) for _ in range(100))
        >>> 80 < hits < 100
        True
    """

    def __init__(
        self,
        class_weights: Literal["balanced"] | Mapping[int | str, float] | Sequence[float] = (
            "balanced"
        ),
        ignore_index: int | None = None,
    ) -> None:
        Sampler.__init__(self)
        self.ignore_index = None if ignore_index is None else as_int("ignore_index", ignore_index)
        self.class_weights = _check_weights(class_weights, self.ignore_index)

    def to_config(self) -> dict[str, Any]:
        """The sampler as plain data; class keys are written as strings, as JSON writes
        them (both come back as the same sampler)."""
        weights = self._config_args.get("class_weights")
        if not isinstance(weights, Mapping):
            return super().to_config()
        clone = copy.copy(self)
        keys = (k if isinstance(k, str) else as_int("class_weights key", k) for k in weights)
        args = {
            **self._config_args,
            "class_weights": {str(k): v for k, v in zip(keys, weights.values(), strict=True)},
        }
        object.__setattr__(clone, "_config_args", args)
        return Configurable.to_config(clone)

    def draw_centre(
        self, size: tuple[int, ...], output_size: tuple[int, ...], labels: list[Any]
    ) -> tuple[int, ...] | None:
        label = self._class_label(labels)
        value = _leading(_as_tensor(label), size, f"{type(self).__name__}'s label")
        if value.dtype.is_floating_point or value.dtype.is_complex:
            raise TypeError(
                f"LabelSampler reads class labels: the label must have an integer or bool "
                f"dtype, got {value.dtype}"
            )
        table: dict[int, torch.Tensor] = self._cache.get(
            *_cache_source(label, value), None, lambda: self._table(value)
        )
        if not isinstance(self.class_weights, dict):  # "balanced"
            weights = dict.fromkeys(table, 1.0)
        else:
            weights = {c: w for c, w in self.class_weights.items() if c in table}
            missing = [c for c, w in self.class_weights.items() if w > 0 and c not in table]
            if missing and weights:
                self._warn_once(
                    f"class(es) {missing} absent from a label; drawing among the present "
                    f"classes {list(weights)}"
                )
        if not weights:
            self._fall_back("no pixel of a class with a positive weight in the label")
            return None
        classes = list(weights)
        cum = torch.tensor(list(weights.values()), dtype=torch.float64).cumsum(0)
        c = classes[_search(cum, torch.rand((), dtype=torch.float64) * cum[-1])]
        return _draw_count(table[c], size, lambda coords: value[coords] == c)

    def _table(self, value: torch.Tensor) -> tuple[dict[int, torch.Tensor], int]:
        """Per class (present, not ignored, weighted): cumulative pixel counts per row."""
        if not isinstance(self.class_weights, dict):  # "balanced"
            classes = _present_classes(value)
        else:
            classes = [c for c, w in self.class_weights.items() if w > 0]
        # a class the dtype cannot hold is absent
        classes = [c for c in classes if c != self.ignore_index and holds_int(value.dtype, c)]
        table = {}
        for c in classes:
            counts = torch.count_nonzero((value == c).reshape(-1, value.shape[-1]), dim=-1)
            if int(counts.sum()):
                table[c] = _row_cum(counts)
        return table, sum(t.numel() * 8 for t in table.values()) + 64


def _present_classes(value: torch.Tensor) -> list[int]:
    flat = value.reshape(-1)
    # bool and wide unsigned dtypes have no aminmax
    flat = flat.view(torch.uint8) if flat.dtype == torch.bool else as_int64_if_wide_unsigned(flat)
    lo, hi = (int(v) for v in torch.aminmax(flat))
    if hi - lo < 2**16:
        # counted from the smallest value: bincount's length is the largest value + 1
        offset = 0 if lo >= 0 and hi < 2**16 else lo
        counts = torch.bincount(flat if offset == 0 else flat.to(torch.int64) - offset)
        return [int(c) + offset for c in counts.nonzero()[:, 0].tolist()]
    return [int(c) for c in torch.unique(flat).tolist()]


def _check_weights(
    weights: object, ignore_index: int | None
) -> Literal["balanced"] | dict[int, float]:
    if isinstance(weights, str):
        if weights != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced', a mapping from class to weight or a list "
                f"of weights, got {weights!r}"
            )
        return "balanced"
    if isinstance(weights, Mapping):
        items = list(weights.items())
    elif isinstance(weights, Sequence):
        items = list(enumerate(weights))
    else:
        raise TypeError(
            "class_weights must be 'balanced', a mapping from class to weight or a list of "
            f"weights, got {type(weights).__name__}"
        )
    checked: dict[int, float] = {}
    for key, weight in items:
        if isinstance(key, str) and _INT_KEY.match(key):
            cls = int(key)
        elif isinstance(key, str):
            raise ValueError(f"class_weights keys must be int classes, got {key!r}")
        else:
            cls = as_int("class_weights key", key)
        w = _check_number(weight, f"class_weights[{cls}]", 0.0, math.inf, False)
        if math.isinf(w):
            raise ValueError(f"class_weights[{cls}] must be finite, got {weight!r}")
        if cls == ignore_index and w > 0:
            raise ValueError(
                f"class_weights gives the ignored class {cls} (ignore_index) weight {weight!r}: "
                "its pixels are never centres"
            )
        if cls in checked:
            raise ValueError(f"class_weights gives class {cls} twice, got {weights!r}")
        checked[cls] = w
    if not any(w > 0 for w in checked.values()):
        raise ValueError(f"class_weights must give some class a positive weight, got {weights!r}")
    # in class order: the draws do not depend on the order the mapping was written in
    # (YAML writers sort keys, JSON keeps them)
    return dict(sorted(checked.items()))


class WeightedSampler(Configurable, Sampler):
    """Centres windows on pixels drawn in proportion to a weight map in the sample.

    The map is carried in a dict sample under ``key`` (a tensor or numpy array of the
    image's spatial size, axes before the spatial ones of size 1, non-negative and
    finite); a plain tensor or array is read and passed through as it is, a
    :class:`~unet_transforms.WeightMap` is also cropped to the label's window. In a
    :class:`~unet_transforms.TiledDataset`, an ``(image, label, weights)`` sample is
    seen as ``{"image", "label", "weights"}``: ``WeightedSampler("weights")`` draws
    from its weights. A map that is zero everywhere gives a fair random window (one
    :class:`SamplerFallbackWarning`).

    Args:
        key: The dict key of the weight map.

    Example:
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> from unet_transforms import PairedTileCrop, TileGeometry, WeightMap
        >>> crop = PairedTileCrop(TileGeometry(12, 4), index=WeightedSampler("where"))
        >>> where = torch.zeros(40, 40)
        >>> where[3, 5] = 1.0
        >>> image = torch.arange(1600.0).reshape(1, 40, 40)
        >>> label = tv_tensors.Mask(torch.zeros(40, 40))
        >>> out = crop({"image": image, "label": label, "where": WeightMap(where)})
        >>> int(out["image"].select(0, 0)[6, 6])  # the output's centre pixel: (3, 5)
        125
        >>> out["where"].shape  # the label's window
        torch.Size([4, 4])
    """

    def __init__(self, key: str) -> None:
        Sampler.__init__(self)
        if not isinstance(key, str):
            raise TypeError(f"key must be a str (a dict key), got {type(key).__name__} {key!r}")
        self.key = key

    def read_maps(self) -> list[Any]:
        sample = _SAMPLE.get()
        found = None if sample is None else _find(sample, self.key)
        return [] if found is None else [found[0]]

    def draw_centre(
        self, size: tuple[int, ...], output_size: tuple[int, ...], labels: list[Any]
    ) -> tuple[int, ...] | None:
        sample = _SAMPLE.get()
        if sample is None:
            raise ValueError(
                f"WeightedSampler(key={self.key!r}) reads its map from the sample a transform "
                "is called with: call the transform on a dict sample (make_params alone "
                "does not see it)"
            )
        found = _find(sample, self.key)
        if found is None:
            raise ValueError(
                f"WeightedSampler found no {self.key!r} in the sample: pass a dict sample "
                f"holding the weight map under {self.key!r}"
            )
        raw = found[0]
        value = _leading(_as_tensor(raw), size, f"the weight map {self.key!r}")
        if value.dtype.is_complex:
            raise TypeError(f"the weight map {self.key!r} must be real, got {value.dtype}")
        row_cum = self._cache.get(*_cache_source(raw, value), None, lambda: self._table(value))
        if float(row_cum[-1]) <= 0:
            self._fall_back(f"the weight map {self.key!r} is zero everywhere")
            return None
        return _draw_weight(row_cum, size, lambda coords: value[coords])

    def _table(self, value: torch.Tensor) -> tuple[torch.Tensor, int]:
        if value.dtype != torch.bool:
            value = as_int64_if_wide_unsigned(value)
            low = value.min()
            if not bool(torch.isfinite(value).all()) or float(low) < 0:
                raise ValueError(
                    f"the weight map {self.key!r} must be non-negative and finite, got a "
                    f"minimum of {float(low)} (or NaN/infinity)"
                )
        rows = value.reshape(-1, value.shape[-1]).sum(-1, dtype=torch.float64)
        row_cum = _row_cum(rows)
        return row_cum, row_cum.numel() * 8 + 64


def _find(tree: Any, key: str) -> tuple[Any] | None:
    """``(value,)`` under ``key`` in the first mapping of ``tree`` holding it."""
    if isinstance(tree, Mapping):
        if key in tree:
            return (tree[key],)
        tree = list(tree.values())
    if isinstance(tree, list | tuple):
        for item in tree:
            found = _find(item, key)
            if found is not None:
                return found
    return None


class ForegroundSampler(Configurable, Sampler):
    """With a probability, a window holding at least a fraction of foreground.

    With probability ``probability`` the centre is drawn uniformly among the pixels
    whose window's output holds at least ``min_fraction`` of non-``background`` label
    pixels (pixels outside the image, and ``ignore_index`` pixels, count as background);
    otherwise (and when no window holds that much, with one
    :class:`SamplerFallbackWarning`) a fair random window. A label with channels (axes
    before the spatial ones) is foreground where any channel is foreground.

    Args:
        min_fraction: Fraction of the output window, in ``(0, 1]``.
        probability: Probability of a foreground window, in ``[0, 1]``.
        background: The background label value.
        ignore_index: A label value that is not foreground either (e.g. 255 for
            unlabelled pixels), or ``None``.

    Example:
        >>> import torch
        >>> from unet_transforms import PairedTileCrop, TileGeometry
        >>> crop = PairedTileCrop(TileGeometry(12, 4), index=ForegroundSampler(probability=1.0))
        >>> label = torch.zeros(60, 60, dtype=torch.long)
        >>> label[40, 10] = 3
        >>> _ = torch.manual_seed(0)
        >>> all(crop(torch.rand(1, 60, 60), label)[1].any() for _ in range(20))
        True
    """

    def __init__(
        self,
        min_fraction: float = 0.01,
        probability: float = 0.9,
        background: float = 0,
        ignore_index: int | None = None,
    ) -> None:
        Sampler.__init__(self)
        self.min_fraction = _check_number(min_fraction, "min_fraction", 0.0, 1.0, True)
        self.probability = _check_number(probability, "probability", 0.0, 1.0, False)
        if isinstance(background, bool) or not isinstance(background, numbers.Real):
            raise TypeError(f"background must be a number, got {type(background).__name__}")
        self.background: float = background
        self.ignore_index: int | None = (
            None if ignore_index is None else as_int("ignore_index", ignore_index)
        )
        if self.ignore_index is not None and self.ignore_index == background:
            raise ValueError(
                f"ignore_index must differ from background, got {ignore_index!r} for both"
            )

    def _foreground(self, value: torch.Tensor, spatial: int) -> torch.Tensor:
        """Where ``value`` (spatial axes last, channels before) is foreground."""
        foreground = _differs(value, self.background)
        if self.ignore_index is not None:
            foreground &= _differs(value, self.ignore_index)
        if value.ndim > spatial:
            foreground = foreground.reshape(-1, *foreground.shape[-spatial:]).any(0)
        return foreground

    def draw_centre(
        self, size: tuple[int, ...], output_size: tuple[int, ...], labels: list[Any]
    ) -> tuple[int, ...] | None:
        label = self._class_label(labels)
        if float(torch.rand((), dtype=torch.float32)) >= self.probability:
            return None
        value = _as_tensor(label)
        if value.ndim < len(size) or tuple(value.shape[value.ndim - len(size) :]) != size:
            raise ValueError(
                f"ForegroundSampler's label must have the image's spatial size {size} on its "
                f"last {len(size)} axes, got shape {tuple(value.shape)}"
            )
        valid, row_cum = self._cache.get(
            *_cache_source(label, value),
            output_size,
            lambda: self._table(value, size, output_size),
        )
        if int(row_cum[-1]) == 0:
            self._fall_back(
                f"no window of size {output_size} holds {self.min_fraction:g} of foreground"
            )
            return None
        centre = _draw_count(row_cum, size, lambda coords: valid[coords])
        # the drawn window, checked against the label as it is now (cheap: one window)
        window: tuple[Any, ...] = (
            ...,
            *(
                slice(max(0, c - o // 2), max(0, c - o // 2 + o))
                for c, o in zip(centre, output_size, strict=True)
            ),
        )
        foreground = self._foreground(value[window], len(size))
        if int(foreground.sum()) < self._need(output_size):
            raise ValueError(_STALE)
        return centre

    def _need(self, output_size: tuple[int, ...]) -> int:
        """The fewest foreground pixels a window of ``output_size`` must hold."""
        return max(1, math.ceil(round(self.min_fraction * math.prod(output_size), 6)))

    def _table(
        self, value: torch.Tensor, size: tuple[int, ...], output_size: tuple[int, ...]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        foreground = self._foreground(value, len(size))
        valid = _window_sums(foreground, output_size) >= self._need(output_size)
        row_cum = _row_cum(torch.count_nonzero(valid.reshape(-1, size[-1]), dim=-1))
        return (valid, row_cum), valid.numel() + row_cum.numel() * 8 + 64


def _differs(value: torch.Tensor, scalar: float) -> torch.Tensor:
    """``value != scalar``, all ``True`` where an integer ``scalar`` does not fit
    ``value``'s dtype (torch would wrap it: -100 compares as 156 in uint8)."""
    integral = not (value.dtype.is_floating_point or value.dtype.is_complex)
    if integral and is_int(scalar) and not holds_int(value.dtype, int(scalar)):
        return torch.ones(value.shape, dtype=torch.bool, device=value.device)
    return value != scalar


def _window_sums(mask: torch.Tensor, output_size: tuple[int, ...]) -> torch.Tensor:
    """Per pixel, the number of ``True`` pixels in the output window centred on it
    (its output index ``out // 2``), the parts outside the image counting as zero.

    Separable box sums: per axis (moved last and made contiguous, so that the
    cumulative sum runs over contiguous memory; the last axis first, which needs no
    copy), zeros padded for the window's reach and one more in front, a cumulative sum,
    and the difference of two slices ``out`` apart.
    """
    acc = torch.int32 if mask.numel() < 2**31 else torch.int64
    sums = mask.to(acc)
    for axis in reversed(range(len(output_size))):
        o, n = output_size[axis], sums.shape[axis]
        moved = sums.movedim(axis, -1).contiguous()
        cum = torch.nn.functional.pad(moved, (o // 2 + 1, o - o // 2)).cumsum(-1, dtype=acc)
        sums = (cum[..., o : o + n] - cum[..., :n]).movedim(-1, axis)
    return sums
