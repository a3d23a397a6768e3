"""Inputs, one rule: which leaves the transforms crop, which pass, which are refused.

Every combination of image and label types is either cropped into aligned windows or
refused with a ``TypeError``; unregistered tv_tensors pass through as in torchvision;
Images standing in for labels are warned about; ``mask_fill`` may be a per-type mapping.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from unet_transforms import (
    MirrorExtrapolate,
    OverlapTileCrop,
    PairedTileCrop,
    TileGeometry,
    TileGrid,
)
from unet_transforms.functional import crop_tile, register_kernel
from unet_transforms.transforms._base import LabelAsImageWarning

from common import (
    DEFAULT_SIZE,
    check_transform,
    make_bounding_boxes,
    make_image,
    make_mask,
    make_pil,
    make_tensor,
)

GEOMETRY = TileGeometry(14, 6, step=4)  # margin 4: every window reaches outside (17, 11)
INDEX = 0
TILE = TileGrid(DEFAULT_SIZE, GEOMETRY)[INDEX]


class ClassLabels(tv_tensors.TVTensor):
    """A non-spatial tv_tensor nobody registered a kernel for."""


class Heat(tv_tensors.TVTensor):
    """A spatial tv_tensor nobody registered a kernel for."""


class WeightMap(tv_tensors.Mask):
    """A label type of its own, transformed as a Mask (torchvision walks the MRO)."""


class BorderWeights(WeightMap):
    """A subclass of a subclass: takes WeightMap's fill unless it has its own."""


class Registered(tv_tensors.TVTensor):
    """A tv_tensor with a crop_tile kernel of its own: it doubles the window."""


@register_kernel(crop_tile, Registered)
def _crop_registered(inpt, box, mode="reflect", fill=None):
    out = crop_tile(inpt.as_subclass(torch.Tensor), box, mode, fill) * 2
    return tv_tensors.wrap(out, like=inpt)


def window(x, box, fill=None) -> torch.Tensor:
    """Oracle: numpy.pad (reflect) of the whole array, then the window; or fill outside."""
    arr = np.asarray(x.as_subclass(torch.Tensor) if isinstance(x, torch.Tensor) else x)
    lead = [(0, 0)] * (arr.ndim - len(box))
    spatial = arr.shape[arr.ndim - len(box) :]
    pads = [(max(0, -a), max(0, b - n)) for (a, b), n in zip(box, spatial)]
    canvas = np.pad(arr, lead + pads, mode="reflect")
    out = canvas[(Ellipsis, *(slice(a + p, b + p) for (a, b), (p, _) in zip(box, pads)))].copy()
    if fill is not None:
        inside = np.ones(out.shape[arr.ndim - len(box) :], bool)
        for axis, ((a, b), n) in enumerate(zip(box, spatial)):
            pos = np.arange(a, b)
            shape = [1] * len(box)
            shape[axis] = b - a
            inside &= ((pos >= 0) & (pos < n)).reshape(shape)
        out[..., ~inside] = fill
    return torch.from_numpy(out)


def values(x) -> torch.Tensor:
    """A leaf's values as a plain tensor; PIL images as (H, W) or (C, H, W)."""
    if isinstance(x, PIL.Image.Image):
        arr = np.array(x)
        return torch.from_numpy(arr if arr.ndim == 2 else np.moveaxis(arr, -1, 0).copy())
    return x.as_subclass(torch.Tensor)


# ---------------------------------------------------------------- item 6: one rule
IMAGES = {
    "tensor": lambda: make_tensor((3, *DEFAULT_SIZE)),
    "Image": make_image,
    "PIL": make_pil,
    "numpy": lambda: make_tensor((3, *DEFAULT_SIZE)).numpy(),
}
LABELS = {
    "tensor": lambda: make_tensor(DEFAULT_SIZE, torch.int64, seed=1),
    "Mask": lambda: make_mask(dtype=torch.uint8),
    "PIL": lambda: make_pil(mode="L"),
    "numpy": lambda: make_tensor(DEFAULT_SIZE, torch.int64, seed=1).numpy(),
}


