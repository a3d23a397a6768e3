"""ImageMaskFolder: image and mask files paired by name, read lazily, described by a config."""

from __future__ import annotations

import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tifffile
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from unet_transforms import (
    PairedTileCrop,
    TiledDataset,
    TileGeometry,
    TileGrid,
    datasets,
    from_config,
)
from unet_transforms.datasets import ImageMaskFolder

H, W = 17, 11  # odd, non-square: catches height/width swaps
RNG = np.random.default_rng(0)


def pixels(shape, dtype=np.uint8, high=200):
    """Distinct-looking values of ``dtype`` (bool: random bits)."""
    if np.dtype(dtype) == bool:
        return RNG.integers(0, 2, shape).astype(bool)
    return RNG.integers(0, high, shape).astype(dtype)


def write(path: Path, array=None, *, mode=None, **tiff_kwargs) -> np.ndarray:
    """Writes ``array`` as the file's format; returns what a reader should give back."""
    array = pixels((H, W)) if array is None else array
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with open(path, "wb") as f:  # np.save(path) would append ".npy" to "a.NPY"
            np.save(f, array)
    elif suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **tiff_kwargs)
    else:
        image = PIL.Image.fromarray(array) if mode is None else PIL.Image.fromarray(array, mode)
        image.save(path)
    return array


