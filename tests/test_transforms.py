"""The torchvision v2 transforms: roles, types, replay against the oracle, errors."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms as v1
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2

from unet_transforms import (
    MirrorExtrapolate,
    OverlapTileCrop,
    PairedTileCrop,
    TileGeometry,
    TileGrid,
    mirror_pad,
)
from unet_transforms.merging import TileMerger

from common import (
    DEFAULT_SIZE,
    DTYPES,
    check_transform,
    grids,
    make_bounding_boxes,
    make_image,
    make_keypoints,
    make_mask,
    make_pil,
    make_tensor,
    make_video,
)

GEOMETRY = TileGeometry(14, 6, step=4)  # margin 4, keep offset 1: everything differs


def canvas_crop(x: torch.Tensor, box, mode="reflect") -> torch.Tensor:
    """Oracle: mirror-pad the whole image wide enough, then slice the window."""
    size = x.shape[-len(box) :]
    pads = [(max(0, -a), max(0, b - n)) for (a, b), n in zip(box, size)]
    canvas = mirror_pad(x.as_subclass(torch.Tensor), pads, mode)
    return canvas[(Ellipsis, *[slice(a + p, b + p) for (a, b), (p, _) in zip(box, pads)])]


def merge(grid: TileGrid, tiles: torch.Tensor) -> torch.Tensor:
    """The grid's tiles (stacked on the first axis) merged back into one image."""
    merger = TileMerger(grid)
    for i, tile in enumerate(tiles.as_subclass(torch.Tensor)):
        merger.add(i, tile)
    return merger.result()


# ---------------------------------------------------------------- MirrorExtrapolate
def test_mirror_extrapolate_to_the_seed_canvas():
    t = MirrorExtrapolate(geometry=TileGeometry(572, 388), align="start", mask_fill=255)
    image, mask = make_image((512, 512)), make_mask((512, 512), torch.uint8)
    out_image, out_mask = t(image, mask)
    assert isinstance(out_image, tv_tensors.Image) and isinstance(out_mask, tv_tensors.Mask)
    assert out_image.shape == (3, 960, 960) and out_mask.shape == (960, 960)
    assert torch.equal(out_image, mirror_pad(image, [(92, 356), (92, 356)]))
    assert torch.equal(out_mask[92:604, 92:604], mask)
    assert (out_mask[:92] == 255).all() and (out_mask[604:] == 255).all()


@pytest.mark.parametrize(
    ("padding", "pairs"),
    [
        (3, ((3, 3), (3, 3))),
        ([2], ((2, 2), (2, 2))),
        ([1, 2], ((2, 2), (1, 1))),
        ([1, 2, 3, 4], ((2, 4), (1, 3))),
        (((5, 0), (0, 30)), ((5, 0), (0, 30))),
    ],
)
def test_mirror_extrapolate_padding_forms(padding, pairs):
    image = make_image()
    out = MirrorExtrapolate(padding)(image)
    assert torch.equal(out, mirror_pad(image, pairs))
    np.testing.assert_array_equal(
        out.numpy(), np.pad(image.numpy(), [(0, 0), *pairs], mode="reflect")
    )


@given(
    st.tuples(st.integers(1, 12), st.integers(1, 12)), st.sampled_from(["reflect", "symmetric"])
)
def test_mirror_extrapolate_wider_than_the_image(size, mode):
    image = make_tensor((2, *size))
    out = MirrorExtrapolate([(20, 3), (0, 25)], mode=mode)(image)
    np.testing.assert_array_equal(
        out.numpy(), np.pad(image.numpy(), [(0, 0), (20, 3), (0, 25)], mode=mode)
    )


def test_mirror_extrapolate_sample_types():
    sample = {
        "image": make_image(),
        "mask": make_mask(),
        "boxes": make_bounding_boxes(),
        "points": make_keypoints(),
        "video": make_video(),
        "meta": "keep me",
        "label": 3,
    }
    out = check_transform(MirrorExtrapolate([(2, 3), (4, 5)], mask_fill=-1), sample)
    assert out["image"].shape == (3, 22, 20) and out["video"].shape == (2, 3, 22, 20)
    assert (out["mask"][:2] == -1).all() and torch.equal(out["mask"][2:-3, 4:-5], sample["mask"])
    assert out["boxes"].canvas_size == (22, 20)
    assert torch.equal(out["boxes"], sample["boxes"] + torch.tensor([4.0, 2.0, 4.0, 2.0]))
    assert torch.equal(out["points"], sample["points"] + torch.tensor([4.0, 2.0]))
    assert out["points"].canvas_size == (22, 20)