@pytest.mark.parametrize("label_kind", LABELS)
@pytest.mark.parametrize("image_kind", IMAGES)
def test_every_image_label_pair_is_aligned_or_refused(image_kind, label_kind):
    image, label = IMAGES[image_kind](), LABELS[label_kind]()
    crop = PairedTileCrop(GEOMETRY, index=INDEX, mask_fill=7)
    if "numpy" in (image_kind, label_kind):
        where = r"the image \(first argument\)" if image_kind == "numpy" else "the target"
        with pytest.raises(
            TypeError,
            match=rf"PairedTileCrop does not transform numpy arrays .* as {where}\. Convert it "
            r"first: torch\.from_numpy\(x\)",
        ):
            crop(image, label)
        return
    out_image, out_label = crop(image, label)
    assert torch.equal(values(out_image), window(values(image), TILE.input_box))
    assert torch.equal(values(out_label), window(values(label), TILE.output_box, fill=7))
    # types: as given, except that a plain tensor label comes back as a Mask
    assert type(out_image) is type(image)
    expected = tv_tensors.Mask if label_kind == "tensor" else type(label)
    assert type(out_label) is expected


@pytest.mark.parametrize("transform_cls", [PairedTileCrop, OverlapTileCrop, MirrorExtrapolate])
def test_arrays_are_refused_where_a_plain_tensor_would_be_transformed(transform_cls):
    crop = MirrorExtrapolate(3) if transform_cls is MirrorExtrapolate else transform_cls(GEOMETRY)
    array = np.zeros((3, *DEFAULT_SIZE), np.float32)
    match = rf"{transform_cls.__name__} does not transform numpy arrays"
    for sample in (
        array,
        (array,),
        {"image": array, "mask": make_mask()},  # the mask alone would be cropped
        [make_mask(), np.zeros((3, 4)).view(np.memmap)],  # memmaps are arrays too
    ):
        with pytest.raises(TypeError, match=match):
            crop(sample)
    with pytest.raises(TypeError, match=match + r".* as the target"):
        crop(make_image(), array[0])


class _ArrayLike:
    """What zarr, dask and h5py arrays look like to the transforms."""

    shape = (3, *DEFAULT_SIZE)

    def __array__(self, dtype=None, copy=None):
        return np.zeros(self.shape)

    def __getitem__(self, index):
        return np.zeros(self.shape)[index]


def test_array_likes_are_refused_too():
    with pytest.raises(
        TypeError, match=r"got a test_input_rules\._ArrayLike of shape \(3, 17, 11\)"
    ):
        PairedTileCrop(GEOMETRY)(_ArrayLike(), make_tensor(DEFAULT_SIZE))


def test_arrays_pass_where_a_plain_tensor_would_pass():
    # next to an Image, plain leaves pass through (torchvision's rule): arrays too
    sample = {
        "image": make_image(),
        "mask": make_mask(),
        "ids": np.arange(3),
        "plain": make_tensor((3, 4)),
        "score": np.float32(0.5),
    }
    out = check_transform(PairedTileCrop(GEOMETRY, index=INDEX), sample)
    assert out["ids"] is sample["ids"] and out["plain"] is sample["plain"]
    assert out["image"].shape == (3, 14, 14) and out["mask"].shape == (6, 6)
    # after the first plain tensor of a sample without an image, arrays pass as well
    first, extra = make_tensor((3, *DEFAULT_SIZE)), np.zeros((2, 5))
    out_first, out_extra = OverlapTileCrop(GEOMETRY, index=INDEX)([first, extra])
    assert out_first.shape == (3, 14, 14) and out_extra is extra
    # a classification target is not an array: (image, class index) pairs work
    out_image, target = PairedTileCrop(GEOMETRY, index=INDEX)(make_image(), np.int64(3))
    assert out_image.shape == (3, 14, 14) and target == 3