@pytest.fixture
def dirs(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    return images, masks


def plain(x):
    return x.as_subclass(torch.Tensor)


# --------------------------------------------------------------------------- pairing
def test_pairs_by_stem_in_name_order_across_formats(dirs):
    images, masks = dirs
    expected = {
        "b": (write(images / "b.npy", pixels((H, W), np.float32)), write(masks / "b.png")),
        "a": (write(images / "a.png"), write(masks / "a.npy", pixels((H, W), np.int64))),
        "c": (
            write(images / "c.tif", pixels((H, W), np.uint16), photometric="minisblack"),
            write(masks / "c.tiff", photometric="minisblack"),
        ),
    }
    data = ImageMaskFolder(images, masks)
    assert len(data) == 3
    assert [(i.name, m.name) for i, m in data.pairs] == [
        ("a.png", "a.npy"),
        ("b.npy", "b.png"),
        ("c.tif", "c.tiff"),
    ]
    for k, stem in enumerate("abc"):
        image, mask = data[k]
        assert type(image) is tv_tensors.Image and type(mask) is tv_tensors.Mask
        assert np.array_equal(image.numpy()[0], expected[stem][0]) and image.shape == (1, H, W)
        assert np.array_equal(mask.numpy(), expected[stem][1]) and mask.shape == (H, W)


@pytest.mark.parametrize(
    ("mask_name", "mask_file"),
    [
        ("{stem}_mask", "x_mask.png"),
        ("{stem}_mask", "x_mask.npy"),
        ("label-{stem}", "label-x.tif"),
        ("{stem}_label.png", "x_label.png"),
        ("{stem}_label.png", "x_label.PNG"),  # the suffix's case does not matter
        ("{stem}.npy", "x.npy"),
    ],
)
def test_mask_name(dirs, mask_name, mask_file):
    images, masks = dirs
    write(images / "x.png")
    mask = write(masks / mask_file, photometric="minisblack")
    data = ImageMaskFolder(images, masks, mask_name=mask_name)
    assert data.pairs == ((images / "x.png", masks / mask_file),)
    assert np.array_equal(data[0][1].numpy(), mask)


def test_explicit_mask_suffix_leaves_other_suffixes_unpaired(dirs):
    images, masks = dirs
    write(images / "x.png")
    write(masks / "x_label.png")
    write(masks / "x_label.npy")
    with pytest.raises(ValueError, match=r"x_label\.npy: a mask without an image"):
        ImageMaskFolder(images, masks, mask_name="{stem}_label.png")
    write(images / "y.png")
    write(masks / "y.png")
    with pytest.raises(
        ValueError,
        match=r"y\.png: no mask named 'y_label' \+ one of \.png, \.tif, \.tiff, \.npy in",
    ):
        ImageMaskFolder(images, masks, mask_name="{stem}_label")


def test_suffixes_match_in_any_case(dirs):
    images, masks = dirs
    write(images / "A.PNG")
    write(images / "b.Tif", photometric="minisblack")
    write(images / "c.npy")
    write(masks / "A.png")
    write(masks / "b.TIFF", photometric="minisblack")
    write(masks / "c.NPY")
    pairs = [(i.name, m.name) for i, m in ImageMaskFolder(images, masks).pairs]
    assert pairs == [("A.PNG", "A.png"), ("b.Tif", "b.TIFF"), ("c.npy", "c.NPY")]
    data = ImageMaskFolder(images, masks, suffixes=[".PNG"])
    assert [(i.name, m.name) for i, m in data.pairs] == [("A.PNG", "A.png")]
    assert data.suffixes == (".png",)


def test_stems_are_case_sensitive(dirs):
    images, masks = dirs
    write(images / "a.png")
    write(masks / "A.png")
    with pytest.raises(ValueError, match=r"a\.png: no mask named 'a'.*\n  A\.png: a mask without"):
        ImageMaskFolder(images, masks)


def test_other_files_are_ignored(dirs):
    images, masks = dirs
    write(images / "a.png")
    write(masks / "a.png")
    for folder in dirs:
        (folder / "notes.txt").write_text("not an image")
        (folder / ".hidden.png").write_bytes(b"resource fork")
        (folder / "sub.png").mkdir()  # a folder, not a file
        write(folder / "photo.jpg", pixels((H, W, 3)))
        np.savez(folder / "raw.npz", pixels((H, W)))  # not one of the suffixes
    assert [(i.name, m.name) for i, m in ImageMaskFolder(images, masks).pairs] == [
        ("a.png", "a.png")
    ]
    jpg = ImageMaskFolder(images, masks, suffixes=(".jpg",))
    assert [i.name for i, _ in jpg.pairs] == ["photo.jpg"]
    assert jpg[0][0].shape == (3, H, W)


def test_one_folder_for_images_and_masks(tmp_path):
    write(tmp_path / "a.png")
    mask = write(tmp_path / "a_mask.png")
    write(tmp_path / "b.tif", photometric="minisblack")
    write(tmp_path / "b_mask.npy")
    data = ImageMaskFolder(tmp_path, tmp_path, mask_name="{stem}_mask")
    assert [(i.name, m.name) for i, m in data.pairs] == [
        ("a.png", "a_mask.png"),
        ("b.tif", "b_mask.npy"),
    ]
    assert np.array_equal(data[0][1].numpy(), mask)
    npy = tmp_path / "npy"
    npy.mkdir()
    write(npy / "c.png")
    write(npy / "c.npy")
    write(npy / "d.npy")  # its own mask name: an image without a mask
    with pytest.raises(
        ValueError, match=r"found 1 problem\(s\).*\n  d\.npy: no mask named 'd\.npy'"
    ):
        ImageMaskFolder(npy, npy, mask_name="{stem}.npy")
    with pytest.raises(ValueError, match="mask_name must tell masks from images when images and"):
        ImageMaskFolder(tmp_path, tmp_path)


# --------------------------------------------------------------------------- refusals
def test_every_problem_is_listed_in_one_error(dirs):
    images, masks = dirs
    write(images / "alone.png")  # no mask
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    write(masks / "broken.png")
    write(images / "small.npy", pixels((H, W - 1)))
    write(masks / "small.png")  # size mismatch
    write(images / "twice.png")
    write(masks / "twice.png")
    write(masks / "twice.npy")  # two masks for one image
    write(images / "shared.png")
    write(images / "shared.npy")
    write(masks / "shared.tif", photometric="minisblack")  # one mask for two images
    write(images / "ok.png")
    (masks / "ok.npy").write_bytes(b"not an array")  # an unreadable mask
    write(masks / "orphan.png")  # a mask without an image
    write(images / "fine.png")
    write(masks / "fine.png")
    with pytest.raises(ValueError) as info:
        ImageMaskFolder(images, masks)
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == (
        f"ImageMaskFolder found 7 problem(s) in images {str(images)!r} and masks {str(masks)!r}:"
    )
    expected = [
        f"alone.png: no mask named 'alone' + one of .png, .tif, .tiff, .npy in {str(masks)!r}",
        "broken.png: unreadable (UnidentifiedImageError: ",
        "ok.npy: unreadable (ValueError: the magic string is not correct",
        "shared.png: its mask shared.tif is the mask of shared.npy",
        "small.npy (17, 10) and its mask small.png (17, 11) differ in their spatial size (H, W)",
        "twice.png: 2 masks (twice.png, twice.npy) named 'twice' + one of",
        "orphan.png: a mask without an image",
    ]
    assert len(lines) == 1 + len(expected)
    for line, start in zip(lines[1:], expected):
        assert line.startswith("  " + start), (line, start)
    assert "fine.png" not in message


@pytest.mark.parametrize(
    ("array", "why"),
    [
        (np.zeros(5, np.uint8), r"has 1 axes \(5,\), expected 2 or 3"),
        (np.zeros((2, 3, H, W), np.uint8), r"has 4 axes \(2, 3, 17, 11\), expected 2 or 3"),
        (np.zeros((0, W), np.uint8), r"is empty, shape \(0, 11\)"),
        (np.zeros((H, W), np.complex64), "has dtype complex64, expected a bool, integer or float"),
        (np.zeros((H, W), "U1"), "has dtype <U1, expected"),
        (np.array([[None]]), r"unreadable \(ValueError: .*[Oo]bject"),
    ],
)
def test_unreadable_arrays_are_refused(dirs, array, why):
    images, masks = dirs
    np.save(images / "a.npy", array, allow_pickle=True)
    write(masks / "a.png")
    with pytest.raises(ValueError, match=r"found 1 problem\(s\).*\n  a\.npy: .*" + why):
        ImageMaskFolder(images, masks)


def test_unreadable_tiffs_are_refused(dirs):
    images, masks = dirs
    write(images / "a.tif", np.zeros((2, 3, H, W), np.uint8), photometric="minisblack")
    (images / "b.tif").write_bytes(b"II*\x00 no tiff")
    for stem in "ab":
        write(masks / f"{stem}.png")
    with pytest.raises(ValueError, match=r"found 2 problem\(s\)") as info:
        ImageMaskFolder(images, masks)
    assert "a.tif: unreadable (ValueError: has 4 axes" in str(info.value)
    assert "b.tif: unreadable (" in str(info.value)


def test_truncated_npy_is_refused(dirs):
    images, masks = dirs
    write(images / "a.npy", pixels((H, W), np.float32))
    data = (images / "a.npy").read_bytes()
    (images / "a.npy").write_bytes(data[: len(data) - 4])
    write(masks / "a.png")
    with pytest.raises(ValueError, match=r"\n  a\.npy: unreadable \(ValueError: .*length"):
        ImageMaskFolder(images, masks)


def test_missing_tifffile_is_an_import_error(dirs, monkeypatch):
    images, masks = dirs
    write(images / "a.tif", photometric="minisblack")
    write(masks / "a.png")
    monkeypatch.setitem(__import__("sys").modules, "tifffile", None)
    with pytest.raises(ImportError, match=r"reading TIFF files needs tifffile: pip install"):
        ImageMaskFolder(images, masks)


def test_empty_or_missing_folders(dirs, tmp_path):
    images, masks = dirs
    with pytest.raises(
        ValueError, match=r"images folder '.*images' holds no image: no file ending"
    ):
        ImageMaskFolder(images, masks)
    (images / "readme.txt").write_text("-")
    with pytest.raises(ValueError, match="holds no image"):
        ImageMaskFolder(images, masks)
    write(images / "a.png")
    write(images / "b.png")
    with pytest.raises(ValueError, match=r"found 2 problem\(s\).*\n  a\.png: no mask.*\n  b\.png"):
        ImageMaskFolder(images, masks)  # masks folder empty
    with pytest.raises(ValueError, match=r"masks must be an existing folder, got '.*nowhere'"):
        ImageMaskFolder(images, tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"images must be an existing folder, got '.*a\.png'"):
        ImageMaskFolder(images / "a.png", masks)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"images": 3}, TypeError, r"images must be a folder path \(str or os.PathLike\), got 3"),
        ({"images": None}, TypeError, "images must be a folder path .*got None"),
        ({"masks": b"masks"}, TypeError, "masks must be a folder path .*got b'masks'"),
        ({"transforms": "flip"}, TypeError, "transforms must be callable or None, got str"),
        ({"suffixes": ".png"}, TypeError, "suffixes must be a list or tuple of str .*got '.png'"),
        ({"suffixes": {".png"}}, TypeError, r"suffixes must be a list or tuple .*got \{'.png'\}"),
        ({"suffixes": [".png", 3]}, TypeError, r"suffixes must be .*got \['.png', 3\]"),
        ({"suffixes": ()}, ValueError, r"suffixes must be non-empty strings, got \(\)"),
        ({"suffixes": [".png", ""]}, ValueError, "suffixes must be non-empty strings, got"),
        ({"mask_name": 5}, TypeError, "mask_name must be a str such as '{stem}_mask', got 5"),
        ({"mask_name": "mask"}, ValueError, "mask_name must be a file name using the field"),
        ({"mask_name": "{stem}_{id}"}, ValueError, "and no other.*got '{stem}_{id}'"),
        ({"mask_name": "{stem}_{0}"}, ValueError, "using the field {stem}"),
        ({"mask_name": "{stem"}, ValueError, "using the field {stem}"),
        ({"mask_name": "{{stem}}"}, ValueError, "using the field {stem}"),
        ({"mask_name": "sub/{stem}"}, ValueError, "must be a file name"),
    ],
)
def test_bad_arguments_name_the_argument(dirs, kwargs, error, match):
    images, masks = dirs
    write(images / "a.png")
    write(masks / "a.png")
    arguments = {"images": images, "masks": masks, **kwargs}
    with pytest.raises(error, match=match):
        ImageMaskFolder(arguments.pop("images"), arguments.pop("masks"), **arguments)