def test_mirror_extrapolate_pil_in_pil_out():
    rgb, palette = make_pil(mode="RGB"), make_pil(mode="P")
    out_rgb, out_p = MirrorExtrapolate(4, mode="symmetric")(rgb, palette)
    assert isinstance(out_rgb, PIL.Image.Image) and out_rgb.mode == "RGB"
    assert out_rgb.size == (DEFAULT_SIZE[1] + 8, DEFAULT_SIZE[0] + 8)
    np.testing.assert_array_equal(
        np.asarray(out_rgb), np.pad(np.asarray(rgb), [(4, 4), (4, 4), (0, 0)], mode="symmetric")
    )
    assert out_p.mode == "P" and out_p.getpalette() == palette.getpalette()
    np.testing.assert_array_equal(
        np.asarray(out_p), np.pad(np.asarray(palette), 4, mode="symmetric")
    )


def test_mirror_extrapolate_3d_plain_tensor():
    volume = make_tensor((1, 5, 6, 7))
    out = MirrorExtrapolate(geometry=TileGeometry((10, 10, 10), (4, 4, 4)))(volume)
    grid = TileGrid((5, 6, 7), TileGeometry((10, 10, 10), (4, 4, 4)))
    assert torch.equal(out, mirror_pad(volume, grid.padding))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one of padding and geometry"),
        ({"padding": 2, "geometry": GEOMETRY}, ValueError, "exactly one of padding and geometry"),
        ({"padding": -1}, ValueError, r"padding must be non-negative, got \(-1, -1\) for axis 0"),
        ({"padding": [1, 2, 3]}, ValueError, r"1, 2 \(\[left/right, top/bottom\]\) or 4 .* got 3"),
        (
            {"padding": 2.5},
            TypeError,
            "padding must be an int, a sequence of ints or a sequence of",
        ),
        ({"padding": [(1, 2)]}, ValueError, r"must have 2 or 3 pairs .* got 1"),
        (
            {"padding": 2, "mode": "edge"},
            ValueError,
            "mode must be 'reflect' or 'symmetric', got 'edge'",
        ),
        (
            {"geometry": (572, 388)},
            TypeError,
            "geometry must be a TileGeometry or a mapping .* got tuple",
        ),
        (
            {"padding": 1, "mask_fill": "x"},
            TypeError,
            "mask_fill must be None, a number or a mapping from label types to numbers .* got str",
        ),
        (
            {"padding": 1, "align": "left"},
            ValueError,
            "align must be 'center' or 'start', got 'left'",
        ),
    ],
)
def test_mirror_extrapolate_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MirrorExtrapolate(**kwargs)


# ---------------------------------------------------------------- crops: replay
@given(
    st.tuples(st.integers(1, 30), st.integers(1, 30)),
    st.sampled_from(["reflect", "symmetric"]),
    st.integers(0, 2**16),
)
def test_paired_random_crop_replays_against_the_oracle(size, mode, seed):
    t = PairedTileCrop(GEOMETRY, mode=mode, mask_fill=None)
    image, mask = make_image(size), make_mask(size)
    torch.manual_seed(seed)
    params = t.make_params([image, mask])
    (tile,) = params["tiles"]
    for (start, _), n, o in zip(tile.output_box, size, GEOMETRY.output_size):
        assert -(o - 1) <= start <= n - 1  # a fair window: any window overlapping the image
    torch.manual_seed(seed)
    out_image, out_mask = t(image, mask)
    assert torch.equal(out_image, canvas_crop(image, tile.input_box, mode))
    assert torch.equal(out_mask, canvas_crop(mask, tile.output_box, mode))
    # the label window is exactly the centre of the image window
    assert torch.equal(canvas_crop(mask, tile.input_box, mode)[4:-4, 4:-4], out_mask)


