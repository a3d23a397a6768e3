"""TiledDataset: every tile of every sample, mapped without reloading everything."""

from __future__ import annotations

import math
import warnings
from collections import namedtuple

import numpy as np
import pytest
import torch
import zarr
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors

from unet_transforms import TiledDataset, TileGeometry, TileGrid, WeightMap

from common import geometries, make_image, make_mask, make_tensor

GEOMETRY = TileGeometry(20, 8, step=6)


class CountingDataset(torch.utils.data.Dataset):
    def __init__(self, sizes):
        self.samples = [(make_image(s, channels=1), make_mask(s)) for s in sizes]
        self.loads = 0

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        self.loads += 1
        return self.samples[index]


def test_items_are_grid_tiles_of_each_sample():
    sizes = [(13, 7), (1, 30), (25, 25)]
    base = CountingDataset(sizes)
    tiles = TiledDataset(base, GEOMETRY, mask_fill=-1)
    assert base.loads == len(sizes)  # one read per sample to learn the sizes
    grids = [TileGrid(s, GEOMETRY) for s in sizes]
    assert len(tiles) == sum(len(g) for g in grids)
    k = 0
    for s, grid in enumerate(grids):
        image, mask = base.samples[s]
        for t in range(len(grid)):
            assert tiles.locate(k) == (s, t)
            out_image, out_mask = tiles[k]
            assert isinstance(out_image, tv_tensors.Image) and isinstance(
                out_mask, tv_tensors.Mask
            )
            assert torch.equal(out_image, grid.extract(image, t))
            assert torch.equal(out_mask, grid.extract_output(mask, t, fill=-1))
            k += 1
    assert base.loads == len(sizes) + len(tiles)
    assert tiles.locate(-1) == (2, len(grids[2]) - 1)


def test_plain_pairs_and_dicts():
    pairs = [(make_tensor((2, 9, 14)), make_tensor((9, 14), torch.int64))]
    image, label = TiledDataset(pairs, GEOMETRY)[0]
    assert image.shape == (2, 20, 20) and label.shape == (8, 8)
    dicts = [{"image": make_image((9, 14)), "mask": make_mask((9, 14)), "id": 5}]
    item = TiledDataset(dicts, GEOMETRY)[1]
    assert item["image"].shape == (3, 20, 20) and item["mask"].shape == (8, 8) and item["id"] == 5


Sample = namedtuple("Sample", ["image", "label", "name"])


@pytest.mark.parametrize(
    "wrap",
    [
        lambda image, label: [image, label],
        lambda image, label: (image, label, "meta", 7),
        lambda image, label: Sample(image, label, "a"),
        lambda image, label: (image.numpy(), label.numpy()),
        lambda image, label: [image.numpy().astype(">f4"), label.numpy().astype(np.uint16)],
    ],
    ids=["list", "tuple-with-extras", "namedtuple", "numpy", "numpy-odd-dtypes"],
)
def test_sequences_starting_with_image_and_label(wrap):
    # the second entry is the label whatever the container: never left uncropped
    image, label = make_tensor((1, 9, 14)), make_tensor((9, 14), torch.int64).abs() % 5
    sample = wrap(image, label)
    tiles = TiledDataset([sample], GEOMETRY, mask_fill=99)
    grid = TileGrid((9, 14), GEOMETRY)
    for k in range(len(grid)):
        out = tiles[k]
        assert type(out) is type(sample) and len(out) == len(sample)
        assert list(out[2:]) == list(sample[2:])
        assert torch.equal(out[0].double(), grid.extract(image, k).double())
        assert torch.equal(out[1].long(), grid.extract_output(label, k, fill=99))


def test_pil_samples_become_tensors_that_collate():
    import PIL.Image

    rng = np.random.default_rng(0)
    rgb = PIL.Image.fromarray(rng.integers(0, 255, (9, 14, 3), dtype=np.uint8))
    palette = PIL.Image.fromarray(rng.integers(0, 4, (9, 14), dtype=np.uint8)).convert("P")
    tiles = TiledDataset([(rgb, palette)] * 2, GEOMETRY, mask_fill=255)
    image, label = tiles[0]
    assert (
        type(image) is tv_tensors.Image
        and image.shape == (3, 20, 20)
        and image.dtype == torch.uint8
    )
    assert isinstance(label, tv_tensors.Mask) and label.shape == (8, 8)
    grid = TileGrid((9, 14), GEOMETRY)
    expected = grid.extract_output(torch.from_numpy(np.array(palette)), 0, fill=255)
    assert torch.equal(label.as_subclass(torch.Tensor), expected)
    images, labels = next(iter(torch.utils.data.DataLoader(tiles, batch_size=4)))
    assert images.shape == (4, 3, 20, 20) and labels.shape == (4, 8, 8)


def test_transforms_run_after_the_crop_and_keep_labels_aligned():
    from torchvision.transforms import v2

    code = torch.arange(30 * 40).reshape(30, 40)
    flips = v2.Compose([v2.RandomHorizontalFlip(p=1), v2.RandomVerticalFlip(p=1)])
    tiles = TiledDataset([(code[None].float(), code, "id")], GEOMETRY, transforms=flips)
    plain = TiledDataset([(code[None].float(), code, "id")], GEOMETRY)
    for k in range(len(tiles)):
        image, label, name = tiles[k]
        assert name == "id"
        assert torch.equal(image, plain[k][0].flip(-1, -2))
        assert torch.equal(label.as_subclass(torch.Tensor), image[0, 6:14, 6:14].long())
    with pytest.raises(TypeError, match="transforms must be callable or None, got int"):
        TiledDataset([], GEOMETRY, transforms=3)