def test_indexing(dirs):
    images, masks = dirs
    for stem in "ab":
        write(images / f"{stem}.png")
        write(masks / f"{stem}.png")
    data = ImageMaskFolder(str(images), str(masks))
    last = plain(data[1][0])
    for index in (-1, np.int64(1), torch.tensor(1)):
        assert torch.equal(plain(data[index][0]), last)
    with pytest.raises(IndexError, match=r"index must be in \[-2, 2\), got 2"):
        data[2]
    with pytest.raises(IndexError, match=r"got -3"):
        data[-3]
    for index in ("0", 1.0, True, slice(0, 1)):
        with pytest.raises(TypeError, match="index must be an int, got"):
            data[index]
    assert len(list(data)) == 2  # iteration stops at the IndexError


# --------------------------------------------------------------------------- reading
def test_construction_reads_headers_only_and_each_access_reads_one_pair(dirs, monkeypatch):
    images, masks = dirs
    for stem in "abc":
        write(images / f"{stem}.png")
        write(masks / f"{stem}.npy")
    reads = []
    read = datasets._read

    def counting(path, *, is_mask):
        reads.append((path.name, is_mask))
        return read(path, is_mask=is_mask)

    monkeypatch.setattr(datasets, "_read", counting)
    data = ImageMaskFolder(images, masks)
    assert reads == []
    data[1]
    assert reads == [("b.png", False), ("b.npy", True)]
    data[1]
    data[-1]
    assert reads[2:] == [("b.png", False), ("b.npy", True), ("c.png", False), ("c.npy", True)]


