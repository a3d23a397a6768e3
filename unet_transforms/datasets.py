"""Datasets a config can describe: image and mask files paired by name."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors

from .config import Configurable

__all__ = ["ImageMaskFolder"]

_SUFFIXES = (".png", ".tif", ".tiff", ".npy")

_Key = tuple[str, str]  # (stem, lower-case suffix) of a file name


class ImageMaskFolder(Configurable, torch.utils.data.Dataset[Any]):
    """Image and mask files of two folders, paired by name, read when accessed.

    Every file of ``images`` whose name ends in one of ``suffixes`` (in any case) is a
    sample, in name order; hidden files (``.name``) and other files are ignored. Its
    mask is the file of ``masks`` named ``mask_name.format(stem=...)`` with the image's
    stem, followed by any of ``suffixes`` (or exactly as named, if ``mask_name`` ends in
    one; the suffix's case does not matter). ``images`` and ``masks`` may be one folder
    when ``mask_name`` tells the masks apart (e.g. ``"{stem}_mask"``): a file that is
    another file's mask is not an image there.

    At construction only the file headers are read, to pair and check the files:
    images without a mask, masks without an image, images sharing a mask, unreadable
    files (including dtypes torch has not) and pairs whose spatial sizes differ are all
    refused in one message listing them.

    A sample is ``(tv_tensors.Image, tv_tensors.Mask)``, read when it is accessed:
    PNG (and other PIL formats) through PIL, TIFF through tifffile (the ``io`` extra),
    ``.npy`` memory-mapped and copied once. Dtypes are kept (in native byte order).

    Shape:
        - Image: ``(C, H, W)``. A 2-D array gets one channel. A TIFF is channels-last
          when its axes end in samples (an RGB TIFF, ``(H, W, 3)``), else channels-first
          (a multi-page ``(C, H, W)`` stack). A 3-D ``.npy`` is channels-last when its
          last axis has at most 4 entries and its first more, else channels-first. A PIL
          image has one channel per band; a palette (``P``) image is converted to RGB
          (RGBA with transparency).
        - Mask: the same rules, then a single channel is dropped: ``(H, W)`` (or
          ``(C, H, W)`` for several channels). A palette PNG keeps its indices.

    Args:
        images: Folder of the images.
        masks: Folder of the masks.
        transforms: Called as ``transforms(image, mask)`` on each sample, e.g. a
            ``v2.Compose`` with :class:`~unet_transforms.PairedTileCrop`.
        suffixes: File name endings that count as images and masks.
        mask_name: The mask's name for an image's ``{stem}``, e.g. ``"{stem}_mask"`` or
            ``"{stem}_label.png"``.

    Raises:
        ValueError: If a folder is missing or holds no image, ``suffixes`` or
            ``mask_name`` is malformed, or files are unpaired, unreadable or of
            different sizes (all of them listed).
        TypeError: If a folder is not a path, ``transforms`` is not callable,
            ``suffixes`` is not a list or tuple of str or ``mask_name`` not a str.

    Example:
        >>> import tempfile, numpy as np
        >>> root = Path(tempfile.mkdtemp())
        >>> for sub in ("img", "lbl"):
        ...     (root / sub).mkdir()
        >>> np.save(root / "img" / "a.npy", np.zeros((40, 30), np.float32))
        >>> np.save(root / "lbl" / "a.npy", np.ones((40, 30), np.uint8))
        >>> data = ImageMaskFolder(root / "img", root / "lbl")
        >>> image, mask = data[0]
        >>> type(image).__name__, tuple(image.shape), type(mask).__name__, tuple(mask.shape)
        ('Image', (1, 40, 30), 'Mask', (40, 30))
    """

    def __init__(
        self,
        images: str | os.PathLike[str],
        masks: str | os.PathLike[str],
        *,
        transforms: Callable[..., Any] | None = None,
        suffixes: Sequence[str] = _SUFFIXES,
        mask_name: str = "{stem}",
    ) -> None:
        if transforms is not None and not callable(transforms):
            raise TypeError(
                f"transforms must be callable or None, got {type(transforms).__name__}"
            )
        self.transforms = transforms
        self.suffixes = _check_suffixes(suffixes)
        self.mask_name = _check_mask_name(mask_name)
        self.pairs: tuple[tuple[Path, Path], ...] = tuple(
            _pair(_folder("images", images), _folder("masks", masks), self)
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        """Reads sample ``index``: ``transforms(image, mask)``, or ``(image, mask)``.

        Raises:
            TypeError: If ``index`` is not an integer.
            IndexError: If ``index`` is out of range.
        """
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        i, n = operator.index(index), len(self.pairs)
        if not -n <= i < n:
            raise IndexError(f"index must be in [{-n}, {n}), got {i}")
        image_path, mask_path = self.pairs[i]
        image = tv_tensors.Image(_read(image_path, is_mask=False))
        mask = tv_tensors.Mask(_read(mask_path, is_mask=True))
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def _key(self, name: str) -> _Key | None:
        """``(stem, suffix)`` of a file name that ends in one of the suffixes, else None."""
        for suffix in sorted(self.suffixes, key=len, reverse=True):
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)], suffix
        return None

    def _mask_keys(self, stem: str) -> list[_Key]:
        """The keys a mask of the image with this stem may have."""
        name = self.mask_name.format(stem=stem)
        key = self._key(name)
        return [key] if key is not None else [(name, s) for s in self.suffixes]

    def _listing(self, folder: Path) -> dict[Path, _Key]:
        """The visible files of ``folder`` ending in one of the suffixes, by name."""
        return {
            p: key
            for p in sorted(folder.iterdir())
            if not p.name.startswith(".") and p.is_file() and (key := self._key(p.name))
        }

    def _describe(self, stem: str) -> str:
        """The mask name looked for, for messages."""
        name = self.mask_name.format(stem=stem)
        if self._key(name) is not None:
            return repr(name)
        return f"{name!r} + one of {', '.join(self.suffixes)}"


def _check_suffixes(suffixes: object) -> tuple[str, ...]:
    if not isinstance(suffixes, list | tuple) or not all(isinstance(s, str) for s in suffixes):
        raise TypeError(
            f"suffixes must be a list or tuple of str such as ('.png', '.tif'), got {suffixes!r}"
        )
    if not suffixes or not all(suffixes):
        raise ValueError(f"suffixes must be non-empty strings, got {suffixes!r}")
    return tuple(dict.fromkeys(s.lower() for s in suffixes))


def _check_mask_name(mask_name: object) -> str:
    if not isinstance(mask_name, str):
        raise TypeError(f"mask_name must be a str such as '{{stem}}_mask', got {mask_name!r}")
    try:
        uses_stem = mask_name.format(stem="a") != mask_name.format(stem="b")
    except (KeyError, IndexError, ValueError):
        uses_stem = False
    if not uses_stem or any(sep in mask_name for sep in ("/", os.sep, os.altsep) if sep):
        raise ValueError(
            "mask_name must be a file name using the field {stem} (and no other), e.g. "
            f"'{{stem}}_mask', got {mask_name!r}"
        )
    return mask_name


def _folder(name: str, value: object) -> Path:
    if not isinstance(value, str | os.PathLike) or not isinstance(os.fspath(value), str):
        raise TypeError(f"{name} must be a folder path (str or os.PathLike), got {value!r}")
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"{name} must be an existing folder, got {str(path)!r}")
    return path


def _pair(image_dir: Path, mask_dir: Path, data: ImageMaskFolder) -> list[tuple[Path, Path]]:
    """The (image, mask) pairs of the folders; one ValueError listing every problem."""
    files = data._listing(image_dir)
    if image_dir.resolve() == mask_dir.resolve():
        if data.mask_name == "{stem}":
            raise ValueError(
                f"mask_name must tell masks from images when images and masks are one "
                f"folder ({str(image_dir)!r}), e.g. '{{stem}}_mask', got '{{stem}}'"
            )
        # a file is a mask when another file names it as its mask
        claimed = {k for p, key in files.items() for k in data._mask_keys(key[0]) if k != key}
        mask_files = {p: key for p, key in files.items() if key in claimed}
    else:
        mask_files = data._listing(mask_dir)
    image_files = [p for p in files if p not in mask_files]
    if not image_files:
        raise ValueError(
            f"images folder {str(image_dir)!r} holds no image: no file ending in "
            f"{', '.join(data.suffixes)}"
        )
    masks_by_key: dict[_Key, list[Path]] = {}
    for p, key in mask_files.items():
        masks_by_key.setdefault(key, []).append(p)
    problems: list[str] = []
    pairs: list[tuple[Path, Path]] = []
    owner: dict[Path, Path] = {}
    candidates: set[Path] = set()  # masks some image looked for
    for image in image_files:
        image_size = _checked_header(image, problems)
        stem = files[image][0]
        found = [m for k in data._mask_keys(stem) for m in masks_by_key.get(k, []) if m != image]
        candidates.update(found)
        if len(found) != 1:
            names = ", ".join(m.name for m in found)
            why = f"{len(found)} masks ({names})" if found else "no mask"
            problems.append(
                f"{image.name}: {why} named {data._describe(stem)} in {str(mask_dir)!r}"
            )
            continue
        mask = found[0]
        if mask in owner:
            problems.append(
                f"{image.name}: its mask {mask.name} is the mask of {owner[mask].name}"
            )
            continue
        owner[mask] = image
        mask_size = _checked_header(mask, problems)
        if image_size and mask_size and image_size != mask_size:
            problems.append(
                f"{image.name} {image_size} and its mask {mask.name} {mask_size} differ in "
                "their spatial size (H, W)"
            )
        pairs.append((image, mask))
    problems += [f"{m.name}: a mask without an image" for m in mask_files if m not in candidates]
    if problems:
        listed = "\n  ".join(problems)
        raise ValueError(
            f"ImageMaskFolder found {len(problems)} problem(s) in images {str(image_dir)!r} "
            f"and masks {str(mask_dir)!r}:\n  {listed}"
        )
    return pairs


# --------------------------------------------------------------------------- reading
def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "npy" if suffix == ".npy" else "tiff" if suffix in (".tif", ".tiff") else "pil"


def _tifffile() -> Any:
    try:
        import tifffile
    except ImportError as e:
        raise ImportError(
            f"reading TIFF files needs tifffile: pip install 'unet-transforms[io]' ({e})"
        ) from e
    return tifffile


def _npy_channels_last(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[-1] <= 4 < shape[0]


def _checked_header(path: Path, problems: list[str]) -> tuple[int, int] | None:
    """The spatial size ``(H, W)`` from the file's header, or None with a problem noted."""
    try:
        return _header(path)
    except ImportError:
        raise
    except Exception as e:  # any reader failure makes the file unreadable
        problems.append(f"{path.name}: unreadable ({type(e).__name__}: {e})")
        return None


def _header(path: Path) -> tuple[int, int]:
    """The spatial size ``(H, W)`` of a file, from its header (no pixel data is read).

    Raises:
        ValueError: If the file's array is not 2-D or 3-D, is empty, or has a dtype
            torch does not have.
    """
    kind = _kind(path)
    if kind == "pil":
        with PIL.Image.open(path) as im:
            return im.height, im.width
    if kind == "npy":
        with path.open("rb") as f:
            np.lib.format.read_magic(f)  # a clear message for a file that is no .npy
        # maps the file (checking its header and length) without reading the data
        array = np.load(path, mmap_mode="r")
        shape, dtype, channels_last = array.shape, array.dtype, _npy_channels_last(array.shape)
        del array
    else:
        with _tifffile().TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            channels_last = series.axes.endswith("S")
    if len(shape) not in (2, 3):
        raise ValueError(f"has {len(shape)} axes {shape}, expected 2 or 3")
    if 0 in shape:
        raise ValueError(f"is empty, shape {shape}")
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise ValueError(f"has dtype {dtype}, expected a bool, integer or float dtype of torch")
    height, width = shape[:2] if channels_last else shape[-2:]
    return int(height), int(width)


def _read(path: Path, *, is_mask: bool) -> torch.Tensor:
    """The pixels of a file: ``(C, H, W)``; masks with a single channel ``(H, W)``."""
    kind = _kind(path)
    array: np.ndarray[Any, Any]
    if kind == "pil":
        with PIL.Image.open(path) as im:
            if im.mode in ("P", "PA") and not is_mask:
                rgba = im.mode == "PA" or "transparency" in im.info
                array = np.asarray(im.convert("RGBA" if rgba else "RGB"))
            else:
                array = np.asarray(im)
        channels_last = array.ndim == 3
    elif kind == "npy":
        array = np.load(path, mmap_mode="r")
        channels_last = _npy_channels_last(array.shape)
    else:
        with _tifffile().TiffFile(path) as tif:
            series = tif.series[0]
            array, channels_last = series.asarray(), series.axes.endswith("S")
    data = _channels_first(array, channels_last)
    if is_mask and data.shape[0] == 1:
        return data[0]
    return data


def _channels_first(array: np.ndarray[Any, Any], channels_last: bool) -> torch.Tensor:
    """``array`` as a contiguous, writable ``(C, H, W)`` tensor in native byte order.

    Copies at most once: a memory map or a read-only buffer is copied straight into the
    channels-first, native-order result; a writable array already in that form is used
    as it is.
    """
    view = (
        array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0) if channels_last else array
    )
    dtype = view.dtype.newbyteorder("=")
    if not (view.flags.writeable and view.flags.c_contiguous and view.dtype == dtype):
        view = np.array(view, dtype=dtype, order="C")
    return torch.from_numpy(view)