@given(st.tuples(st.integers(1, 30), st.integers(1, 30)), st.integers(0, 2**16))
def test_random_window_overlaps_the_image(size, seed):
    t = OverlapTileCrop(GEOMETRY)
    torch.manual_seed(seed)
    (tile,) = t.make_params([make_image(size)])["tiles"]
    for (a, b), n in zip(tile.output_box, size):
        assert a <= n - 1 and b >= 1  # at least one image pixel on each axis


def test_random_positions_are_uniform_and_seeded():
    t = OverlapTileCrop(TileGeometry(6, 2))
    image = make_image((5, 3))  # fair starts: rows -1..4, cols -1..2, any offset
    torch.manual_seed(0)
    starts = [t.make_params([image])["tiles"][0].output_box for _ in range(1200)]
    rows = np.bincount([r[0][0] + 1 for r in starts])
    cols = np.bincount([r[1][0] + 1 for r in starts])
    assert len(rows) == 6 and len(cols) == 4 and rows.min() > 150 and cols.min() > 250
    torch.manual_seed(0)
    assert t.make_params([image])["tiles"][0].output_box == starts[0]


@given(st.tuples(st.integers(1, 25), st.integers(1, 25)), st.sampled_from(["center", "start"]))
def test_index_int_and_all_follow_the_grid(size, align):
    grid = TileGrid(size, GEOMETRY, align=align)
    image, mask = make_image(size), make_mask(size)
    for i in {0, len(grid) - 1, len(grid) // 2}:
        out_image, out_mask = PairedTileCrop(GEOMETRY, index=i, align=align, mask_fill=-5)(
            image, mask
        )
        assert torch.equal(out_image, grid.extract(image, i))
        assert torch.equal(out_mask, grid.extract_output(mask, i, fill=-5))
        crop_mask = OverlapTileCrop(GEOMETRY, index=i, align=align)(mask)
        assert torch.equal(crop_mask, grid.extract(mask, i))
    all_images, all_masks = PairedTileCrop(GEOMETRY, index="all", align=align)(image, mask)
    assert isinstance(all_images, tv_tensors.Image) and isinstance(all_masks, tv_tensors.Mask)
    assert all_images.shape == (len(grid), 3, *GEOMETRY.input_size)
    assert all_masks.shape == (len(grid), *GEOMETRY.output_size)
    # index="all" then merging reconstructs image and mask
    assert torch.equal(merge(grid, all_masks), mask)
    assert torch.equal(merge(grid, all_images), image)


def test_index_all_on_lists_for_pil_and_boxes():
    t = OverlapTileCrop(GEOMETRY, index="all")
    pil = make_pil()
    image = make_image()
    crops = t(pil)
    grid = TileGrid(DEFAULT_SIZE, GEOMETRY)
    assert isinstance(crops, list) and len(crops) == len(grid)
    _, boxes = t(image, make_bounding_boxes())
    assert isinstance(boxes, list) and len(boxes) == len(grid)
    assert all(isinstance(b, tv_tensors.BoundingBoxes) for b in boxes)


# ---------------------------------------------------------------- roles and containers
def test_two_plain_positional_arguments_are_image_and_label():
    t = PairedTileCrop(GEOMETRY, index=0, mask_fill=7)
    image, target = make_tensor((3, *DEFAULT_SIZE)), make_tensor(DEFAULT_SIZE, torch.int64)
    out_image, out_target = t(image, target)
    # the label comes back as a Mask: the v2 transforms after this one then move it too
    assert type(out_image) is torch.Tensor and type(out_target) is tv_tensors.Mask
    assert out_image.shape == (3, 14, 14) and out_target.shape == (6, 6)
    assert out_target.dtype == torch.int64
    pil_image, pil_target = t(make_pil(), make_pil(mode="P"))
    assert pil_image.size == (14, 14) and pil_target.size == (6, 6) and pil_target.mode == "P"


@pytest.mark.parametrize(
    "crop",
    [
        PairedTileCrop(TileGeometry(60, 20)),
        PairedTileCrop(TileGeometry(60, 20), index="all"),
        OverlapTileCrop(TileGeometry(60, 20)),
        MirrorExtrapolate(7),
    ],
    ids=["paired", "paired-all", "overlap", "mirror"],
)
@pytest.mark.parametrize(
    "augment",
    [v2.RandomHorizontalFlip(p=1), v2.RandomVerticalFlip(p=1), v2.RandomRotation((90, 90))],
    ids=["hflip", "vflip", "rot90"],
)
def test_plain_pairs_stay_aligned_through_later_v2_transforms(crop, augment):
    # a label that encodes each pixel's position shows any misalignment
    code = torch.arange(100 * 70).reshape(100, 70)
    torch.manual_seed(0)
    tile, label = v2.Compose([crop, augment])(code[None].float(), code)
    margin = [(i - o) // 2 for i, o in zip(tile.shape[-2:], label.shape[-2:])]
    centre = tile[
        ..., 0, margin[0] : tile.shape[-2] - margin[0], margin[1] : tile.shape[-1] - margin[1]
    ]
    assert torch.equal(label.as_subclass(torch.Tensor), centre.long())


def test_single_tuple_follows_torchvision_rules():
    # one positional tuple: torchvision's rule, only the first plain tensor is an image
    t = OverlapTileCrop(GEOMETRY, index=0)
    image, other = make_tensor((3, *DEFAULT_SIZE)), make_tensor((5,))
    out_image, out_other = t((image, other))
    assert out_image.shape == (3, 14, 14) and out_other is other


@pytest.mark.parametrize(
    "sample",
    [
        (make_image(),),
        (make_mask(),),
        (make_tensor((3, *DEFAULT_SIZE)),),
        (make_image(), make_mask()),
        (make_video(), make_mask()),
        (make_mask(), make_image(), make_mask()),
        (make_tensor((3, *DEFAULT_SIZE)), make_mask()),
    ],
    ids=lambda s: "-".join(type(x).__name__ for x in s),
)
@pytest.mark.parametrize("index", ["random", 2, "all"])
def test_positional_tensors_match_torchvisions_tree_path(sample, index):
    # positional tensors take a short path; a list takes torchvision's flatten path.
    # (Image, plain tensor) is not here: as two positional arguments the plain tensor is
    # the label (test_input_rules.py), in a list it passes through (torchvision's rule).
    t = PairedTileCrop(GEOMETRY, index=index, mask_fill=9)
    torch.manual_seed(3)
    direct = t(*sample)
    torch.manual_seed(3)
    via_tree = t(list(sample))
    direct = direct if isinstance(direct, tuple) else (direct,)
    assert len(direct) == len(via_tree)
    for a, b, x in zip(direct, via_tree, sample):
        assert type(a) is type(b) is type(x)
        assert torch.equal(a, b)
        assert (a is x) == (b is x)


@pytest.mark.parametrize("transform_cls", [OverlapTileCrop, PairedTileCrop])
def test_dict_and_nested_samples(transform_cls):
    sample = {
        "image": make_image(),
        "target": {"masks": make_mask(), "boxes": make_bounding_boxes(), "id": 4},
        "plain": make_tensor((3,)),
    }
    out = check_transform(transform_cls(GEOMETRY, index=1), sample)
    label_size = (14, 14) if transform_cls is OverlapTileCrop else (6, 6)
    assert out["image"].shape == (3, 14, 14)
    assert out["target"]["masks"].shape == label_size
    assert out["target"]["boxes"].canvas_size == (14, 14)
    assert out["plain"] is sample["plain"]  # next to an Image, plain tensors pass through


def test_boxes_follow_the_image_window():
    t = PairedTileCrop(GEOMETRY, index=0)
    image, boxes = make_image(), make_bounding_boxes()
    _, out_boxes = t(image, boxes)
    tile = TileGrid(DEFAULT_SIZE, GEOMETRY)[0]
    (top, _), (left, _) = tile.input_box
    shifted = boxes.as_subclass(torch.Tensor) - torch.tensor([left, top, left, top])
    assert torch.allclose(out_boxes.as_subclass(torch.Tensor), shifted.clamp(min=0, max=14))


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.bool, torch.int64, torch.float16, torch.bfloat16, torch.float32]
)
def test_dtypes_are_kept_in_compose(dtype):
    pipeline = v2.Compose(
        [
            PairedTileCrop(GEOMETRY, mask_fill=0),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
        ]
    )
    image = tv_tensors.Image(make_tensor((2, 21, 9), dtype))
    mask = make_mask((21, 9), torch.uint8)
    out = check_transform(pipeline, (image, mask))
    assert out[0].dtype == dtype and out[0].shape == (2, 14, 14)
    assert out[1].shape == (6, 6)