def test_construction_does_not_load_pixel_data(dirs):
    images, masks = dirs
    big = np.lib.format.open_memmap(images / "big.npy", "w+", np.float32, (3000, 2000))
    big[-1, -1] = 1.0
    del big
    PIL.Image.new("L", (2000, 3000)).save(masks / "big.png")  # compressed: a small file
    tracemalloc.start()
    try:
        data = ImageMaskFolder(images, masks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) == 1
    assert peak < 2_000_000  # the image alone is 24 MB, the decoded mask 6 MB


def test_npy_samples_are_copied_once_into_writable_channels_first_memory(dirs):
    images, masks = dirs
    image = write(images / "a.npy", pixels((600, 500, 3)))
    mask = write(masks / "a.npy", pixels((600, 500, 1), np.int16))
    write(images / "b.npy", np.asfortranarray(pixels((600, 500), np.float32)))
    write(masks / "b.npy", pixels((600, 500), ">u2"))  # big-endian: swapped in the one copy
    data = ImageMaskFolder(images, masks)
    for k, size in ((0, image.nbytes + mask.nbytes), (1, 600 * 500 * (4 + 2))):
        tracemalloc.start()
        try:
            out = data[k]
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # the samples live in the one numpy copy (torch's own allocations are not traced)
        assert size <= current <= peak < size * 1.05 + 100_000
        for x in out:
            assert x.is_contiguous() and x.numpy().flags.writeable
    out_image, out_mask = data[0]
    assert np.array_equal(out_image.numpy(), np.moveaxis(image, -1, 0))
    assert np.array_equal(out_mask.numpy(), mask[..., 0])
    out_image += 1  # the sample is the caller's: the file is not changed
    assert np.array_equal(np.load(images / "a.npy"), image)
    assert data[1][1].dtype == torch.uint16 and data[1][1].numpy().dtype.isnative


