"""TiledDataset: overlap tiles of a few large samples as dataset items, read lazily."""

from __future__ import annotations

import bisect
import itertools
import math
import mmap
import numbers
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as tvF

from ._checks import as_int, as_list_if_1d, is_int
from .config import Configurable, from_config
from .deformation import Deformation
from .functional._mirror import MirrorMode, check_mode
from .functional._tile import to_tensor_region, torch_compatible
from .geometry import TileGeometry
from .grid import Align, Tile, TileGrid, TileIndexError
from .sampling import Sampler, WeightedSampler
from .transforms import PairedTileCrop
from .transforms._base import (
    ImageRole,
    LabelRole,
    MaskFill,
    check_align,
    check_geometry,
    check_mask_fill,
    label_fill,
)
from .weightmap import WeightMap

__all__ = ["TiledDataset"]


class TiledDataset(Configurable, torch.utils.data.Dataset[Any]):
    """Overlap tiles of the samples of a map-style dataset, each tile an item.

    The "train many times on a few large images" dataset. Two modes:

    - **Grid** (``index=None``, the default): item ``k`` is grid tile ``t`` of sample
      ``s`` (``locate(k)``), every tile of every sample once per epoch, as
      :class:`PairedTileCrop` with ``index=t`` crops it.
    - **Random** (``index="random"`` or a sampler, with ``tiles_per_epoch=N``):
      ``len(dataset) == N``; each item draws a sample, then a window in it as
      :class:`PairedTileCrop` with that ``index`` draws one, from torch's global RNG
      (``torch.manual_seed`` and DataLoader worker seeding govern it). With ``"random"`` a sample is drawn in proportion to the
      number of windows that overlap it, ``prod(size + output_size - 1)``, so that
      every pixel of every sample is covered equally often; with a sampler, in
      proportion to its pixel count (and the sampler's rule applies within it). With
      one sample no sample is drawn, so an item equals ``PairedTileCrop(geometry,
      index=index)(image, label)`` under the same seed.

    Samples that are a tuple or list ``(image, label, *rest)`` or ``(image, label,
    weights, *rest)`` are cropped through array slicing: image, label and weights may
    be tensors, numpy arrays, memory maps (``np.load(..., mmap_mode="r")``), zarr or
    h5py arrays or anything with ``.shape``, ``.dtype`` and numpy-style slicing, and
    each item reads only the bounding box of its window clipped to the array (one
    read per array), then mirrors or fills the rest in memory. Arrays are never read
    whole, neither per item nor at construction (sizes come from ``.shape``), except
    the label of the drawn sample when a sampler (which needs the whole label) picks
    the window. PIL images are converted (they are in memory anyway).

    Array layout: images ``(C, H, W)`` or ``(H, W)`` (one channel), labels and weights
    ``(H, W)``; for a 3-D geometry, images ``(C, D, H, W)`` or ``(D, H, W)`` and
    labels ``(D, H, W)``. Items come back as ``tv_tensors.Image`` (always with a
    channel axis), ``tv_tensors.Mask`` and :class:`~unet_transforms.WeightMap`, then
    the ``rest`` unchanged, in the sample's container type (tuple, list, namedtuple;
    numpy arrays become tensors of the same dtype: a 16-bit image stays uint16, so a
    negative ``mask_fill`` needs a signed label dtype),
    so ``v2.ToDtype({tv_tensors.Image: ...})`` and flips treat them as image and
    labels (torchvision's 2-D transforms treat a volume's depth as a batch axis). The
    weights are a floating-point map; they get the label's window, filled as
    ``mask_fill`` says for a ``WeightMap``. Any other sample (e.g. a dict with a
    ``tv_tensors.Image`` and a ``tv_tensors.Mask``) is given to
    :class:`PairedTileCrop` as it is.

    Works with ``DataLoader(num_workers > 0)`` and pickles; numpy memory maps in a
    list, tuple or dict dataset are pickled as their file (path, dtype, offset, shape),
    not their contents, so that ``spawn`` workers map the file again.

    Args:
        dataset: A map-style dataset (``__len__`` and ``__getitem__``), or its config
            (a mapping with ``"_target_"``, built by :func:`~unet_transforms.from_config`
            with the library's names only); a list of samples is a dataset.
        geometry: The :class:`TileGeometry`, or a mapping of its arguments.
        mode: ``"reflect"`` or ``"symmetric"``.
        align: Grid alignment: ``"center"`` or ``"start"``.
        mask_fill: Value for label pixels outside the image (an ignore index), or a
            per-type mapping as :class:`PairedTileCrop` takes it.
        transforms: Applied to each cropped item, e.g. random flips: called as
            ``transforms(image, label)`` (or ``transforms(image, label, weights)``) for
            sequence samples, like torchvision datasets' ``transforms=``, and as
            ``transforms(item)`` otherwise.
        index: ``None`` for every grid tile in turn; ``"random"`` or a sampler (whatever
            :class:`PairedTileCrop` takes as a random ``index``) for random tiles.
        tiles_per_epoch: The number of items of a random dataset (required with
            ``index``, refused without it).
        sizes: The spatial size of each sample, in order (e.g. ``((2000, 3000),
            (1500, 2000))``): skips reading every sample at construction to learn it.
            Each item checks its sample against it.
        sample_weights: How often a random dataset draws each sample, one non-negative
            weight per sample (e.g. its pixels of a rare class, for class balance
            across samples); by default in proportion to the windows that overlap it
            (``"random"``) or its pixels (a sampler).
        deform: A :class:`~unet_transforms.Deformation` drawn per item, as
            :class:`PairedTileCrop` applies it: image, label and weights are resampled
            from one field over the input window, each reading only the region the
            field reaches (arrays stay lazy); labels nearest, weights bilinear.

    Raises:
        TypeError: For a ``dataset`` without ``__len__`` and ``__getitem__``, a
            ``transforms`` that is not callable, or ``sizes`` that are not sequences.
        ValueError: For an int or ``"all"`` ``index``, ``tiles_per_epoch`` missing or
            given without ``index``, ``sizes`` that do not match the dataset, or an
            image and label that differ in their spatial size.

    Example:
        >>> import torch
        >>> samples = [(torch.rand(1, 300, 500), torch.zeros(300, 500, dtype=torch.int64))]
        >>> tiles = TiledDataset(samples, TileGeometry(188, 100))
        >>> len(tiles), tiles.locate(4)
        (15, (0, 4))
        >>> image, label = tiles[4]
        >>> type(image).__name__, tuple(image.shape), type(label).__name__, tuple(label.shape)
        ('Image', (1, 188, 188), 'Mask', (100, 100))
        >>> random = TiledDataset(samples, TileGeometry(188, 100), index="random",
        ...                       tiles_per_epoch=64, sizes=[(300, 500)])
        >>> image, label = random[0]
        >>> len(random), tuple(image.shape)
        (64, (1, 188, 188))
    """

    def __init__(
        self,
        dataset: Any,
        geometry: TileGeometry | Mapping[str, Any],
        *,
        mode: MirrorMode = "reflect",
        align: Align = "center",
        mask_fill: MaskFill | Mapping[type | str, float | None] = None,
        transforms: Callable[..., Any] | None = None,
        index: Any = None,
        tiles_per_epoch: int | None = None,
        sizes: Sequence[Sequence[int]] | None = None,
        deform: Deformation | None = None,
        sample_weights: Sequence[float] | None = None,
    ) -> None:
        if transforms is not None and not callable(transforms):
            raise TypeError(
                f"transforms must be callable or None, got {type(transforms).__name__}"
            )
        self.transforms = transforms
        if isinstance(dataset, Mapping) and "_target_" in dataset:
            dataset = from_config(dataset)
        if (
            not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"))
            or getattr(dataset, "ndim", 1) == 0
        ):
            raise TypeError(
                "dataset must be a map-style dataset with __len__ and __getitem__, got "
                f"{type(dataset).__name__}"
            )
        self.dataset = dataset
        self.geometry = check_geometry(geometry)
        self.mode = check_mode(mode)
        self.align = check_align(align)
        self.mask_fill = check_mask_fill(mask_fill)
        self.index = _check_index(index)
        self.tiles_per_epoch = _check_tiles_per_epoch(tiles_per_epoch, self.index)
        given = _check_sample_weights(sample_weights, self.index, len(dataset))
        # one crop for the dataset: its index draws random windows; grid tiles are
        # looked up in the grids below and cropped with its crop()
        self._crop = PairedTileCrop(
            self.geometry,
            index=0 if self.index is None else self.index,
            mode=mode,
            align=align,
            mask_fill=mask_fill,
            deform=deform,
        )
        self.deform = self._crop.deform
        self._warned_writable = False
        self._fills = (
            label_fill(self.mask_fill, LabelRole(None)),
            label_fill(self.mask_fill, WeightMap(torch.zeros(1, 1))),
        )
        if len(dataset) == 0 and self.index is not None:
            raise ValueError(
                f"dataset must hold at least one sample to draw tiles from (index="
                f"{self.index!r}), got an empty dataset"
            )
        if sizes is None:
            self.sizes = [self._measure(s) for s in range(len(dataset))]
        else:
            self.sizes = _check_sizes(sizes, len(dataset), self.geometry.ndim)
        self.grids = [TileGrid(size, self.geometry, align=align) for size in self.sizes]
        self.grid_shapes: list[tuple[int, ...]] = [grid.shape for grid in self.grids]
        self.offsets: list[int] = [0]
        for grid in self.grids:
            self.offsets.append(self.offsets[-1] + len(grid))
        # cumulative weights to draw samples by: the user's, else for "random" the
        # number of windows that overlap each sample (then every pixel of every sample
        # is covered equally often), for a sampler its pixel count (the centres it
        # draws from)
        out = self.geometry.output_size
        self._sample_cum: list[int] | list[float] = given or list(
            itertools.accumulate(
                math.prod(
                    n + o - 1 if self.index == "random" else n
                    for n, o in zip(size, out, strict=True)
                )
                for size in self.sizes
            )
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["dataset"] = _memmaps_by_file(state["dataset"])
        if "dataset" in state.get("_config_args", {}):
            args = state["_config_args"]
            state["_config_args"] = {**args, "dataset": _memmaps_by_file(args["dataset"])}
        return state

    def __len__(self) -> int:
        if self.tiles_per_epoch is not None:
            return self.tiles_per_epoch
        return self.offsets[-1]

    def _item_index(self, index: int) -> int:
        n = len(self)
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = operator.index(index)
        if not -n <= index < n:
            raise TileIndexError(f"index must be in [{-n}, {n}), got {index}")
        return index % n

    def locate(self, index: int) -> tuple[int, int]:
        """``(sample index, tile index)`` of item ``index`` of a grid dataset.

        Raises:
            ValueError: For a random dataset (its items have no fixed tile).

        Example:
            >>> import torch
            >>> samples = [(torch.rand(1, 30, 30), torch.zeros(30, 30))] * 2
            >>> TiledDataset(samples, TileGeometry(20, 8)).locate(-1)
            (1, 15)
        """
        if self.index is not None:
            raise ValueError(
                f"locate maps items to grid tiles, but this dataset draws its tiles at "
                f"random (index={self.index!r}); use index=None for grid tiles"
            )
        index = self._item_index(index)
        sample = bisect.bisect_right(self.offsets, index) - 1
        return sample, index - self.offsets[sample]

    def __getitem__(self, index: int) -> Any:
        if self.index is None:
            sample, tile = self.locate(index)
            return self._item(sample, tile)
        self._item_index(index)
        cum = self._sample_cum
        if len(cum) == 1:
            return self._item(0, None)
        if isinstance(cum[-1], int):  # exact counts
            draw: float = int(torch.randint(cum[-1], ()).item())
        else:  # the user's weights; cum[s - 1] <= draw < cum[s]: a positive weight
            draw = float(torch.rand((), dtype=torch.float64)) * cum[-1]
            draw = min(draw, math.nextafter(cum[-1], 0))  # u == total after rounding
        return self._item(bisect.bisect_right(cum, draw), None)

    def _item(self, s: int, tile: int | None) -> Any:
        """Sample ``s`` cropped to its grid tile ``tile``, or to a drawn window (None)."""
        sample = self.dataset[s]
        parts = _split(sample, self.geometry.ndim)
        if parts is None:
            crop = self._crop if tile is None else self._grid_crop(tile)
            self._check_size(s, self._named(s, crop.sample_size, sample))
            out = crop(sample)
            return out if self.transforms is None else self.transforms(out)
        leaves, rest, rebuild = parts
        self._check_size(s, self._named(s, self._sample_size, sample, leaves))
        if tile is not None:
            window = self.grids[s][tile]
            field = None if self.deform is None else self._crop.draw_field()
        else:
            if self.index != "random":  # a sampler reads the whole label (or weights)
                leaves[1] = _whole(sample[1], leaves[1])
                self._warn_if_writable(s, sample[1])
                if isinstance(self.index, WeightedSampler) and len(leaves) > 2:
                    leaves[2] = _whole(sample[2], leaves[2])
            window, field = self._draw(leaves)
        out = self._crop_leaves(leaves, window, field)
        if self.transforms is not None:
            out = self.transforms(*out)
        return rebuild([*out, *rest])

    def _warn_if_writable(self, s: int, label: Any) -> None:
        """Warns once that a writable numpy label is read whole for every item."""
        if isinstance(label, np.ndarray) and label.flags.writeable and not self._warned_writable:
            self._warned_writable = True
            warnings.warn(
                f"TiledDataset: the label of dataset[{s}] is a writable numpy array, so "
                f"{type(self.index).__name__} finds its class locations anew for every "
                "item (numpy cannot tell it whether the array changed): about the cost "
                "of the sampler's first call, each item. Make labels read-only "
                "(label.flags.writeable = False; np.load(..., mmap_mode='r') is) or "
                "tensors to have them cached. (Warned once per dataset.)",
                stacklevel=4,
            )

    def _grid_crop(self, tile: int) -> PairedTileCrop:
        return PairedTileCrop(
            self.geometry,
            index=tile,
            mode=self.mode,
            align=self.align,
            mask_fill=self.mask_fill,
            deform=self.deform,
        )

    def _draw(self, leaves: list[Any]) -> tuple[Tile, Any]:
        """The window the dataset's index draws for an ``(image, label[, weights])``
        sample, and its deformation field (``None`` without ``deform``); a sampler sees
        the sample as ``{"image", "label", "weights"}`` (so that
        ``WeightedSampler("weights")`` reads the weights)."""
        flat = [ImageRole(leaves[0]), LabelRole(leaves[1])]
        if isinstance(self.index, Sampler):
            named = dict(zip(("image", "label", "weights"), leaves, strict=False))
            with self.index.bound_to((named,)):
                params = self._crop.make_params(flat)
        else:
            params = self._crop.make_params(flat)
        tile: Tile = params["tiles"][0]
        return tile, params.get("fields", [None])[0]

    def _crop_leaves(self, leaves: list[Any], tile: Tile, field: Any) -> tuple[Any, ...]:
        """The image's input window (an Image), the label's and the weights' output
        windows (a Mask and a WeightMap), deformed by ``field`` if given (each reads
        only the region the field reaches: arrays stay lazy)."""

        def window(leaf: Any, box: Any, fill: float | None, kind: type | None) -> Any:
            if field is None:
                return self._crop.crop(leaf, box, fill)
            # interpolated as the type it comes back as (arrays have no label types)
            return self._crop.deformed(leaf, kind is not None, tile, box, fill, field, kind)

        image = window(leaves[0], tile.input_box, None, None).as_subclass(torch.Tensor)
        if image.ndim == self.geometry.ndim:
            image = image.unsqueeze(0)  # one channel
        out: list[Any] = [image.as_subclass(tv_tensors.Image)]
        for leaf, fill, kind in zip(
            leaves[1:], self._fills, (tv_tensors.Mask, WeightMap), strict=False
        ):
            cropped = window(leaf, tile.output_box, fill, kind)
            out.append(cropped.as_subclass(torch.Tensor).as_subclass(kind))
        return tuple(out)

    def _measure(self, s: int) -> tuple[int, ...]:
        """The spatial size of sample ``s``; its errors name it as ``dataset[s]``."""
        try:
            sample = self.dataset[s]
        except LookupError as e:  # e.g. a dict not keyed 0..len-1
            raise ValueError(
                f"dataset[{s}] cannot be read ({type(e).__name__}: {e}): dataset must return "
                f"its samples for the indices 0..{len(self.dataset) - 1}"
            ) from e
        return self._named(s, self._sample_size, sample)

    @staticmethod
    def _named(s: int, size_of: Callable[..., tuple[int, ...]], *args: Any) -> tuple[int, ...]:
        """``size_of(*args)``, its errors naming the sample as ``dataset[s]``."""
        try:
            return size_of(*args)
        except (TypeError, ValueError) as e:
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"dataset[{s}]: {e}") from e

    def _sample_size(self, sample: Any, leaves: list[Any] | None = None) -> tuple[int, ...]:
        """The spatial size of a sample, read from shapes (checked to agree)."""
        if leaves is None:
            parts = _split(sample, self.geometry.ndim)
            if parts is None:
                return self._crop.sample_size(sample)
            leaves = parts[0]
        roles = [ImageRole(leaves[0]), *(LabelRole(leaf) for leaf in leaves[1:])]
        return self._crop.spatial_size(roles)

    def _check_size(self, s: int, size: tuple[int, ...]) -> None:
        if size != self.sizes[s]:
            raise ValueError(
                f"sizes[{s}] is {self.sizes[s]} but sample {s} has the spatial size {size}: "
                "pass each sample's size (the last axes of its image), or sizes=None to "
                "read them"
            )