LEFT_BEHIND = {
    "three plain tensors": lambda i, lab: (i, lab, lab.float()),
    "one tuple argument": lambda i, lab: ((i, lab),),
    "plain pair and a name": lambda i, lab: (i, lab, "name"),
    "dict of plain tensors": lambda i, lab: ({"image": i, "label": lab},),
    "Image and plain label in a dict": lambda i, lab: (
        {"image": tv_tensors.Image(i), "label": lab},
    ),
    "Image, Mask and plain weights": lambda i, lab: (
        tv_tensors.Image(i),
        tv_tensors.Mask(lab),
        lab.float(),
    ),
    "Image, Mask and an array": lambda i, lab: (
        {"image": tv_tensors.Image(i), "mask": tv_tensors.Mask(lab), "w": lab.numpy()},
    ),
}


@pytest.mark.parametrize("transform", [PairedTileCrop, OverlapTileCrop, MirrorExtrapolate])
@pytest.mark.parametrize("case", LEFT_BEHIND)
def test_maps_torchvision_would_leave_behind_are_refused(transform, case):
    # these came back with the label (or weights) uncropped and no warning: an
    # unaligned pair
    image = make_tensor((3, *DEFAULT_SIZE))
    label = make_tensor(DEFAULT_SIZE, torch.int64, seed=1)
    if transform is MirrorExtrapolate:
        t = MirrorExtrapolate(geometry=GEOMETRY)
    else:
        t = transform(GEOMETRY, index=INDEX)
    with pytest.raises(TypeError, match=r"of shape \(17, 11\).*tv_tensors\.Mask"):
        t(*LEFT_BEHIND[case](image, label))


def test_image_with_plain_label_crops_the_label():
    # was: the plain label passed through uncropped next to a tv_tensors.Image
    image, label = make_image(), make_tensor(DEFAULT_SIZE, torch.int64, seed=1)
    out_image, out_label = PairedTileCrop(GEOMETRY, index=INDEX, mask_fill=-1)(image, label)
    assert type(out_image) is tv_tensors.Image and type(out_label) is tv_tensors.Mask
    assert torch.equal(out_label.as_subclass(torch.Tensor), window(label, TILE.output_box, -1))
    video = tv_tensors.Video(make_tensor((2, 3, *DEFAULT_SIZE)))
    out_video, out_label = PairedTileCrop(GEOMETRY, index=INDEX)(video, label)
    assert out_video.shape == (2, 3, 14, 14) and out_label.shape == (6, 6)
    # the pair rule holds for two positional arguments; in one container torchvision's
    # rule would pass the plain label through uncropped: refused, not left unaligned
    with pytest.raises(TypeError, match=r"would pass through untouched"):
        PairedTileCrop(GEOMETRY, index=INDEX)([image, label])


def test_plain_image_with_an_image_target_crops_both_and_warns():
    # was: the plain image passed through uncropped next to a tv_tensors.Image
    image, target = make_tensor((3, *DEFAULT_SIZE)), make_image(channels=1)
    with pytest.warns(LabelAsImageWarning):
        out_image, out_target = PairedTileCrop(GEOMETRY, index=INDEX)(image, target)
    assert type(out_image) is torch.Tensor and type(out_target) is tv_tensors.Image
    assert torch.equal(out_image, window(image, TILE.input_box))
    assert torch.equal(values(out_target), window(target, TILE.input_box))


def test_sample_size_refuses_arrays_as_the_call_does():
    crop = PairedTileCrop(GEOMETRY)
    with pytest.raises(TypeError, match="does not transform numpy arrays"):
        crop.sample_size(np.zeros((3, 5, 5)), make_tensor((5, 5)))
    assert crop.sample_size(make_image(), make_tensor(DEFAULT_SIZE)) == DEFAULT_SIZE