@pytest.mark.parametrize(
    "dtype",
    [
        *(np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64),
        *(np.float16, np.float32, np.float64, ">f4", ">i8"),
    ],
)
@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_dtypes_are_kept(dirs, dtype, suffix):
    images, masks = dirs
    image = write(images / f"a{suffix}", pixels((H, W), dtype, high=100), photometric="minisblack")
    mask = write(masks / f"a{suffix}", pixels((H, W), dtype, high=5), photometric="minisblack")
    out_image, out_mask = ImageMaskFolder(images, masks)[0]
    native = np.dtype(dtype).newbyteorder("=")
    assert out_image.numpy().dtype == native and out_mask.numpy().dtype == native
    assert np.array_equal(out_image.numpy()[0], image) and np.array_equal(out_mask.numpy(), mask)


@pytest.mark.parametrize(
    ("mode", "array", "dtype"),
    [
        ("L", pixels((H, W)), torch.uint8),
        ("I;16", pixels((H, W), np.uint16, high=60000), torch.uint16),
        ("I", pixels((H, W), np.int32, high=10**6), torch.int32),
        ("F", pixels((H, W), np.float32), torch.float32),
        ("1", pixels((H, W), bool), torch.bool),
    ],
)
def test_png_and_pil_dtypes_are_kept(dirs, mode, array, dtype):
    images, masks = dirs
    suffix = ".tiff" if mode in ("I", "F") else ".png"  # PNG has no 32-bit modes
    image = PIL.Image.fromarray(array)
    if mode == "1":
        image = PIL.Image.fromarray(array.astype(np.uint8) * 255).convert("1")
    assert image.mode == mode
    image.save(images / f"a{suffix}")
    image.save(masks / f"a{suffix}")
    out_image, out_mask = ImageMaskFolder(images, masks, suffixes=[suffix])[0]
    assert out_image.dtype == dtype and out_mask.dtype == dtype
    assert out_image.shape == (1, H, W) and out_mask.shape == (H, W)
    assert np.array_equal(out_image.numpy()[0], array) and np.array_equal(out_mask.numpy(), array)