@given(
    grids(),
    st.sampled_from(DTYPES),
    st.sampled_from(["reflect", "symmetric"]),
    st.sampled_from([None, 3]),
    st.data(),
)
def test_paired_windows_against_the_canvas_for_every_dtype(grid, dtype, mode, fill, data):
    # image: the input window of the mirrored canvas; label: the centre of the image's
    # window (or fill outside the image); index="all" + merging gives the image back
    index = data.draw(st.integers(0, len(grid) - 1))
    image = make_tensor((2, *grid.image_size), dtype)
    label = make_tensor(grid.image_size, torch.uint8, seed=3)
    crop = PairedTileCrop(grid.geometry, index=index, mode=mode, align=grid.align, mask_fill=fill)
    out_image, out_label = crop(image, label)
    tile = grid[index]
    assert torch.equal(out_image, canvas_crop(image, tile.input_box, mode))
    assert out_image.dtype == dtype and out_label.dtype == torch.uint8
    margin = grid.geometry.margin
    centre = tuple(slice(m, m + o) for m, o in zip(margin, grid.geometry.output_size))
    mirrored = canvas_crop(label, tile.input_box, mode)[centre]
    # pixels of the output window inside the image: an outer product of per-axis masks
    per_axis = [
        (torch.arange(a, b) >= 0) & (torch.arange(a, b) < n)
        for (a, b), n in zip(tile.output_box, grid.image_size)
    ]
    inside = functools.reduce(
        lambda acc, axis: acc.unsqueeze(-1) & axis, per_axis[1:], per_axis[0]
    )
    plain_label = out_label.as_subclass(torch.Tensor)
    assert torch.equal(plain_label[inside], mirrored[inside])
    expected_outside = (
        mirrored[~inside] if fill is None else torch.full_like(mirrored[~inside], fill)
    )
    assert torch.equal(plain_label[~inside], expected_outside)
    stacked = OverlapTileCrop(grid.geometry, index="all", mode=mode, align=grid.align)(image)
    centres = stacked[(slice(None), slice(None), *centre)]
    assert torch.equal(merge(grid, centres), image)