def _check_index(index: object) -> Any:
    """``None``, ``"random"`` or a sampler; ints and ``"all"`` are for grids and stacks."""
    if is_int(index) or isinstance(index, bool) or (isinstance(index, str) and index == "all"):
        raise ValueError(
            "index must be None (every grid tile in turn), 'random' or a sampler "
            f"(random tiles, with tiles_per_epoch), got {index!r}"
        )
    return index


def _check_tiles_per_epoch(tiles_per_epoch: object, index: object) -> int | None:
    if index is None:
        if tiles_per_epoch is not None:
            raise ValueError(
                "tiles_per_epoch sets the length of a random dataset (index='random' or a "
                f"sampler); with index=None every grid tile is one item, got "
                f"tiles_per_epoch={tiles_per_epoch!r}"
            )
        return None
    if tiles_per_epoch is None:
        raise ValueError(
            f"tiles_per_epoch is required with index={index!r}: the number of random tiles "
            "an epoch draws, got None"
        )
    n = as_int("tiles_per_epoch", tiles_per_epoch)
    if n < 1:
        raise ValueError(f"tiles_per_epoch must be >= 1, got {n}")
    return n


def _check_sample_weights(weights: object, index: object, n: int) -> list[float] | None:
    """The cumulative sums of ``sample_weights`` (``None`` if not given)."""
    if weights is None:
        return None
    if index is None:
        raise ValueError(
            "sample_weights sets how often a random dataset (index='random' or a sampler) "
            "draws each sample; with index=None every grid tile is one item"
        )
    weights = as_list_if_1d(weights)
    if isinstance(weights, str | bytes | Mapping) or not hasattr(weights, "__len__"):
        raise TypeError(
            f"sample_weights must be a sequence of numbers, got {type(weights).__name__}"
        )
    if len(weights) != n:
        raise ValueError(
            f"sample_weights must give one weight per sample ({n}), got {len(weights)}"
        )
    cum: list[float] = []
    total = 0.0
    values: list[Any] = list(weights)  # type: ignore[call-overload]
    for i, w in enumerate(values):
        if isinstance(w, bool) or not isinstance(w, numbers.Real):
            raise TypeError(f"sample_weights[{i}] must be a number, got {type(w).__name__}")
        if not (math.isfinite(w) and float(w) >= 0):
            raise ValueError(f"sample_weights[{i}] must be finite and >= 0, got {w!r}")
        total += float(w)
        cum.append(total)
    if total <= 0:
        raise ValueError("sample_weights must give some sample a positive weight, got all 0")
    return cum


