"""TiledDataset: every tile of every sample, mapped without reloading everything."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from unet_transforms import TiledDataset, TileGeometry, TileGrid

from common import make_image, make_mask, make_tensor

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
        type(image) is torch.Tensor and image.shape == (3, 20, 20) and image.dtype == torch.uint8
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
    assert repr(dataset).startswith("TiledDataset([(") and repr(dataset).endswith(f", {GEOMETRY!r})")