def _palette_png(path):
    indices = pixels((H, W), high=4)
    image = PIL.Image.fromarray(indices, "L").convert("P")
    image.putpalette([v for i in range(256) for v in (i * 50 % 256, 255 - i, i)])
    image.save(path)
    return indices, np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(
    ("write_image", "image_shape", "channels_last"),
    [
        (lambda p: write(p / "a.npy", pixels((H, W))), (1, H, W), False),
        (lambda p: write(p / "a.npy", pixels((H, W, 3))), (3, H, W), True),
        (lambda p: write(p / "a.npy", pixels((2, H, W))), (2, H, W), False),
        (lambda p: write(p / "a.npy", pixels((5, W, 4))), (4, 5, W), True),  # last <= 4 < first
        (lambda p: write(p / "a.npy", pixels((4, H, 3))), (4, H, 3), False),  # first <= 4
        (lambda p: write(p / "a.tif", photometric="minisblack"), (1, H, W), False),
        (lambda p: write(p / "a.tif", pixels((H, W, 3)), photometric="rgb"), (3, H, W), True),
        (
            lambda p: write(p / "a.tif", pixels((3, H, W)), photometric="minisblack"),
            (3, H, W),
            False,
        ),
        (  # pages first whatever the sizes: the TIFF's axes decide, not the shape
            lambda p: write(p / "a.tif", pixels((6, H, 3)), photometric="minisblack"),
            (6, H, 3),
            False,
        ),
        (
            lambda p: write(
                p / "a.tif", pixels((3, H, W)), photometric="rgb", planarconfig="separate"
            ),
            (3, H, W),
            False,
        ),
        (lambda p: write(p / "a.png"), (1, H, W), False),
        (lambda p: write(p / "a.png", pixels((H, W, 3))), (3, H, W), True),
        (lambda p: write(p / "a.png", pixels((H, W, 4))), (4, H, W), True),
    ],
)
def test_image_channel_layout(dirs, write_image, image_shape, channels_last):
    images, masks = dirs
    array = write_image(images)
    size = image_shape[1:]
    write(masks / "a.npy", pixels(size))
    image, _ = ImageMaskFolder(images, masks)[0]
    assert image.shape == image_shape
    expected = (
        array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0) if channels_last else array
    )
    assert np.array_equal(image.numpy(), expected)


def test_palette_images_become_rgb_and_palette_masks_keep_indices(dirs):
    images, masks = dirs
    _, rgb = _palette_png(images / "a.png")
    indices, _ = _palette_png(masks / "a.png")
    image, mask = ImageMaskFolder(images, masks)[0]
    assert image.shape == (3, H, W) and np.array_equal(image.numpy(), np.moveaxis(rgb, -1, 0))
    assert mask.shape == (H, W) and np.array_equal(mask.numpy(), indices)
    transparent = PIL.Image.open(images / "a.png")
    transparent.info["transparency"] = 0
    transparent.save(images / "a.png", transparency=0)
    assert ImageMaskFolder(images, masks)[0][0].shape == (4, H, W)


@pytest.mark.parametrize(
    ("name", "array", "mask_shape"),
    [
        ("m.npy", pixels((H, W, 1)), (H, W)),
        ("m.npy", pixels((1, H, W)), (H, W)),
        ("m.npy", pixels((2, H, W)), (2, H, W)),
        ("m.npy", pixels((H, W, 2)), (2, H, W)),
        ("m.png", pixels((H, W, 3)), (3, H, W)),
        ("m.tif", pixels((1, H, W)), (H, W)),
    ],
)
def test_mask_channel_layout(dirs, name, array, mask_shape):
    images, masks = dirs
    write(images / "m.png")
    write(masks / name, array, photometric="minisblack")
    _, mask = ImageMaskFolder(images, masks)[0]
    assert mask.shape == mask_shape
    expected = np.moveaxis(array, -1, 0) if array.shape[-1] < array.shape[0] else array
    assert np.array_equal(mask.numpy(), expected.squeeze(0) if len(mask_shape) == 2 else expected)


# --------------------------------------------------------------------------- use
GEOMETRY = TileGeometry(20, 8, step=6)


def _sample_folder(dirs, count=3):
    images, masks = dirs
    for k in range(count):
        size = (H + 4 * k, W + 3 * k)
        write(images / f"s{k}.png", pixels((*size, 3)))
        write(masks / f"s{k}.png", pixels(size, high=4))
    return images, masks