def test_numpy_and_tensor_integers_as_indices():
    tiles = TiledDataset(CountingDataset([(13, 7)]), GEOMETRY)
    expected = tiles[1][0]
    assert torch.equal(tiles[np.int64(1)][0], expected)
    assert torch.equal(tiles[torch.tensor(1)][0], expected)
    subset = torch.utils.data.Subset(tiles, np.arange(len(tiles)))
    assert torch.equal(subset[1][0], expected)


def test_works_with_dataloader_workers():
    dataset = TiledDataset(CountingDataset([(30, 40), (12, 12)]), GEOMETRY)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    images = torch.cat([images for images, _ in loader])
    expected = torch.stack([dataset[k][0] for k in range(len(dataset))])
    assert torch.equal(images, expected)


def test_errors():
    with pytest.raises(TypeError, match="map-style dataset with __len__ and __getitem__, got int"):
        TiledDataset(3, GEOMETRY)
    with pytest.raises(TypeError, match="geometry must be a TileGeometry"):
        TiledDataset([], (20, 8))
    dataset = TiledDataset([(make_image((5, 5)), make_mask((5, 5)))], GEOMETRY)
    assert len(dataset) == 1
    with pytest.raises(IndexError, match=r"index must be in \[-1, 1\), got 1"):
        dataset[1]
    with pytest.raises(TypeError, match="index must be an int, got str"):
        dataset["0"]
    with pytest.raises(ValueError, match="differ in their spatial size"):
        TiledDataset([(make_image((5, 5)), make_mask((5, 6)))], GEOMETRY)
    with pytest.raises(ValueError, match="locate maps items to grid tiles"):
        TiledDataset(
            [(make_image((5, 5)), make_mask((5, 5)))], GEOMETRY, index="random", tiles_per_epoch=3
        ).locate(0)
    assert repr(dataset).startswith("TiledDataset([(") and repr(dataset).endswith(
        f", {GEOMETRY!r})"
    )


# ------------------------------------------------------------------ lazy reading
class CountingArray:
    """An array-like that records every read: ``__getitem__`` with slices, ``.shape``,
    ``.dtype`` and ``.ndim`` (what zarr and h5py offer)."""

    def __init__(self, data):
        self.data = np.asarray(data)
        self.reads = []

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def __getitem__(self, key):
        self.reads.append(key)
        return np.array(self.data[key])

    def read_sizes(self, ndim):
        """The spatial size of each read (its trailing ``ndim`` axes)."""
        return [self.data[key].shape[self.data.ndim - ndim :] for key in self.reads]


def _coded(size, channels=None):
    """A position-coded image (pixel value = its C-order index) and label of ``size``."""
    code = np.arange(int(np.prod(size)), dtype=np.int64).reshape(size)
    image = code.astype(np.float32)
    return (image if channels is None else np.stack([image] * channels)), code


@pytest.mark.parametrize("index", [None, "random"])
def test_arrays_are_read_only_inside_each_window(index):
    image, label = _coded((70, 90), channels=2)
    weights = np.random.default_rng(0).random((70, 90), dtype=np.float32)
    arrays = [CountingArray(image), CountingArray(label), CountingArray(weights)]
    n = None if index is None else 12
    lazy = TiledDataset([tuple(arrays)], GEOMETRY, mask_fill=-1, index=index, tiles_per_epoch=n)
    assert all(a.reads == [] for a in arrays)  # sizes come from .shape
    eager = TiledDataset(
        [(torch.from_numpy(image), torch.from_numpy(label), torch.from_numpy(weights))],
        GEOMETRY,
        mask_fill=-1,
        index=index,
        tiles_per_epoch=n,
    )
    for k in range(len(lazy)):
        torch.manual_seed(k)
        got = lazy[k]
        torch.manual_seed(k)
        expected = eager[k]
        for a, b, kind in zip(got, expected, (tv_tensors.Image, tv_tensors.Mask, WeightMap)):
            assert type(a) is kind and type(b) is kind and torch.equal(a, b)
        for array, window in zip(arrays, (20, 8, 8)):
            assert len(array.reads) == k + 1  # one read per array and item
            assert all(s <= window for s in array.read_sizes(2)[-1])  # never the whole


def test_memmap_samples_are_sliced_not_copied_whole(tmp_path, monkeypatch):
    image, label = _coded((60, 50), channels=1)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "label.npy", label.astype(np.uint16))
    mapped = (
        np.load(tmp_path / "image.npy", mmap_mode="r"),
        np.load(tmp_path / "label.npy", mmap_mode="r"),
    )
    copied = []
    original = np.array

    def spy(obj, *args, **kwargs):
        copied.append(getattr(obj, "size", 0))
        return original(obj, *args, **kwargs)

    tiles = TiledDataset([mapped], GEOMETRY, mask_fill=7)
    expected = TiledDataset(
        [(torch.from_numpy(image), torch.from_numpy(label))], GEOMETRY, mask_fill=7
    )
    monkeypatch.setattr(np, "array", spy)
    for k in range(len(tiles)):
        out_image, out_label = tiles[k]
        assert torch.equal(out_image, expected[k][0])
        assert out_label.dtype == torch.uint16  # read as it is stored, values kept
        assert torch.equal(out_label.long(), expected[k][1])
    assert copied and max(copied) <= 20 * 20  # only windows were copied
    assert not mapped[0].flags.writeable and np.array_equal(mapped[0], image)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