def _check_sizes(sizes: object, n: int, ndim: int) -> list[tuple[int, ...]]:
    sizes = as_list_if_1d(sizes)
    if isinstance(sizes, str | bytes | Mapping) or not hasattr(sizes, "__len__"):
        raise TypeError(
            f"sizes must be a sequence with one spatial size per sample, got {type(sizes).__name__}"
        )
    entries = list(sizes)  # type: ignore[call-overload]
    if len(entries) != n:
        raise ValueError(
            f"sizes must hold one spatial size per sample: the dataset has {n} samples, "
            f"sizes has {len(entries)}"
        )
    checked = []
    for s, size in enumerate(entries):
        size = as_list_if_1d(size)
        if isinstance(size, str | bytes | Mapping) or not hasattr(size, "__len__"):
            raise TypeError(
                f"sizes[{s}] must be a sequence of {ndim} ints, got {type(size).__name__}"
            )
        axes = tuple(as_int(f"sizes[{s}]", v) for v in size)
        if len(axes) != ndim or min(axes) < 1:
            raise ValueError(
                f"sizes[{s}] must be {ndim} positive ints (the geometry is {ndim}-D), "
                f"got {list(size)}"
            )
        checked.append(axes)
    return checked


def _is_array_like(x: object) -> bool:
    """A tensor, numpy array or array-like with ``.shape``, ``.dtype`` and slicing."""
    if isinstance(x, torch.Tensor | np.ndarray):
        return True
    return (
        hasattr(x, "shape")
        and hasattr(x, "dtype")
        and hasattr(x, "__getitem__")
        and not isinstance(x, str | bytes | np.generic)
    )