def test_transforms_are_called_with_image_and_mask(dirs):
    images, masks = _sample_folder(dirs)
    calls = []

    def record(image, mask):
        calls.append((type(image), type(mask), tuple(image.shape), tuple(mask.shape)))
        return "out"

    assert ImageMaskFolder(images, masks, transforms=record)[1] == "out"
    assert calls == [(tv_tensors.Image, tv_tensors.Mask, (3, H + 4, W + 3), (H + 4, W + 3))]
    crop = PairedTileCrop(GEOMETRY, index=2, mask_fill=255)
    cropped = ImageMaskFolder(images, masks, transforms=crop)
    unchanged = ImageMaskFolder(images, masks)
    for k in range(len(unchanged)):
        image, mask = cropped[k]
        expected_image, expected_mask = crop(*unchanged[k])
        assert type(image) is tv_tensors.Image and type(mask) is tv_tensors.Mask
        assert image.shape == (3, 20, 20) and mask.shape == (8, 8)
        assert torch.equal(image, expected_image) and torch.equal(mask, expected_mask)


def test_pickles_and_loads_in_dataloader_workers(dirs):
    images, masks = _sample_folder(dirs, count=4)
    crop = PairedTileCrop(GEOMETRY, index=0)
    data = ImageMaskFolder(images, masks, transforms=v2.Compose([crop]))
    clone = pickle.loads(pickle.dumps(data))
    assert clone.pairs == data.pairs and repr(clone) == repr(data)
    assert torch.equal(clone[3][0], data[3][0])
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    batches = list(loader)
    got_images = torch.cat([b[0] for b in batches])
    got_masks = torch.cat([b[1] for b in batches])
    assert got_images.shape == (4, 3, 20, 20) and got_masks.shape == (4, 8, 8)
    for k in range(4):
        assert torch.equal(got_images[k], plain(data[k][0]))
        assert torch.equal(got_masks[k], plain(data[k][1]))


def test_to_config_round_trips_through_json(dirs):
    images, masks = _sample_folder(dirs)
    data = ImageMaskFolder(
        images,
        str(masks),
        transforms=PairedTileCrop(GEOMETRY, index=1, mask_fill=255),
        suffixes=[".png", ".npy"],
        mask_name="{stem}",
    )
    config = data.to_config()
    assert config == {
        "_target_": "unet_transforms.datasets.ImageMaskFolder",
        "images": str(images),
        "masks": str(masks),
        "transforms": {
            "_target_": "unet_transforms.PairedTileCrop",
            "geometry": GEOMETRY.to_config(),
            "index": 1,
            "mask_fill": 255,
        },
        "suffixes": [".png", ".npy"],
        "mask_name": "{stem}",
    }
    rebuilt = from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is ImageMaskFolder and rebuilt.pairs == data.pairs
    assert rebuilt.to_config() == config
    for k in range(len(data)):
        for got, expected in zip(rebuilt[k], data[k]):
            assert type(got) is type(expected) and torch.equal(got, expected)
    assert repr(data).startswith(f"ImageMaskFolder({images!r}, {str(masks)!r}, transforms=")


def test_tiled_dataset_builds_the_folder_from_its_config(dirs):
    images, masks = _sample_folder(dirs)
    folder = ImageMaskFolder(images, masks)
    geometry = {"input_size": 20, "output_size": 8, "step": 6}
    tiles = TiledDataset(folder.to_config(), geometry=geometry, mask_fill=255)
    direct = TiledDataset(folder, GEOMETRY, mask_fill=255)
    sizes = [tuple(folder[k][1].shape) for k in range(len(folder))]
    assert len(tiles) == len(direct) == sum(len(TileGrid(s, GEOMETRY)) for s in sizes)
    for k in (0, len(tiles) // 2, len(tiles) - 1):
        for got, expected in zip(tiles[k], direct[k]):
            assert torch.equal(plain(got), plain(expected))
    config = json.loads(json.dumps(tiles.to_config()))
    assert config["dataset"] == folder.to_config()
    rebuilt = from_config(config)
    assert type(rebuilt.dataset) is ImageMaskFolder and rebuilt.dataset.pairs == folder.pairs
    assert rebuilt.to_config() == config and len(rebuilt) == len(tiles)
    for got, expected in zip(rebuilt[len(tiles) - 1], tiles[len(tiles) - 1]):
        assert torch.equal(plain(got), plain(expected))
