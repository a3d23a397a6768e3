"""TiledDataset: every overlap tile of every sample, as its own item."""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision.transforms.v2 import functional as tvF

from .config import Configurable, from_config
from .functional._mirror import MirrorMode, check_mode
from .functional._tile import torch_compatible
from .geometry import TileGeometry
from .grid import Align, TileGrid, TileIndexError
from .transforms import PairedTileCrop
from .transforms._base import MaskFill, _is_plain, check_align, check_geometry, check_mask_fill

__all__ = ["TiledDataset"]


class TiledDataset(Configurable, torch.utils.data.Dataset[Any]):
    """Yields every grid tile of every sample of a map-style dataset as its own item.

    The "train many times on one image" option: item ``k`` is tile ``t`` of sample
    ``s``, cropped with :class:`PairedTileCrop` (``index=t``): the image gets the
    tile's input window, the label its output window. Samples are read once at
    construction to learn their sizes (and so the number of tiles), then once per item.
    Works with ``DataLoader(num_workers > 0)``.

    Args:
        dataset: A map-style dataset (``__len__`` and ``__getitem__``), or its config
            (a mapping with ``"_target_"``, built by :func:`~unet_transforms.from_config`
            with the library's names only). A sample that is
            a tuple or list starting with two plain tensors, numpy arrays or PIL images
            is ``(image, label, *rest)``: the image gets the input window, the label
            the output window and the rest passes through. Images come back as
            tensors ``(C, H, W)`` and labels as ``tv_tensors.Mask`` (numpy arrays and
            PIL images are converted, so items collate in a ``DataLoader``). Any other
            sample is given to :class:`PairedTileCrop` as it is (``tv_tensors.Mask``
            entries are labels there, e.g. in a dict).
        geometry: The :class:`TileGeometry`, or a mapping of its arguments.
        mode: ``"reflect"`` or ``"symmetric"``.
        align: Grid alignment: ``"center"`` or ``"start"``.
        mask_fill: Value for label pixels outside the image (an ignore index), or a
            per-type mapping as :class:`PairedTileCrop` takes it.
        transforms: Applied to each cropped item, e.g. random flips: called as
            ``transforms(image, label)`` for ``(image, label, ...)`` samples (like
            torchvision datasets' ``transforms=``; the label is a ``Mask``, so v2
            transforms move it with the image) and as ``transforms(item)`` otherwise.

    Example:
        >>> import torch
        >>> samples = [(torch.rand(1, 300, 500), torch.zeros(300, 500, dtype=torch.int64))]
        >>> tiles = TiledDataset(samples, TileGeometry(188, 100))
        >>> len(tiles), tiles.locate(4)
        (15, (0, 4))
        >>> image, label = tiles[4]
        >>> tuple(image.shape), tuple(label.shape)
        ((1, 188, 188), (100, 100))
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
    ) -> None:
        if transforms is not None and not callable(transforms):
            raise TypeError(
                f"transforms must be callable or None, got {type(transforms).__name__}"
            )
        self.transforms = transforms
        if isinstance(dataset, Mapping) and "_target_" in dataset:
            dataset = from_config(dataset)
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                "dataset must be a map-style dataset with __len__ and __getitem__, got "
                f"{type(dataset).__name__}"
            )
        self.dataset = dataset
        self.geometry = check_geometry(geometry)
        self.mode = check_mode(mode)
        self.align = check_align(align)
        self.mask_fill = check_mask_fill(mask_fill)
        probe = PairedTileCrop(self.geometry, index=0, mode=mode, align=align, mask_fill=mask_fill)
        self.grid_shapes: list[tuple[int, ...]] = []
        self.offsets: list[int] = [0]
        for s in range(len(dataset)):
            size = probe.sample_size(*_roles(dataset[s])[0])
            grid = TileGrid(size, self.geometry, align=align)
            self.grid_shapes.append(grid.shape)
            self.offsets.append(self.offsets[-1] + len(grid))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(sample index, tile index)`` of item ``index``."""
        n = len(self)
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = operator.index(index)
        if not -n <= index < n:
            raise TileIndexError(f"index must be in [{-n}, {n}), got {index}")
        index %= n
        sample = bisect.bisect_right(self.offsets, index) - 1
        return sample, index - self.offsets[sample]

    def __getitem__(self, index: int) -> Any:
        sample, tile = self.locate(index)
        crop = PairedTileCrop(
            self.geometry, index=tile, mode=self.mode, align=self.align, mask_fill=self.mask_fill
        )
        args, rebuild = _roles(self.dataset[sample])
        out = crop(*args)
        if self.transforms is not None:
            out = self.transforms(*out) if len(args) == 2 else self.transforms(out)
        return rebuild(out)


def _roles(sample: Any) -> tuple[tuple[Any, ...], Any]:
    """The call arguments for a sample, and how to rebuild the sample from the result.

    ``(image, label, *rest)`` tuples and lists (first two entries plain tensors, arrays
    or PIL images) are called as ``crop(image, label)``, which makes the second entry
    the label; everything else is called as ``crop(sample)``.
    """
    if isinstance(sample, tuple | list) and len(sample) >= 2:
        image, label = _as_plain(sample[0], is_label=False), _as_plain(sample[1], is_label=True)
        if _is_plain(image) and _is_plain(label):
            rest = list(sample[2:])

            def rebuild(pair: tuple[Any, Any]) -> Any:
                items = [*pair, *rest]
                if isinstance(sample, list):
                    return items
                if hasattr(sample, "_fields"):  # a namedtuple
                    return type(sample)(*items)
                return tuple(items)

            return (image, label), rebuild
    return (sample,), _identity


def _as_plain(x: Any, *, is_label: bool) -> Any:
    """A numpy array as a tensor (a view when it can be one), a PIL image as a tensor
    (``(C, H, W)`` for images, ``(H, W)`` for single-band labels); other values unchanged."""
    if isinstance(x, PIL.Image.Image):
        if not is_label:
            return tvF.pil_to_tensor(x)
        x = np.asarray(x)
        x = x if x.ndim == 2 else np.moveaxis(x, -1, 0)
    if not isinstance(x, np.ndarray):
        return x
    arr = torch_compatible(x)
    if not (arr.flags.writeable and arr.flags.c_contiguous):
        arr = np.array(arr, order="C")  # torch wants writable memory; crops copy anyway
    return torch.from_numpy(arr)


def _identity(x: Any) -> Any:
    return x