def _split(
    sample: Any, ndim: int
) -> tuple[list[Any], list[Any], Callable[[list[Any]], Any]] | None:
    """``([image, label(, weights)], rest, rebuild)`` for a sequence sample, else ``None``.

    A tuple or list (namedtuples included) whose first two entries are an image (a
    plain tensor or ``tv_tensors.Image``, an array or a PIL image) and a label (a plain
    tensor or ``tv_tensors.Mask``, an array or a PIL image); a third entry that is a
    tensor or array with at least ``ndim`` axes is the weights. ``rebuild`` makes the
    sample's container from the items.
    """
    if not (isinstance(sample, tuple | list) and len(sample) >= 2):
        return None
    image, label = sample[0], sample[1]
    if not (_is_leaf(image, tv_tensors.Image) and _is_leaf(label, tv_tensors.Mask)):
        return None
    leaves = [_shared(_from_pil(image, is_label=False)), _shared(_from_pil(label, is_label=True))]
    rest = list(sample[2:])
    if rest and _is_leaf(rest[0], WeightMap) and len(rest[0].shape) >= ndim:
        leaves.append(_shared(_check_weights(rest.pop(0))))

    def rebuild(items: list[Any]) -> Any:
        if isinstance(sample, list):
            return items
        if hasattr(sample, "_fields"):  # a namedtuple
            return type(sample)(*items)
        return tuple(items)

    return leaves, rest, rebuild