# ---------------------------------------------------------------- item 7: Images as labels
def test_images_without_a_mask_warn_once_per_transform():
    pil_image, pil_mask = make_pil(mode="L"), make_pil(mode="L")
    crop = PairedTileCrop(GEOMETRY, mask_fill=255)
    pipeline = v2.Compose(
        [
            v2.ToImage(),  # makes both Images: the mask is now an image to every transform
            crop,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5], [0.5]),
        ]
    )
    with pytest.warns(
        LabelAsImageWarning,
        match=r"PairedTileCrop got 2 images \(tv_tensors\.Image\) and no label "
        r"\(tv_tensors\.Mask\).* Mark labels as tv_tensors\.Mask .* v2\.ToImage\(\) after",
    ):
        _, label = pipeline(pil_image, pil_mask)
    # what the warning is about: the mask came back as a scaled, normalised float image
    assert type(label) is tv_tensors.Image and label.dtype == torch.float32
    image, label = make_image(), make_image(channels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crop(image, label)  # the same transform: warned already
        crop({"a": image, "b": label})
    with pytest.warns(LabelAsImageWarning):  # another transform warns once itself
        PairedTileCrop(GEOMETRY)({"a": image, "b": label})
    with pytest.warns(LabelAsImageWarning):  # MirrorExtrapolate fills labels: paired too
        MirrorExtrapolate(2, mask_fill=0)(image, label)


@pytest.mark.parametrize(
    ("transform", "sample"),
    [
        (PairedTileCrop(GEOMETRY), (make_image(), make_mask())),
        (PairedTileCrop(GEOMETRY), (make_image(), make_image(), make_mask())),
        (PairedTileCrop(GEOMETRY), (make_image(), make_tensor(DEFAULT_SIZE))),
        (PairedTileCrop(GEOMETRY), (make_pil(), make_pil(mode="L"))),
        (OverlapTileCrop(GEOMETRY), (make_image(), make_image())),  # one window for all
        (MirrorExtrapolate(2), (make_image(), make_image())),  # labels mirrored as images
    ],
    ids=["image-mask", "two-images-mask", "image-plain", "pil", "overlap", "mirror"],
)
def test_no_warning_when_labels_are_labels_or_treated_as_images(transform, sample):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = transform(*sample)
    assert len(out) == len(sample)


# ---------------------------------------------------------------- item 8: dispatch
def test_unregistered_tv_tensors_pass_through_untouched():
    labels = ClassLabels(torch.tensor([1, 2, 3]))
    heat = Heat(make_tensor((30, 30)))  # another size: it takes no part in the call
    sample = {"image": make_image(), "mask": make_mask(), "labels": labels, "heat": heat}
    out = check_transform(PairedTileCrop(GEOMETRY, index=INDEX), sample)
    assert out["labels"] is labels and out["heat"] is heat
    assert out["image"].shape == (3, 14, 14) and out["mask"].shape == (6, 6)
    out_image, out_heat = MirrorExtrapolate(2)(make_image(), heat)
    assert out_heat is heat and out_image.shape == (3, 21, 15)
    with pytest.raises(TypeError, match="found nothing to transform"):
        OverlapTileCrop(GEOMETRY)(heat)
    with pytest.raises(
        TypeError, match=r"crop_tile has no kernel for Heat, a tv_tensor subclass: register one"
    ):
        crop_tile(heat, ((0, 2), (0, 2)))


def test_subclasses_of_mask_and_image_are_transformed_as_their_base():
    class Scan(tv_tensors.Image):
        pass

    image = make_image().as_subclass(Scan)
    weights = WeightMap(make_tensor(DEFAULT_SIZE))
    out_image, out_weights = PairedTileCrop(GEOMETRY, index=INDEX, mask_fill=0.0)(image, weights)
    assert type(out_image) is Scan and type(out_weights) is WeightMap
    assert torch.equal(values(out_image), window(image, TILE.input_box))
    assert torch.equal(values(out_weights), window(weights, TILE.output_box, fill=0.0))


def test_registered_kernels_keep_working():
    registered = Registered(make_tensor((2, *DEFAULT_SIZE)))
    _, out = OverlapTileCrop(GEOMETRY, index=INDEX)(make_image(), registered)
    assert type(out) is Registered
    assert torch.equal(values(out), 2 * window(registered, TILE.input_box))


# ---------------------------------------------------------------- item 9: fill per type
def test_mask_fill_per_type_follows_the_mro():
    mask_fill = {tv_tensors.Mask: 255, WeightMap: 0.5}
    crop = PairedTileCrop(GEOMETRY, index=INDEX, mask_fill=mask_fill)
    mask = make_mask(dtype=torch.uint8)
    weights, border = (
        WeightMap(make_tensor(DEFAULT_SIZE)),
        BorderWeights(make_tensor(DEFAULT_SIZE)),
    )
    out = crop({"image": make_image(), "mask": mask, "weights": weights, "border": border})
    box = TILE.output_box
    assert torch.equal(values(out["mask"]), window(mask, box, fill=255))
    assert torch.equal(values(out["weights"]), window(weights, box, fill=0.5))
    assert torch.equal(values(out["border"]), window(border, box, fill=0.5))
    # the target of a plain (image, target) pair is looked up as the Mask it becomes
    label = make_tensor(DEFAULT_SIZE, torch.uint8, seed=2)
    _, out_label = crop(make_tensor((3, *DEFAULT_SIZE)), label)
    assert torch.equal(values(out_label), window(label, box, fill=255))
    # the caller's mapping is copied, never modified
    assert mask_fill == {tv_tensors.Mask: 255, WeightMap: 0.5}
    mask_fill[tv_tensors.Mask] = 1
    assert torch.equal(values(crop(make_image(), mask)[1]), window(mask, box, fill=255))


def test_mask_fill_others_and_missing_types():
    mask, weights = make_mask(dtype=torch.uint8), WeightMap(make_tensor(DEFAULT_SIZE))
    others = PairedTileCrop(GEOMETRY, index=INDEX, mask_fill={WeightMap: 0.0, "others": 9})
    out_mask, out_weights = others(mask, weights)
    assert torch.equal(values(out_mask), window(mask, TILE.output_box, fill=9))
    assert torch.equal(values(out_weights), window(weights, TILE.output_box, fill=0.0))
    # a label type without an entry (and no "others") is mirrored, as with mask_fill=None
    only_weights = PairedTileCrop(GEOMETRY, index=INDEX, mask_fill={WeightMap: 0.0})
    assert torch.equal(values(only_weights(mask)), window(mask, TILE.output_box))
    mirror = MirrorExtrapolate(2, mask_fill={tv_tensors.Mask: 4})
    out_mask, out_weights = mirror(mask, weights)
    assert torch.equal(values(out_mask), window(mask, ((-2, 19), (-2, 13)), fill=4))
    assert torch.equal(values(out_weights), window(weights, ((-2, 19), (-2, 13)), fill=4))
    clone = pickle.loads(pickle.dumps(others))
    assert clone.mask_fill == {WeightMap: 0.0, "others": 9}


def test_a_bool_mask_does_not_block_the_fill_of_other_labels():
    # detection masks are bool: no ignore value fits them, they get False outside
    instances = tv_tensors.Mask(make_tensor((2, *DEFAULT_SIZE), torch.bool))
    semantic = make_mask(dtype=torch.uint8)
    sample = {
        "image": make_image(),
        "boxes": make_bounding_boxes(),
        "masks": instances,
        "semantic": semantic,
    }
    out = check_transform(PairedTileCrop(GEOMETRY, index=INDEX, mask_fill=255), sample)
    assert torch.equal(values(out["semantic"]), window(semantic, TILE.output_box, fill=255))
    assert torch.equal(values(out["masks"]), window(instances, TILE.output_box, fill=False))
    # a fill that bool holds is used as it is
    out = PairedTileCrop(GEOMETRY, index=INDEX, mask_fill=1)(make_image(), instances)
    assert torch.equal(values(out[1]), window(instances, TILE.output_box, fill=True))
    pil = make_pil(mode="L").convert("1")
    out = MirrorExtrapolate(2, mask_fill=255)(make_pil(), pil)
    assert torch.equal(values(out[1]), window(np.asarray(pil), ((-2, 19), (-2, 13)), False))


@pytest.mark.parametrize(
    ("mask_fill", "error", "match"),
    [
        ([1], TypeError, "mask_fill must be None, a number or a mapping from label types"),
        (
            {"mask": 255},
            TypeError,
            r"mask_fill keys must be label types \(tv_tensors\.Mask or a subclass\), their "
            r"names as configs write them .* or 'others', got 'mask'",
        ),
        (
            {tv_tensors.Image: 0},
            ValueError,
            "keys must be tv_tensors.Mask or a subclass .* got Image",
        ),
        (
            {tv_tensors.Mask: "x"},
            TypeError,
            r"mask_fill\[Mask\] must be None or a number, got str",
        ),
        ({"others": True}, TypeError, r"mask_fill\['others'\] must be None or a number, got bool"),
    ],
)
def test_bad_mask_fill(mask_fill, error, match):
    for transform in (
        lambda: PairedTileCrop(GEOMETRY, mask_fill=mask_fill),
        lambda: MirrorExtrapolate(2, mask_fill=mask_fill),
    ):
        with pytest.raises(error, match=match):
            transform()


# ---------------------------------------------------------------- item 12: tensor kinds
@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: torch.zeros(3, 17, 11).to_sparse(), "tensor of layout torch.sparse_coo"),
        (lambda: torch.zeros(3, 17, 11, device="meta"), "meta tensor"),
        (
            lambda: torch.quantize_per_tensor(torch.zeros(3, 17, 11), 0.1, 0, torch.quint8),
            "quantized tensor",
        ),
        (lambda: torch.nested.nested_tensor([torch.zeros(17, 11)] * 3), "nested tensor"),
    ],
    ids=["sparse", "meta", "quantized", "nested"],
)
def test_transforms_refuse_tensors_without_dense_data(make, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized and nested tensors are deprecated/beta
        x = make()
    with pytest.raises(
        TypeError, match=rf"PairedTileCrop's input must be a dense tensor .* {kind}"
    ):
        PairedTileCrop(GEOMETRY)(x)


# ---------------------------------------------------------------- torchvision's smoke check
@pytest.mark.parametrize(
    "transform",
    [
        PairedTileCrop(GEOMETRY, index=INDEX, mask_fill=255),
        OverlapTileCrop(GEOMETRY),
        MirrorExtrapolate(3, mask_fill={tv_tensors.Mask: 255}),
    ],
    ids=["paired", "overlap", "mirror"],
)
@pytest.mark.parametrize("image_kind", ["tensor", "PIL", "Image", "Video"])
def test_torchvisions_sample_conventions(transform, image_kind):
    # torchvision's _check_transform_sample_input_smoke: one big sample, in a dict, a
    # list and a tuple; the leaves torchvision's rule transforms keep their type, the
    # others come back as the same objects
    image = {
        "tensor": lambda: make_tensor((3, *DEFAULT_SIZE)),
        "PIL": make_pil,
        "Image": make_image,
        "Video": lambda: tv_tensors.Video(make_tensor((2, 3, *DEFAULT_SIZE))),
    }[image_kind]()
    sample = {
        "image": image,
        "boxes": make_bounding_boxes(),
        "detection_masks": tv_tensors.Mask(make_tensor((2, *DEFAULT_SIZE), torch.bool)),
        "segmentation_mask": make_mask(dtype=torch.uint8),
        "labels": ClassLabels(torch.tensor([1, 2])),
        "int": 0,
        "float": 0.0,
        "bool": True,
        "none": None,
        "str": "str",
        "object": object(),
        "tensor": torch.empty(5),
        "array": np.empty(5),
    }
    for container in (dict, list, tuple):
        inputs = sample if container is dict else container(sample.values())
        flat, spec = tree_flatten(inputs)
        torch.manual_seed(0)
        out_flat, out_spec = tree_flatten(transform(inputs))
        assert out_spec == spec
        needs = v2.Transform()._needs_transform_list(flat)
        for got, given, transformed in zip(out_flat, flat, needs):
            if transformed and not isinstance(given, ClassLabels):
                assert type(got) is type(given) and got is not given
            else:
                assert got is given