@pytest.mark.parametrize("transform_cls", [OverlapTileCrop, PairedTileCrop])
def test_dict_samples_get_the_same_tile_values(transform_cls):
    grid = TileGrid((17, 11), GEOMETRY)
    sample = {
        "image": make_image(),
        "target": {"masks": make_mask(), "id": 4},
        "video": make_video(),
    }
    out = v2.Compose([transform_cls(GEOMETRY, index=1), v2.RandomHorizontalFlip(p=1)])(sample)
    assert torch.equal(out["image"], grid.extract(sample["image"], 1).flip(-1))
    assert torch.equal(out["video"], grid.extract(sample["video"], 1).flip(-1))
    expected = (
        grid.extract(sample["target"]["masks"], 1)
        if transform_cls is OverlapTileCrop
        else grid.extract_output(sample["target"]["masks"], 1)
    )
    assert torch.equal(out["target"]["masks"], expected.flip(-1))
    assert out["target"]["id"] == 4


def test_flips_keep_image_and_label_aligned():
    pipeline = v2.Compose([PairedTileCrop(GEOMETRY), v2.RandomHorizontalFlip(p=1.0)])
    base = make_tensor((23, 19), torch.int64)
    image, mask = tv_tensors.Image(base[None]), tv_tensors.Mask(base)
    for seed in range(5):
        torch.manual_seed(seed)
        out_image, out_mask = pipeline(image, mask)
        assert torch.equal(out_image[0, 4:-4, 4:-4], out_mask.as_subclass(torch.Tensor))


def test_classic_compose_and_pil():
    pipeline = v1.Compose([OverlapTileCrop(GEOMETRY, index=2), v1.ToTensor()])
    out = pipeline(make_pil())
    assert out.shape == (3, 14, 14) and out.dtype == torch.float32