def _is_leaf(x: object, kind: type) -> bool:
    """A plain tensor or one of ``kind``, an array or a PIL image (not for weights)."""
    if isinstance(x, tv_tensors.TVTensor):
        return isinstance(x, kind)
    if isinstance(x, PIL.Image.Image):
        return kind is not WeightMap
    return _is_array_like(x)


def _check_weights(weights: Any) -> Any:
    dtype = weights.dtype
    floating = dtype.is_floating_point if isinstance(dtype, torch.dtype) else None
    if floating is None:
        floating = np.dtype(dtype).kind == "f"
    if not floating:
        raise TypeError(
            f"weights (the third entry of a sample) must be a floating-point map, got dtype "
            f"{dtype}"
        )
    return weights


def _whole(raw: Any, label: Any) -> Any:
    """The whole label for a sampler: a numpy array (a memory map too) as it is, so that
    the sampler's cache of class locations, kept per array, serves every item; tensors
    as they are; other array-likes read whole."""
    if isinstance(raw, np.ndarray):
        return raw
    return label if isinstance(label, torch.Tensor) else to_tensor_region(label, ())


def _shared(x: Any, *, maps: bool = False) -> Any:
    """A numpy array as a tensor sharing its memory where torch can (writable, native
    byte order, dtypes torch indexes, no negative strides), else unchanged; memory maps
    (read window by window) only with ``maps``."""
    if (
        isinstance(x, np.ndarray)
        and (maps or not isinstance(x, np.memmap))
        and x.flags.writeable
        and min(x.strides, default=0) >= 0
        and torch_compatible(x) is x
    ):
        return torch.from_numpy(x)
    return x


