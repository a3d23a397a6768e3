"""unet_weight_map against a brute-force reference, and WeightMap through the transforms."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.ndimage
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2

from unet_transforms import PairedTileCrop, TileGeometry, TileGrid, crop_tile
from unet_transforms.weightmap import WeightMap, _border_margin, unet_weight_map

from common import check_transform, make_image, make_mask


def reference_weight_map(instances, *, w0, sigma, class_weights, background, ignore_index):
    """The definition, literally: one whole-image exact distance transform per instance,
    the two smallest distances per pixel by sorting, float64 throughout."""
    instances = np.asarray(instances)
    ignored = (
        np.zeros(instances.shape, bool) if ignore_index is None else instances == ignore_index
    )
    is_background = instances == background
    is_foreground = ~is_background & ~ignored
    if class_weights == "balanced":
        n = int((~ignored).sum())
        masks = (is_background, is_foreground)
        present = sum(m.any() for m in masks)
        weights = [n / (present * m.sum()) if m.any() else 0.0 for m in masks]
    else:
        weights = class_weights
    out = np.where(is_background, weights[0], 0.0) + np.where(is_foreground, weights[1], 0.0)
    labels = sorted(set(np.unique(instances[is_foreground]).tolist()))
    if len(labels) >= 2:
        dist = np.stack([scipy.ndimage.distance_transform_edt(instances != lab) for lab in labels])
        dist.sort(axis=0)
        border = w0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * sigma**2))
        out += np.where(is_background, border, 0.0)
    return out


@st.composite
def instance_images(draw):
    """2-D and 3-D label images from size 1 up, with 0, 1, 2 or many instances, touching
    or apart, with or without ignored pixels, and a background that is not always 0."""
    ndim = draw(st.sampled_from([2, 3]))
    max_size = 40 if ndim == 2 else 12
    shape = tuple(draw(st.lists(st.integers(1, max_size), min_size=ndim, max_size=ndim)))
    n_instances = draw(st.sampled_from([0, 1, 2, 3, 8, 30]))
    background = draw(st.sampled_from([0, 0, 7]))
    ignore_index = draw(st.sampled_from([None, None, 255]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = np.full(shape, background, dtype=np.int64)
    instance_values = rng.choice(np.arange(1, 200), size=n_instances, replace=False)
    instance_values = instance_values[instance_values != background]
    for value in instance_values:  # boxes of random size: blobs that touch or overlap
        start = [rng.integers(0, n) for n in shape]
        stop = [min(n, s + rng.integers(1, max(2, n // 3))) for s, n in zip(start, shape)]
        labels[tuple(slice(a, b) for a, b in zip(start, stop))] = value
    if ignore_index is not None:
        labels[rng.random(shape) < draw(st.sampled_from([0.0, 0.1, 1.0]))] = ignore_index
    return labels, background, ignore_index


@given(
    instance_images(),
    st.floats(0.0, 50.0),
    st.floats(0.3, 8.0),
    st.sampled_from(["balanced", {0: 1.0, 1: 1.0}, {0: 0.5, 1: 3.0}]),
)
def test_matches_brute_force(sample, w0, sigma, class_weights):
    labels, background, ignore_index = sample
    before = labels.copy()
    kwargs = dict(
        w0=w0,
        sigma=sigma,
        class_weights=class_weights,
        background=background,
        ignore_index=ignore_index,
    )
    out = unet_weight_map(labels, **kwargs)
    expected = reference_weight_map(labels, **kwargs)
    assert out.dtype == np.float32 and out.shape == labels.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(labels, before)
    tensor_out = unet_weight_map(torch.from_numpy(labels), **kwargs)
    assert tensor_out.dtype == torch.float32 and type(tensor_out) is torch.Tensor
    np.testing.assert_array_equal(tensor_out.numpy(), out)


def test_paper_example_by_hand():
    # two cells two pixels apart: the gap pixels are 1 from one cell and 2 from the other
    cells = np.array([[1, 0, 0, 2]])
    out = unet_weight_map(cells, w0=10.0, sigma=5.0, class_weights={0: 1.0, 1: 2.0})
    border = 10.0 * np.exp(-((1 + 2) ** 2) / (2 * 25.0))
    np.testing.assert_allclose(out, [[2.0, 1.0 + border, 1.0 + border, 2.0]], rtol=1e-6)


def test_balanced_classes_carry_equal_weight_and_ignored_pixels_none():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (23, 17))
    labels[:3] = 9
    out = unet_weight_map(labels, w0=0.0, class_weights="balanced", ignore_index=9)
    assert np.all(out[:3] == 0)
    background, foreground = out[labels == 0].sum(), out[(labels != 0) & (labels != 9)].sum()
    np.testing.assert_allclose([background, foreground], [20 * 17 / 2] * 2, rtol=1e-5)


def test_one_class_and_fewer_than_two_instances():
    # one instance: no border term; only background: every pixel weighs N / (1 * N) = 1
    one = np.zeros((5, 6), np.int32)
    one[1:3, 1:3] = 4
    out = unet_weight_map(one, w0=10.0, sigma=1.0, class_weights={0: 1.0, 1: 2.0})
    np.testing.assert_array_equal(out, np.where(one > 0, 2.0, 1.0))
    np.testing.assert_array_equal(unet_weight_map(np.zeros((3, 4), np.uint8)), np.ones((3, 4)))
    everything_ignored = unet_weight_map(np.full((2, 3), 5), ignore_index=5)
    np.testing.assert_array_equal(everything_ignored, np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (np.int64, [10**12, -(10**15), 2**62]),  # sparse: sorted, not counted
        (np.uint64, [2**64 - 1, 2**63 + 5, 1]),  # beyond int64
        (np.int8, [-128, 127, -1]),  # the whole range of a small type
        (np.uint16, [65535, 3, 9]),
    ],
)
@pytest.mark.parametrize("background", [0, 5])
def test_any_label_values_give_the_map_of_their_ranks(dtype, values, background):
    rng = np.random.default_rng(2)
    ranks = rng.integers(0, 4, (21, 15))  # 0: background, 1..3: instances
    ranks[:2] = 4  # ignored
    labels = np.array([background, *values, 7], dtype=dtype)[ranks]
    expected = unet_weight_map(ranks, sigma=2.0, ignore_index=4)
    out = unet_weight_map(labels, sigma=2.0, background=background, ignore_index=7)
    np.testing.assert_array_equal(out, expected)


def test_volume_of_depth_one_equals_the_image():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (19, 13)) * (rng.random((19, 13)) < 0.3)
    np.testing.assert_array_equal(
        unet_weight_map(labels[None], sigma=2.0), unet_weight_map(labels, sigma=2.0)[None]
    )


def test_work_per_instance_is_bounded_to_the_grown_box(monkeypatch):
    seen = []
    edt = scipy.ndimage.distance_transform_edt

    def recording_edt(mask, *args, **kwargs):
        seen.append(mask.shape)
        return edt(mask, *args, **kwargs)

    monkeypatch.setattr(scipy.ndimage, "distance_transform_edt", recording_edt)
    labels = np.zeros((300, 400), np.int64)
    labels[10:13, 20:24] = 1
    labels[200:205, 300:302] = 2
    labels[100:101, 0:1] = 3
    sigma = 1.0
    out = unet_weight_map(labels, sigma=sigma)
    r = _border_margin(sigma)
    assert r == 4
    assert sorted(seen) == sorted(
        [(3 + 2 * r, 4 + 2 * r), (5 + 2 * r, 2 + 2 * r), (1 + 2 * r, 1 + r)]
    )
    # the instances are far apart: what the boxes leave out is below 1e-6 * w0
    expected = reference_weight_map(
        labels, w0=10.0, sigma=sigma, class_weights="balanced", background=0, ignore_index=None
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 2.5, 5.0, 13.0])
def test_margin_leaves_out_at_most_the_tolerance(sigma):
    r = _border_margin(sigma)
    # a missed instance is >= r + 1 away and the nearest >= 1: the term is below 1e-6
    assert np.exp(-((r + 2) ** 2) / (2 * sigma**2)) <= 1e-6
    if r > 0:  # and the margin is the smallest that guarantees it
        assert np.exp(-((r + 1) ** 2) / (2 * sigma**2)) > 1e-6


def test_input_not_modified_and_tensor_kept_on_its_device():
    labels = torch.tensor([[1, 0, 2], [0, 0, 2]], dtype=torch.int16)
    before = labels.clone()
    mask = tv_tensors.Mask(labels)
    out = unet_weight_map(mask, sigma=1.0)
    assert type(out) is torch.Tensor and out.device == labels.device
    assert torch.equal(labels, before)
    np.testing.assert_array_equal(out.numpy(), unet_weight_map(labels.numpy(), sigma=1.0))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"w0": -1.0}, ValueError, r"w0 must be finite and >= 0, got -1.0"),
        ({"w0": float("nan")}, ValueError, r"w0 must be finite and >= 0, got nan"),
        ({"w0": "10"}, TypeError, r"w0 must be a real number, got str"),
        ({"sigma": 0.0}, ValueError, r"sigma must be finite and > 0, got 0.0"),
        ({"sigma": -2}, ValueError, r"sigma must be finite and > 0, got -2"),
        ({"class_weights": "uniform"}, ValueError, r"class_weights must be 'balanced' or"),
        ({"class_weights": [1.0, 2.0]}, TypeError, r"class_weights must be .* got list"),
        ({"class_weights": {1: 2.0}}, ValueError, r"missing the keys 0 \(background\)"),
        ({"class_weights": {}}, ValueError, r"missing the keys 0 \(background\), 1 \(fore"),
        ({"class_weights": {0: 1, 1: 2, 2: 3}}, ValueError, r"unexpected keys \[2\]"),
        ({"class_weights": {0: 1, 1: -2}}, ValueError, r"class_weights\[1\] must be finite"),
        ({"background": 0.0}, TypeError, r"background must be an int label, got float"),
        ({"ignore_index": "x"}, TypeError, r"ignore_index must be None or an int label"),
        ({"ignore_index": 0}, ValueError, r"ignore_index must differ from background, got both 0"),
    ],
)
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        unet_weight_map(np.zeros((3, 3), np.int64), **kwargs)


@pytest.mark.parametrize(
    ("instances", "error", "match"),
    [
        (np.zeros((3, 3)), TypeError, r"instances must have an integer dtype .* got float64"),
        (torch.zeros(3, 3), TypeError, r"instances must have an integer dtype .* got torch.float32"),
        (torch.zeros(3, 3, dtype=torch.bool), TypeError, r"integer dtype .* got torch.bool"),
        ([[0, 1]], TypeError, r"instances must be a torch.Tensor or a numpy.ndarray, got list"),
        (np.zeros(5, np.int64), ValueError, r"instances must be 2-D \(H, W\) or 3-D .* got shape \(5,\)"),
        (np.zeros((1, 2, 3, 4), np.int64), ValueError, r"got shape \(1, 2, 3, 4\)"),
    ],
)  # fmt: skip
def test_instance_errors(instances, error, match):
    with pytest.raises(error, match=match):
        unet_weight_map(instances)


def test_missing_scipy_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    with pytest.raises(ImportError, match=r"pip install scipy"):
        unet_weight_map(np.array([[1, 0, 0]]))


def test_weight_map_is_a_mask_and_keeps_its_type_through_v2():
    weights = WeightMap(torch.rand(17, 11))
    label = tv_tensors.Mask(torch.randint(0, 3, (17, 11)))
    assert isinstance(weights, tv_tensors.Mask)
    flipped_label, flipped = v2.RandomVerticalFlip(p=1.0)(label, weights)
    assert type(flipped) is WeightMap
    assert torch.equal(flipped, weights.flip(-2))
    assert torch.equal(flipped_label, label.flip(-2))


@pytest.mark.parametrize("index", ["random", 0, 3])
def test_weight_map_follows_the_label_through_paired_tile_crop(index):
    geometry = TileGeometry(20, 8)
    image = tv_tensors.Image(torch.rand(1, 17, 11))
    labels = torch.randint(0, 5, (17, 11))
    label = tv_tensors.Mask(labels)
    weights = WeightMap(unet_weight_map(labels, sigma=2.0))
    crop = PairedTileCrop(geometry, index=index, mask_fill=None)
    torch.manual_seed(3)
    params = crop.make_params([image, label, weights])
    torch.manual_seed(3)
    out_image, out_label, out_weights = crop(image, label, weights)
    assert type(out_weights) is WeightMap and out_weights.dtype == torch.float32
    assert out_weights.shape == out_label.shape == (8, 8)
    (tile,) = params["tiles"]
    # mirrored like the label, in the label's output window (the oracle: crop_tile)
    expected = crop_tile(weights.as_subclass(torch.Tensor), tile.output_box, "reflect")
    assert torch.equal(out_weights.as_subclass(torch.Tensor), expected)
    assert torch.equal(out_label.as_subclass(torch.Tensor), crop_tile(labels, tile.output_box))
    assert out_image.shape[-2:] == (20, 20)
    if index != "random":
        assert tile == TileGrid((17, 11), geometry)[index]
        # both tiles reach outside the image: the weights there are mirrored
        assert any(a < 0 or b > n for (a, b), n in zip(tile.output_box, (17, 11)))


def test_weight_map_in_a_sample_dict_of_a_pipeline():
    # types, dtypes, no in-place change and a pickled transform, via the shared checker
    label = make_mask()
    sample = {"image": make_image(), "label": label, "weights": WeightMap(label.float())}
    crop = v2.Compose([PairedTileCrop(TileGeometry(20, 8)), v2.RandomHorizontalFlip()])
    out = check_transform(crop, sample)
    assert torch.equal(out["weights"].as_subclass(torch.Tensor), out["label"].float())