def test_3d_plain_tensors():
    geometry = TileGeometry((10, 12, 14), (4, 6, 8))
    volume, labels = make_tensor((2, 5, 30, 9)), make_tensor((5, 30, 9), torch.int64)
    out_v, out_l = PairedTileCrop(geometry, index=3)(volume, labels)
    grid = TileGrid((5, 30, 9), geometry)
    assert torch.equal(out_v, grid.extract(volume, 3))
    assert torch.equal(out_l, grid.extract_output(labels, 3))
    stacked = OverlapTileCrop(geometry, index="all")(volume)
    assert stacked.shape == (len(grid), 2, 10, 12, 14)


# ---------------------------------------------------------------- errors, repr, pickling
def test_sizes_that_disagree_name_both_shapes():
    t = PairedTileCrop(GEOMETRY)
    with pytest.raises(
        ValueError, match=r"Image \(3, 17, 11\) and Mask \(17, 12\) differ in their spatial size"
    ):
        t(make_image(), make_mask((17, 12)))
    with pytest.raises(ValueError, match=r"canvas_size \(5, 5\)"):
        t(make_image(), make_bounding_boxes((5, 5)))


def test_call_time_errors():
    with pytest.raises(
        ValueError, match=r"index=99 is outside the grid for image size \(17, 11\)"
    ):
        PairedTileCrop(GEOMETRY, index=99)(make_image())
    with pytest.raises(
        ValueError, match=r"cannot tile an empty input: Tensor of shape \(3, 0, 5\)"
    ):
        OverlapTileCrop(GEOMETRY)(torch.zeros(3, 0, 5))
    with pytest.raises(ValueError, match=r"at least 2 axes \(\.\.\., H, W\), got shape \(5,\)"):
        OverlapTileCrop(GEOMETRY)(torch.zeros(5))
    with pytest.raises(TypeError, match="found nothing to transform"):
        OverlapTileCrop(GEOMETRY)("not an image")
    with pytest.raises(TypeError, match="PIL images are 2-D; they cannot follow a 3-D tile"):
        OverlapTileCrop(TileGeometry((4, 4, 4), (2, 2, 2)))(make_pil())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"index": "first"},
            ValueError,
            r"index must be 'random', 'all', an int tile index or a sampler .* got 'first'",
        ),
        ({"index": 1.0}, ValueError, r"got 1.0"),
        ({"index": True}, ValueError, r"got True"),
        ({"mode": "wrap"}, ValueError, r"mode must be 'reflect' or 'symmetric', got 'wrap'"),
        ({"align": 0}, ValueError, r"align must be 'center' or 'start', got 0"),
        (
            {"mask_fill": [1]},
            TypeError,
            r"mask_fill must be None, a number or a mapping from label types .* got list",
        ),
    ],
)
def test_crop_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        PairedTileCrop(GEOMETRY, **kwargs)
    with pytest.raises(
        TypeError, match=r"geometry must be a TileGeometry or a mapping .* got int 572"
    ):
        OverlapTileCrop(572)  # type: ignore[arg-type]


def test_repr_and_pickle():
    t = PairedTileCrop(TileGeometry.unet(input_size=572), index="all", mask_fill=255)
    # the repr is the call as given, positional arguments included
    assert (
        repr(t) == "PairedTileCrop(TileGeometry(572, 388, step=384), index='all', mask_fill=255)"
    )
    assert repr(MirrorExtrapolate(2, mode="symmetric")) == "MirrorExtrapolate(2, mode='symmetric')"
    clone = pickle.loads(pickle.dumps(t))
    assert repr(clone) == repr(t) and clone.geometry == t.geometry


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform
        self.image = make_image((300, 300))
        self.mask = make_mask((300, 300))

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.transform(self.image, self.mask)


def test_dataloader_workers_draw_different_tiles():
    loader = torch.utils.data.DataLoader(
        _Pairs(PairedTileCrop(GEOMETRY)), batch_size=None, num_workers=2
    )
    torch.manual_seed(0)
    images = [image for image, _ in loader]
    flat = {tuple(image.flatten()[:20].tolist()) for image in images}
    assert len(flat) == len(images)