def _from_pil(x: Any, *, is_label: bool) -> Any:
    """A PIL image as a tensor ``(C, H, W)`` (images) or an array ``(H, W)`` (single-band
    labels; ``(bands, H, W)`` otherwise); other values unchanged."""
    if not isinstance(x, PIL.Image.Image):
        return x
    if not is_label:
        return tvF.pil_to_tensor(x)
    arr = np.array(x)  # writable: shared with a tensor, as arrays in memory are
    return arr if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


class _MemmapFile:
    """A numpy memory map of a whole file region, pickled as the call that maps it again."""

    def __init__(self, array: np.memmap) -> None:
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        mode = "r+" if array.mode == "w+" else array.mode  # w+ would empty the file
        self.args = (array.filename, array.dtype, mode, array.offset, array.shape, order)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return np.memmap, self.args


def _memmaps_by_file(value: Any) -> Any:
    """``value`` with the memory maps in its lists, tuples and dicts as :class:`_MemmapFile`
    (views of a map, which numpy cannot map again, are left as they are)."""
    if isinstance(value, np.memmap) and isinstance(value.base, mmap.mmap) and value.filename:
        return _MemmapFile(value)
    if type(value) in (list, tuple):
        return type(value)(_memmaps_by_file(v) for v in value)
    if type(value) is dict:
        return {k: _memmaps_by_file(v) for k, v in value.items()}
    return value