@pytest.mark.parametrize("store", ["memmap", "array", "big-endian"])
def test_wide_unsigned_arrays_keep_their_dtype_so_scaling_is_right(tmp_path, dtype, store):
    # uint16 arrays used to come back as int32, so ToDtype(scale=True), the step the
    # docs recommend, divided 16-bit images by 2**31 - 1 instead of 65535
    from torchvision.transforms import v2

    image = np.full((30, 40), 30000, dtype)
    label = (np.arange(30 * 40).reshape(30, 40) % 3).astype(dtype)
    if store == "memmap":
        np.save(tmp_path / "image.npy", image)
        image = np.load(tmp_path / "image.npy", mmap_mode="r")
    elif store == "big-endian":
        image = image.astype(np.dtype(dtype).newbyteorder(">"))
    scale = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
    lazy = TiledDataset([(image, label)], GEOMETRY, mask_fill=7, transforms=scale)
    eager = TiledDataset(
        [(torch.from_numpy(np.array(image, dtype)), torch.from_numpy(label))],
        GEOMETRY,
        mask_fill=7,
        transforms=scale,
    )
    for k in range(len(lazy)):
        (out_image, out_label), (want_image, want_label) = lazy[k], eager[k]
        assert out_label.dtype == want_label.dtype == getattr(torch, np.dtype(dtype).name)
        assert torch.equal(out_image, want_image) and torch.equal(out_label, want_label)
        assert out_image.dtype == torch.float32
        if dtype == np.uint16:  # torchvision scales uint16 (not uint32) by its maximum
            assert torch.allclose(out_image, torch.tensor(30000 / 65535))


