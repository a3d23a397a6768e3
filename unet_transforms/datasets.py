"""Datasets a config can describe: image and mask files paired by name."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as tvF

from .config import Configurable

__all__ = ["ImageMaskFolder"]

_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


class ImageMaskFolder(Configurable, torch.utils.data.Dataset[Any]):
    """Image and mask files of two folders, paired by name, read when accessed.

    Every file of ``images`` with one of ``suffixes`` is a sample; its mask is the file
    of ``masks`` named ``mask_name.format(stem=...)`` with the image's stem, with any of
    ``suffixes`` (or exactly as named, if ``mask_name`` ends in one). At construction
    only the file headers are read, to pair and check the files: images without a
    mask, masks without an image, unreadable files and pairs whose spatial sizes differ
    are all refused in one message listing them.

    A sample is ``(tv_tensors.Image, tv_tensors.Mask)``, read when it is accessed:
    PNG (and other PIL formats) through PIL, TIFF through tifffile (the ``io`` extra),
    ``.npy`` memory-mapped. Images come back as ``(C, H, W)``: a 2-D array gets one
    channel, a 3-D array is channels-first unless its last axis has at most 4 entries
    and its first more (an RGB TIFF is ``(H, W, C)``). Masks come back as ``(H, W)``
    (a single leading channel is dropped). Dtypes are kept.

    Args:
        images: Folder of the images.
        masks: Folder of the masks.
        transforms: Called as ``transforms(image, mask)`` on each sample, e.g. a
            ``v2.Compose`` with :class:`~unet_transforms.PairedTileCrop`.
        suffixes: File name endings that count as images and masks.
        mask_name: The mask's name for an image's ``{stem}``, e.g. ``"{stem}_mask"``.

    Raises:
        ValueError: If a folder is missing or empty, or files are unpaired, unreadable
            or of different sizes (all of them listed).
        TypeError: If ``transforms`` is not callable or ``suffixes`` not strings.

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
        if isinstance(suffixes, str) or not all(isinstance(s, str) for s in suffixes):
            raise TypeError(f"suffixes must be a sequence of str, got {suffixes!r}")
        if not isinstance(mask_name, str) or "{stem}" not in mask_name:
            raise ValueError(f"mask_name must be a str containing '{{stem}}', got {mask_name!r}")
        self.transforms = transforms
        self.suffixes = tuple(s.lower() for s in suffixes)
        image_dir = _folder("images", images)
        mask_dir = _folder("masks", masks)
        self.pairs = self._pair(image_dir, mask_dir, mask_name)

    def _pair(self, image_dir: Path, mask_dir: Path, mask_name: str) -> list[tuple[Path, Path]]:
        image_files = self._files(image_dir)
        if not image_files:
            raise ValueError(
                f"images folder {str(image_dir)!r} holds no file ending in "
                f"{', '.join(self.suffixes)}"
            )
        masks_by_name = {p.name: p for p in self._files(mask_dir)}
        problems: list[str] = []
        pairs: list[tuple[Path, Path]] = []
        used: set[str] = set()
        for image in image_files:
            wanted = mask_name.format(stem=_stem(image, self.suffixes))
            names = (
                [wanted]
                if wanted.lower().endswith(self.suffixes)
                else [wanted + s for s in self.suffixes]
                + [wanted + s.upper() for s in self.suffixes]
            )
            found = [masks_by_name[n] for n in names if n in masks_by_name]
            if len(found) != 1:
                why = (
                    "no mask"
                    if not found
                    else f"{len(found)} masks ({', '.join(p.name for p in found)})"
                )
                problems.append(f"{image.name}: {why} named {wanted!r} in {str(mask_dir)!r}")
                continue
            used.add(found[0].name)
            image_size, mask_size = _read_size(image, problems), _read_size(found[0], problems)
            if image_size and mask_size and image_size[-2:] != mask_size[-2:]:
                problems.append(
                    f"{image.name} and {found[0].name} differ in size ({image_size} vs {mask_size})"
                )
            pairs.append((image, found[0]))
        problems += [
            f"{name}: a mask without an image" for name in sorted(set(masks_by_name) - used)
        ]
        if problems:
            listed = "\n  ".join(problems)
            raise ValueError(f"ImageMaskFolder found {len(problems)} problem(s):\n  {listed}")
        return pairs

    def _files(self, folder: Path) -> list[Path]:
        return sorted(
            p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(self.suffixes)
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        image_path, mask_path = self.pairs[index]
        image = tv_tensors.Image(_as_channels_first(_read(image_path)))
        mask_data = _read(mask_path)
        if mask_data.ndim == 3 and mask_data.shape[0] == 1:
            mask_data = mask_data[0]
        mask = tv_tensors.Mask(mask_data)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask


def _folder(name: str, value: object) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a folder path, got {type(value).__name__}")
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"{name} must be an existing folder, got {str(path)!r}")
    return path


def _stem(path: Path, suffixes: tuple[str, ...]) -> str:
    name = path.name
    for suffix in sorted(suffixes, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "npy" if suffix == ".npy" else "tiff" if suffix in (".tif", ".tiff") else "pil"


def _read_size(path: Path, problems: list[str]) -> tuple[int, ...] | None:
    """The array shape from the file's header (H, W last), or None with a problem noted."""
    try:
        kind = _kind(path)
        if kind == "npy":
            shape = tuple(np.load(path, mmap_mode="r").shape)
        elif kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(tif.series[0].shape)
        else:
            with PIL.Image.open(path) as im:
                shape = (im.height, im.width)
    except ImportError as e:
        raise ImportError(f"reading {path.name} needs tifffile: pip install tifffile ({e})") from e
    except Exception as e:  # any reader failure makes the file unreadable
        problems.append(f"{path.name}: unreadable ({type(e).__name__}: {e})")
        return None
    if len(shape) == 3 and shape[-1] <= 4 < shape[0]:
        shape = shape[:2]  # (H, W, C)
    if len(shape) < 2:
        problems.append(f"{path.name}: has {len(shape)} axes, expected 2 or 3")
        return None
    return shape


def _read(path: Path) -> torch.Tensor:
    kind = _kind(path)
    if kind == "pil":
        with PIL.Image.open(path) as im:
            data: torch.Tensor = tvF.pil_to_tensor(im)  # (C, H, W)
        return data
    if kind == "tiff":
        import tifffile

        array = tifffile.imread(path)
    else:
        array = np.load(path, mmap_mode="r")
    return torch.from_numpy(np.array(array))  # one copy: a writable tensor


def _as_channels_first(data: torch.Tensor) -> torch.Tensor:
    if data.ndim == 2:
        return data[None]
    if data.ndim == 3 and data.shape[-1] <= 4 < data.shape[0]:
        return data.permute(2, 0, 1).contiguous()
    return data