@pytest.mark.parametrize("store", ["read-only array", "memmap", "tensor", "writable array"])
@pytest.mark.parametrize("kind", ["LabelSampler", "ForegroundSampler"])
def test_samplers_cache_numpy_labels_across_items(tmp_path, monkeypatch, store, kind):
    # each item made a new tensor of a numpy label, so the sampler's cache (kept while
    # the tensor's storage lived) never hit: the class table was rebuilt per item
    from unet_transforms import sampling

    sampler_type = getattr(sampling, kind)
    calls = []
    table = sampler_type._table
    monkeypatch.setattr(
        sampler_type, "_table", lambda self, *a: calls.append(1) or table(self, *a)
    )
    label = np.zeros((60, 50), np.uint8)
    label[20:30, 10:25] = 1
    image = np.zeros((1, 60, 50), np.float32)
    if store == "memmap":
        np.save(tmp_path / "label.npy", label)
        label = np.load(tmp_path / "label.npy", mmap_mode="r")  # read-only: no warning
    elif store == "tensor":
        label, image = torch.from_numpy(label), torch.from_numpy(image)
    elif store == "read-only array":
        label.flags.writeable = False
    sampler = (
        sampling.LabelSampler({1: 1}) if kind == "LabelSampler" else sampler_type(probability=1.0)
    )
    tiles = TiledDataset([(image, label)], GEOMETRY, index=sampler, tiles_per_epoch=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [tiles[k] for k in range(8)]
    # built once for eight items; a writable array (no change counter) per item, with
    # one warning that says how to have it cached
    assert len(calls) == (8 if store == "writable array" else 1)
    messages = [str(w.message) for w in caught]
    if store == "writable array":
        assert len(messages) == 1 and "label.flags.writeable = False" in messages[0]
    else:
        assert messages == []
    assert all(bool((lab == 1).any()) for _, lab in items)


@pytest.mark.filterwarnings("ignore:TiledDataset. the label of dataset")  # writable, on purpose
def test_a_writable_numpy_label_changed_in_place_is_read_afresh():
    # a cache kept per array drew from the old table after an in-place change (numpy
    # has no change counter): writable arrays are not cached
    from unet_transforms.sampling import LabelSampler, WeightedSampler

    label = np.zeros((60, 50), np.uint8)
    label[5, 5] = 1
    weights = np.zeros((60, 50), np.float32)
    weights[5, 5] = 1.0
    image = np.zeros((1, 60, 50), np.float32)
    geometry = TileGeometry(12, 4)
    for index, key in ((LabelSampler({1: 1}), 1), (WeightedSampler("weights"), 2)):
        tiles = TiledDataset(
            [(image, label, weights)], geometry, index=index, tiles_per_epoch=2, mask_fill=9
        )
        assert tiles[0][key][2, 2] == 1  # the centre: (5, 5)
        label[5, 5], label[40, 30], weights[5, 5], weights[40, 30] = 0, 1, 0.0, 1.0
        out = tiles[1]
        assert out[key][2, 2] == 1 and out[1][2, 2] == 1  # the centre: (40, 30)
        label[40, 30], label[5, 5], weights[40, 30], weights[5, 5] = 0, 1, 0.0, 1.0


def test_weighted_sampler_detects_a_map_changed_behind_torchs_back():
    # the cached row sums were used with the new row: a zero-weight pixel was drawn
    from unet_transforms import PairedTileCrop
    from unet_transforms.sampling import WeightedSampler

    where = torch.zeros(40, 40)
    where[3, 5] = 1.0
    crop = PairedTileCrop(TileGeometry(12, 4), index=WeightedSampler("where"))
    sample = {"image": tv_tensors.Image(torch.zeros(1, 40, 40)), "where": where}
    crop(sample)
    where.numpy()[3, 5], where.numpy()[30, 33] = 0.0, 1.0  # the version counter is unchanged
    with pytest.raises(ValueError, match=r"changed in place"):
        crop(sample)


def test_zarr_samples():
    image, label = _coded((45, 33))
    z_image = zarr.create_array(store={}, shape=image.shape, chunks=(16, 16), dtype=image.dtype)
    z_image[...] = image
    z_label = zarr.create_array(store={}, shape=label.shape, chunks=(16, 16), dtype=label.dtype)
    z_label[...] = label
    tiles = TiledDataset([(z_image, z_label)], GEOMETRY, mask_fill=-1)
    expected = TiledDataset(
        [(torch.from_numpy(image), torch.from_numpy(label))], GEOMETRY, mask_fill=-1
    )
    assert len(tiles) == len(expected) == len(TileGrid((45, 33), GEOMETRY))
    for k in range(len(tiles)):
        out_image, out_label = tiles[k]
        assert out_image.shape == (1, 20, 20)  # a 2-D image gets one channel
        assert torch.equal(out_image, expected[k][0]) and torch.equal(out_label, expected[k][1])


# ------------------------------------------------------------------ item types
def test_items_are_image_mask_and_weightmap():
    from torchvision.transforms import v2

    image = make_tensor((9, 14), torch.uint8)  # 2-D: one channel
    label = make_tensor((9, 14), torch.int64)
    weights = make_tensor((9, 14))
    fill = {tv_tensors.Mask: 255, WeightMap: 0.0}
    tiles = TiledDataset([(image, label, weights, "name")], GEOMETRY, mask_fill=fill)
    grid = TileGrid((9, 14), GEOMETRY)
    out_image, out_label, out_weights, name = tiles[0]
    assert type(out_image) is tv_tensors.Image and out_image.shape == (1, 20, 20)
    assert type(out_label) is tv_tensors.Mask and type(out_weights) is WeightMap
    assert torch.equal(
        out_label.as_subclass(torch.Tensor), grid.extract_output(label, 0, fill=255)
    )
    assert torch.equal(
        out_weights.as_subclass(torch.Tensor), grid.extract_output(weights, 0, fill=0.0)
    )
    assert name == "name"
    # v2 transforms see the roles: ToDtype converts the image only
    to_float = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
    converted = TiledDataset([(image, label, weights)], GEOMETRY, transforms=to_float)[0]
    assert converted[0].dtype == torch.float32 and converted[0].max() <= 1
    assert converted[1].dtype == torch.int64 and converted[2].dtype == torch.float32
    with pytest.raises(
        TypeError, match=r"weights .* must be a floating-point map, got dtype torch.int64"
    ):
        TiledDataset([(image, label, label)], GEOMETRY)


def test_transforms_get_the_weights_too():
    calls = []

    def record(*items):
        calls.append(tuple(type(i) for i in items))
        return items

    tiles = TiledDataset(
        [(make_tensor((1, 9, 14)), make_tensor((9, 14), torch.int64), make_tensor((9, 14)))],
        GEOMETRY,
        transforms=record,
    )
    assert len(tiles[0]) == 3
    assert calls == [(tv_tensors.Image, tv_tensors.Mask, WeightMap)]


def test_volumes():
    geometry = TileGeometry((10, 12, 12), (4, 6, 6))
    volume, code = _coded((7, 9, 11))
    for image in (volume, volume[None]):  # (D, H, W) and (C, D, H, W)
        tiles = TiledDataset(
            [(CountingArray(image), torch.from_numpy(code))], geometry, mask_fill=-1
        )
        grid = TileGrid((7, 9, 11), geometry)
        assert len(tiles) == len(grid)
        for k in range(len(tiles)):
            out_image, out_label = tiles[k]
            assert out_image.shape == (1, 10, 12, 12) and out_label.shape == (4, 6, 6)
            assert torch.equal(out_image[0], grid.extract(torch.from_numpy(volume), k))
            assert torch.equal(
                out_label.as_subclass(torch.Tensor),
                grid.extract_output(torch.from_numpy(code), k, fill=-1),
            )


# ------------------------------------------------------------------ random tiles
def test_random_items_equal_the_random_crop_under_one_seed():
    from unet_transforms import PairedTileCrop

    image, label = _coded((40, 31), channels=1)
    tiles = TiledDataset(
        [(image, label)], GEOMETRY, index="random", tiles_per_epoch=25, mask_fill=None
    )
    crop = PairedTileCrop(GEOMETRY, index="random")
    assert len(tiles) == 25
    for k in range(len(tiles)):
        torch.manual_seed(k)
        out_image, out_label = tiles[k]
        torch.manual_seed(k)
        expected_image, expected_label = crop(torch.from_numpy(image), torch.from_numpy(label))
        assert torch.equal(out_image, expected_image) and torch.equal(out_label, expected_label)
        # aligned: the label window is the centre of the image window (mirrored alike)
        assert torch.equal(out_label.as_subclass(torch.Tensor), out_image[0, 6:14, 6:14].long())
    with pytest.raises(IndexError, match=r"index must be in \[-25, 25\), got 25"):
        tiles[25]


@pytest.mark.parametrize("index", ["random", "sampler"])
def test_random_samples_are_drawn_by_their_windows_or_pixels(index):
    from unet_transforms.sampling import ForegroundSampler

    sizes = [(10, 10), (10, 30), (20, 20)]  # 100, 300 and 400 pixels
    samples = [
        (torch.full((1, *s), float(i)), torch.zeros(s, dtype=torch.int64))
        for i, s in enumerate(sizes)
    ]
    sampler = ForegroundSampler(probability=0.0)  # draws no centre, weights by pixels
    tiles = TiledDataset(
        samples,
        GEOMETRY,
        index="random" if index == "random" else sampler,
        tiles_per_epoch=1500,
        sizes=sizes,
    )
    torch.manual_seed(0)
    counts = np.bincount([int(tiles[k][0][0, 0, 0]) for k in range(len(tiles))], minlength=3)
    # "random": the windows overlapping each sample, (h + 8 - 1) * (w + 8 - 1)
    weights = [17 * 17, 17 * 37, 27 * 27] if index == "random" else [100, 300, 400]
    expected = np.array(weights) / sum(weights) * len(tiles)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 13.8  # p = 0.001 for 2 degrees of freedom


def test_random_tiles_cover_pixels_of_small_and_large_samples_equally():
    # drawn by pixel count, the pixels of a 300 x 300 sample were covered 3.9 times as
    # often as those of a 30 x 30 one (README: "covers every pixel equally")
    geometry = TileGeometry(60, 40)
    sizes = [(30, 30), (300, 300)]
    samples = [
        (torch.full((1, *s), float(i)), torch.zeros(s, dtype=torch.uint8))
        for i, s in enumerate(sizes)
    ]
    tiles = TiledDataset(samples, geometry, index="random", tiles_per_epoch=4000, mask_fill=1)
    torch.manual_seed(0)
    covered = [0, 0]
    for k in range(len(tiles)):
        image, label = tiles[k]
        covered[int(image[0, 0, 0])] += int((label == 0).sum())  # pixels inside the sample
    per_pixel = [c / math.prod(s) for c, s in zip(covered, sizes, strict=True)]
    assert per_pixel[1] / per_pixel[0] == pytest.approx(1.0, abs=0.15)


def test_random_tiles_differ_across_dataloader_workers(tmp_path):
    image, label = _coded((60, 60), channels=1)
    np.save(tmp_path / "image.npy", image)
    mapped = np.load(tmp_path / "image.npy", mmap_mode="r")
    tiles = TiledDataset([(mapped, label)], GEOMETRY, index="random", tiles_per_epoch=16)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(tiles, batch_size=4, num_workers=2)
    images = torch.cat([images for images, _ in loader])
    assert images.shape == (16, 1, 20, 20)
    corners = {float(x) for x in images[:, 0, 10, 10]}  # a pixel inside the image
    assert len(corners) > 12  # workers do not repeat each other's windows


def test_pickles_and_gives_the_same_items():
    import pickle

    image, label = _coded((30, 40), channels=1)
    for kwargs in ({}, {"index": "random", "tiles_per_epoch": 5}):
        tiles = TiledDataset([(CountingArray(image), label)], GEOMETRY, **kwargs)
        clone = pickle.loads(pickle.dumps(tiles))
        assert len(clone) == len(tiles)
        torch.manual_seed(3)
        a = tiles[1]
        torch.manual_seed(3)
        b = clone[1]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ------------------------------------------------------------------ sizes, config, errors
def test_sizes_skip_the_read_pass_and_are_checked():
    base = CountingDataset([(13, 7), (25, 25)])
    tiles = TiledDataset(base, GEOMETRY, sizes=[[13.0, 7], np.array([25, 25])])
    assert base.loads == 0
    assert len(tiles) == len(TiledDataset(base, GEOMETRY))
    assert torch.equal(tiles[3][0], TiledDataset(base, GEOMETRY)[3][0])
    wrong = TiledDataset(base, GEOMETRY, sizes=[(13, 7), (25, 24)])
    with pytest.raises(
        ValueError, match=r"sizes\[1\] is \(25, 24\) but sample 1 has the spatial size \(25, 25\)"
    ):
        wrong[len(wrong) - 1]
    dicts = [{"image": make_image((9, 14)), "mask": make_mask((9, 14))}]
    with pytest.raises(ValueError, match=r"sizes\[0\] is \(9, 15\) but sample 0"):
        TiledDataset(dicts, GEOMETRY, sizes=[(9, 15)])[0]
    with pytest.raises(ValueError, match="the dataset has 2 samples, sizes has 1"):
        TiledDataset(base, GEOMETRY, sizes=[(13, 7)])
    with pytest.raises(
        ValueError, match=r"sizes\[0\] must be 2 positive ints \(the geometry is 2-D\), got \[13\]"
    ):
        TiledDataset(base, GEOMETRY, sizes=[(13,), (25, 25)])
    with pytest.raises(ValueError, match=r"sizes\[1\] must be 2 positive ints .*got \[0, 3\]"):
        TiledDataset(base, GEOMETRY, sizes=[(13, 7), (0, 3)])
    with pytest.raises(
        TypeError, match=r"sizes must be a sequence with one spatial size per sample, got int"
    ):
        TiledDataset(base, GEOMETRY, sizes=3)
    with pytest.raises(TypeError, match=r"sizes\[0\] must be a sequence of 2 ints, got int"):
        TiledDataset(base, GEOMETRY, sizes=[13, 7])
    with pytest.raises(ValueError, match=r"sizes\[0\] must be an integer, got 7.5"):
        TiledDataset(base, GEOMETRY, sizes=[(13, 7.5), (25, 25)])
    # with sizes= the read pass is skipped: an item's own errors still name its sample
    mismatched = [(make_image((30, 40)), make_mask((30, 40)))] * 2 + [
        (make_image((30, 40)), make_mask((30, 41)))
    ]
    lazy = TiledDataset(mismatched, GEOMETRY, sizes=[(30, 40)] * 3)
    with pytest.raises(ValueError, match=r"^dataset\[2\]: .*differ in their spatial size"):
        lazy[len(lazy) - 1]


def test_an_empty_dataset_has_no_tiles_to_draw():
    # it had a length of tiles_per_epoch, yielded nothing and failed with an IndexError
    with pytest.raises(ValueError, match=r"dataset must hold at least one sample to draw"):
        TiledDataset([], GEOMETRY, index="random", tiles_per_epoch=3)
    assert len(TiledDataset([], GEOMETRY)) == 0  # grid tiles: none


def test_index_and_tiles_per_epoch_errors():
    samples = [(make_tensor((1, 9, 14)), make_tensor((9, 14), torch.int64))]
    for index in (0, 3, "all", True):
        with pytest.raises(ValueError, match=r"index must be None .*'random' or a sampler"):
            TiledDataset(samples, GEOMETRY, index=index, tiles_per_epoch=4)
    with pytest.raises(ValueError, match="index must be 'random'"):  # PairedTileCrop's check
        TiledDataset(samples, GEOMETRY, index="randm", tiles_per_epoch=4)
    with pytest.raises(ValueError, match="tiles_per_epoch is required with index='random'"):
        TiledDataset(samples, GEOMETRY, index="random")
    with pytest.raises(
        ValueError, match="with index=None every grid tile is one item, got tiles_per_epoch=4"
    ):
        TiledDataset(samples, GEOMETRY, tiles_per_epoch=4)
    with pytest.raises(ValueError, match="tiles_per_epoch must be >= 1, got 0"):
        TiledDataset(samples, GEOMETRY, index="random", tiles_per_epoch=0)
    with pytest.raises(TypeError, match="tiles_per_epoch must be an int, got str"):
        TiledDataset(samples, GEOMETRY, index="random", tiles_per_epoch="8")
    assert len(TiledDataset(samples, GEOMETRY, index="random", tiles_per_epoch=8.0)) == 8


def test_to_config_round_trip(tmp_path):
    import json

    import PIL.Image

    from unet_transforms import from_config
    from unet_transforms.datasets import ImageMaskFolder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(
        tmp_path / "images" / "a.png"
    )
    PIL.Image.fromarray(rng.integers(0, 3, (40, 30), dtype=np.uint8)).save(
        tmp_path / "masks" / "a.png"
    )
    folder = ImageMaskFolder(tmp_path / "images", tmp_path / "masks")
    tiles = TiledDataset(
        folder.to_config(),
        {"input_size": 20, "output_size": 8},
        mask_fill={tv_tensors.Mask: 255},
        index="random",
        tiles_per_epoch=6,
        sizes=[(40, 30)],
    )
    config = json.loads(json.dumps(tiles.to_config()))
    assert config["_target_"] == "unet_transforms.TiledDataset" and config["tiles_per_epoch"] == 6
    clone = from_config(config)
    assert len(clone) == 6
    for k in range(6):
        torch.manual_seed(k)
        a = tiles[k]
        torch.manual_seed(k)
        b = clone[k]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(
        TypeError, match=r"^TiledDataset\.dataset\[0\]\[0\]: cannot describe Tensor"
    ):
        TiledDataset([(make_tensor((1, 9, 14)), make_tensor((9, 14)))], GEOMETRY).to_config()


def test_samplers_pick_the_windows_and_read_the_label_whole():
    from unet_transforms import sampling

    image, _ = _coded((50, 40), channels=1)
    label = np.zeros((50, 40), dtype=np.int64)
    label[30:33, 5:8] = 1  # 9 foreground pixels
    arrays = CountingArray(image), CountingArray(label)
    sampler = sampling.LabelSampler({0: 0, 1: 1})
    tiles = TiledDataset([arrays], GEOMETRY, index=sampler, tiles_per_epoch=20, mask_fill=-1)
    assert arrays[0].reads == [] and arrays[1].reads == []
    label.flags.writeable = False  # cached per array (a writable one warns)
    in_memory = TiledDataset([(image, label)], GEOMETRY, index=sampler, tiles_per_epoch=20)
    for k in range(len(tiles)):
        torch.manual_seed(k)
        out_image, out_label = tiles[k]
        assert out_label[4, 4] == 1  # the window's centre pixel is of the drawn class
        torch.manual_seed(k)
        assert torch.equal(out_image, in_memory[k][0])
    assert all(s <= 20 for size in arrays[0].read_sizes(2) for s in size)  # image: windows
    assert arrays[1].read_sizes(2) == [(50, 40)] * len(tiles)  # label: whole, for the sampler


def test_arrays_in_memory_of_any_layout():
    import PIL.Image

    image, label = _coded((9, 14), channels=1)
    expected = TiledDataset([(torch.from_numpy(image), torch.from_numpy(label))], GEOMETRY)
    for sample in [
        (image[:, ::-1, ::-1].copy()[:, ::-1, ::-1], label),  # negative strides
        (image.astype(">f4"), label.astype(">i8")),  # big-endian
        (np.asfortranarray(image), np.asfortranarray(label)),
    ]:
        tiles = TiledDataset([sample], GEOMETRY)
        for k in range(len(tiles)):
            assert torch.equal(tiles[k][0], expected[k][0])
            assert torch.equal(tiles[k][1], expected[k][1])
    # bool labels take the fill if it fits (0 or 1), else False, whatever their container
    bools = label % 2 == 0
    for mask in (bools, torch.from_numpy(bools), PIL.Image.fromarray(bools)):
        out = TiledDataset([(image, mask)], GEOMETRY, mask_fill=255)[0][1]
        grid = TileGrid((9, 14), GEOMETRY)
        assert out.dtype == torch.bool
        assert torch.equal(
            out.as_subclass(torch.Tensor),
            grid.extract_output(torch.from_numpy(bools), 0, fill=0),
        )


@given(geometry=geometries(), data=st.data())
def test_lazy_items_equal_tensor_items_and_read_windows_only(geometry, data):
    ndim = geometry.ndim
    size = tuple(data.draw(st.lists(st.integers(1, 25), min_size=ndim, max_size=ndim)))
    image, label = _coded(size, channels=2)
    index = data.draw(st.sampled_from([None, "random"]))
    n = None if index is None else 3
    arrays = CountingArray(image), CountingArray(label)
    lazy = TiledDataset([arrays], geometry, index=index, tiles_per_epoch=n, mask_fill=-1)
    eager = TiledDataset(
        [(torch.from_numpy(image), torch.from_numpy(label))],
        geometry,
        index=index,
        tiles_per_epoch=n,
        mask_fill=-1,
    )
    assert len(lazy) == len(eager) and arrays[0].reads == []
    for k in range(min(len(lazy), 6)):
        torch.manual_seed(k)
        got = lazy[k]
        torch.manual_seed(k)
        expected = eager[k]
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        for array, window in zip(arrays, (geometry.input_size, geometry.output_size)):
            assert len(array.reads) == k + 1
            assert all(r <= w for r, w in zip(array.read_sizes(ndim)[-1], window))


def test_a_dict_of_samples_keyed_by_index_is_a_dataset():
    sample = (torch.rand(1, 9, 9), torch.zeros(9, 9, dtype=torch.long))
    tiles = TiledDataset({0: sample, 1: sample}, TileGeometry(12, 8))
    assert len(tiles) == 2 * len(TileGrid((9, 9), TileGeometry(12, 8)))
    with pytest.raises(ValueError, match=r"dataset\[0\] cannot be read \(KeyError: 0\)"):
        TiledDataset({"a": sample}, TileGeometry(12, 8))


def test_memory_maps_pickle_by_file_not_contents(tmp_path):
    """spawn workers get the dataset pickled: a memory map goes as its file, and the
    unpickled dataset reads the same tiles from a map of that file."""
    import pickle

    image = np.lib.format.open_memmap(tmp_path / "image.npy", "w+", np.float32, (2, 300, 200))
    image[:] = np.random.default_rng(0).random(image.shape, np.float32)
    label = np.lib.format.open_memmap(tmp_path / "label.npy", "w+", np.uint8, (300, 200))
    label[:] = np.arange(300 * 200).reshape(300, 200) % 3
    image.flush(), label.flush()
    maps = (np.load(tmp_path / "image.npy", mmap_mode="r"), np.load(tmp_path / "label.npy", "r"))
    fortran = np.memmap(tmp_path / "f.raw", np.int16, "w+", shape=(30, 20), order="F")
    fortran[:] = np.arange(600).reshape(30, 20)
    data = TiledDataset(
        [maps, [maps[0][:, :30, :20], fortran], (maps[0][:, :50], maps[1][:50])],
        TileGeometry(44, 28),
    )
    payload = pickle.dumps(data)
    assert len(payload) < 100_000  # 300 KB of arrays on disk, views of maps included
    copy = pickle.loads(payload)
    assert isinstance(copy.dataset[0][0], np.memmap) and copy.dataset[0][0].filename
    assert copy.dataset[1][1].flags.f_contiguous  # order "F" kept
    assert copy.dataset[0][0].flags.writeable is False  # mode "r" kept
    for i in range(len(data)):
        for a, b in zip(data[i], copy[i], strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("store", ["array", "zarr", "tensor"])
def test_weighted_sampler_reads_the_weights_of_tuple_samples(tmp_path, store):
    # TiledDataset drew outside the sampler's binding: "call the transform on a dict
    # sample (make_params alone does not see it)", though index takes any sampler
    from unet_transforms.sampling import WeightedSampler

    image = np.random.default_rng(0).random((1, 60, 60), dtype=np.float32)
    label = np.zeros((60, 60), np.int64)
    label.flags.writeable = False  # cached per array (a writable one warns)
    weights = np.zeros((60, 60), np.float32)
    weights[30, 45] = 1.0  # the one pixel every window must be centred on
    if store == "zarr":
        stored = zarr.create_array(
            tmp_path / "w.zarr", shape=(60, 60), chunks=(30, 30), dtype="f4"
        )
        stored[:] = weights
        weights = stored
    elif store == "tensor":
        weights = torch.from_numpy(weights)
    geometry = TileGeometry(30, 10)
    tiles = TiledDataset(
        [(image, label, weights)], geometry, index=WeightedSampler("weights"), tiles_per_epoch=5
    )
    torch.manual_seed(0)
    for k in range(len(tiles)):
        out_image, _, out_weights = tiles[k]
        assert out_weights[5, 5] == 1.0 and out_weights.sum() == 1.0  # centre: out // 2
        assert torch.equal(out_image[0, 10 + 5, 10 + 5], torch.tensor(image[0, 30, 45]))
    with pytest.raises(ValueError, match=r"found no 'where' in the sample"):
        TiledDataset(
            [(image, label, weights)], geometry, index=WeightedSampler("where"), tiles_per_epoch=1
        )[0]


@pytest.mark.parametrize("index", [None, "random"])
def test_deform_on_the_lazy_path_matches_tensors_and_paired_tile_crop(tmp_path, index):
    # TiledDataset had no deform=: the paper's elastic deformation was unavailable for
    # memory maps and zarr, and transforms= only saw the tile, not the border around it
    from unet_transforms import Deformation, PairedTileCrop

    geometry = TileGeometry(30, 10)
    values = np.arange(60 * 70).reshape(60, 70)
    image, label, weights = values[None].astype(np.float64), values, values.astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    mapped = np.load(tmp_path / "image.npy", mmap_mode="r")
    deform = Deformation(sigma=3.0, rotation=15.0, flip=True)
    fill = {tv_tensors.Mask: -1, WeightMap: -2.0}
    kwargs = {"index": index, "tiles_per_epoch": 6} if index else {}
    lazy = TiledDataset(
        [(mapped, label, weights)], geometry, deform=deform, mask_fill=fill, **kwargs
    )
    tensors = [(torch.from_numpy(a) for a in (image, label, weights))]
    eager = TiledDataset([tuple(*tensors)], geometry, deform=deform, mask_fill=fill, **kwargs)
    plain = TiledDataset([(mapped, label, weights)], geometry, mask_fill=fill, **kwargs)
    moved = 0
    for k in range(6):
        torch.manual_seed(k)
        out = lazy[k]
        torch.manual_seed(k)
        want = eager[k]
        assert [type(x) for x in out] == [tv_tensors.Image, tv_tensors.Mask, WeightMap]
        assert [x.shape for x in out] == [(1, 30, 30), (10, 10), (10, 10)]
        # the lazy path resamples through the dense field, tensors through its factors
        assert torch.allclose(out[0], want[0], rtol=0, atol=5e-3)
        assert torch.equal(out[1], want[1]) and torch.equal(out[2], want[2])
        assert torch.equal(out[1] != -1, out[2] != -2.0)  # one field, one fill
        torch.manual_seed(k)
        moved += not torch.equal(out[0], plain[k][0])
    assert moved >= 5  # deformed, not the plain crop
    if index == "random":  # one sample: an item is PairedTileCrop's under the same seed
        crop = PairedTileCrop(geometry, index="random", deform=deform, mask_fill=-1)
        single = TiledDataset(
            [(torch.from_numpy(image), torch.from_numpy(label))],
            geometry,
            index="random",
            tiles_per_epoch=1,
            deform=deform,
            mask_fill=-1,
        )
        torch.manual_seed(3)
        got = single[0]
        torch.manual_seed(3)
        expected = crop(torch.from_numpy(image), torch.from_numpy(label))
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_sample_weights_set_how_often_each_sample_is_drawn():
    # class weights apply within the drawn sample; sample_weights let users balance
    # across samples (e.g. by each sample's pixels of a rare class)
    from unet_transforms.sampling import LabelSampler

    sizes = [(20, 20), (20, 20), (30, 30)]
    samples = [
        (torch.full((1, *s), float(i)), torch.zeros(s, dtype=torch.int64))
        for i, s in enumerate(sizes)
    ]
    for index in ("random", LabelSampler()):
        tiles = TiledDataset(
            samples, GEOMETRY, index=index, tiles_per_epoch=1000, sample_weights=[1, 0, 3.0]
        )
        torch.manual_seed(0)
        counts = np.bincount([int(tiles[k][0][0, 0, 0]) for k in range(len(tiles))], minlength=3)
        assert counts[1] == 0  # weight 0: never
        expected = np.array([250.0, 750.0])
        chi2 = float((((counts[[0, 2]] - expected) ** 2) / expected).sum())
        assert chi2 < 10.8  # p = 0.001, 1 degree of freedom


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sample_weights": [1, 1]}, ValueError, r"one weight per sample \(3\), got 2"),
        ({"sample_weights": [1, -1, 1]}, ValueError, r"sample_weights\[1\] must be finite"),
        ({"sample_weights": [1, math.nan, 1]}, ValueError, r"sample_weights\[1\] must be"),
        ({"sample_weights": [0, 0, 0]}, ValueError, r"some sample a positive weight"),
        ({"sample_weights": [1, "a", 1]}, TypeError, r"sample_weights\[1\] must be a number"),
        ({"sample_weights": "abc"}, TypeError, r"sample_weights must be a sequence"),
        ({"sample_weights": [1, 1, 1], "index": None}, ValueError, r"with index=None"),
    ],
)
def test_bad_sample_weights(kwargs, error, match):
    samples = [(torch.zeros(1, 5, 5), torch.zeros(5, 5, dtype=torch.int64))] * 3
    options = {"index": "random", "tiles_per_epoch": 2, **kwargs}
    if options["index"] is None:
        del options["tiles_per_epoch"]
    with pytest.raises(error, match=match):
        TiledDataset(samples, GEOMETRY, **options)
