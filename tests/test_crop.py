"""crop_tile: a window of the unpadded image equals the same window of the padded canvas."""

from __future__ import annotations

import math
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors

from unet_transforms import MirrorExtrapolate, PairedTileCrop, TileGeometry, TileGrid, WeightMap
from unet_transforms.functional import crop_tile

from common import DTYPES, make_image, make_tensor


def oracle(x: np.ndarray, box, mode: str = "reflect", fill=None) -> np.ndarray:
    """numpy.pad of the whole array, wide enough, then the window; or fill outside."""
    spatial = x.shape[x.ndim - len(box) :]
    lead = [(0, 0)] * (x.ndim - len(box))
    if fill is not None:
        out = np.full((*x.shape[: x.ndim - len(box)], *(b - a for a, b in box)), fill, x.dtype)
        src = tuple(slice(max(a, 0), min(b, n)) for (a, b), n in zip(box, spatial))
        dst = tuple(slice(max(a, 0) - a, min(b, n) - a) for (a, b), n in zip(box, spatial))
        if all(s.start < s.stop for s in src):
            out[(Ellipsis, *dst)] = x[(Ellipsis, *src)]
        return out
    pads = [(max(0, -a), max(0, b - n)) for (a, b), n in zip(box, spatial)]
    canvas = np.pad(x, lead + pads, mode=mode)
    return canvas[(Ellipsis, *(slice(a + p, b + p) for (a, b), (p, _) in zip(box, pads)))]


def as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


@st.composite
def boxes(draw, spatial):
    box = []
    for n in spatial:
        start = draw(st.integers(-2 * n - 3, 2 * n))
        box.append((start, start + draw(st.integers(1, 3 * n + 3))))
    return tuple(box)


@given(
    st.data(),
    st.lists(st.integers(1, 9), min_size=1, max_size=3),
    st.lists(st.integers(0, 2), max_size=2),
    st.sampled_from(DTYPES),
    st.sampled_from(["reflect", "symmetric"]),
    st.booleans(),
)
def test_equals_pad_then_crop(data, spatial, lead, dtype, mode, use_fill):
    x = make_tensor((*lead, *spatial), dtype)
    box = data.draw(boxes(spatial))
    fill = (1 if dtype == torch.bool else 7) if use_fill else None
    before = x.clone()
    out = crop_tile(x, box, mode, fill)
    assert out.dtype == dtype and out.shape == (*lead, *(b - a for a, b in box))
    np.testing.assert_array_equal(as_numpy(out), oracle(as_numpy(x), box, mode, fill))
    assert torch.equal(x, before)
    if out.numel():  # never a view of the input
        out.view(-1)[0] = not out.view(-1)[0] if dtype == torch.bool else out.view(-1)[0] + 1
        assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", ["<u2", ">u2", ">f4", "<i8", "u1"])
def test_arrays_read_only_the_window_and_come_back_as_tensors(dtype):
    x = np.arange(3 * 7 * 5).reshape(3, 7, 5).astype(dtype)
    x.setflags(write=False)
    for box in (((1, 4), (2, 5)), ((-3, 9), (-2, 8))):
        out = crop_tile(x, box)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_array_equal(out.numpy(), oracle(x.astype(np.int64), box))
    filled = crop_tile(x, ((-1, 2), (0, 2)), fill=1)
    assert filled[0, 0, 0] == 1 and torch.equal(filled[:, 1:], crop_tile(x, ((0, 2), (0, 2))))


PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"]
PIL_MODES += ["LA", "PA", "La", "RGBa", "I;16", "I;16B", "I;16L"]


@pytest.mark.parametrize("mode", PIL_MODES)
def test_pil_images_keep_mode_values_palette_and_info(mode):
    rng = np.random.default_rng(0)
    base = PIL.Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))
    image = base.convert(mode)
    if mode == "P":
        image.info["transparency"] = 3
    raw = np.array(np.asarray(image))
    for box in (((1, 4), (2, 6)), ((-3, 9), (-2, 12))):
        out = crop_tile(image, box)
        assert out.mode == image.mode and out.info == image.info
        assert out.size == (box[1][1] - box[1][0], box[0][1] - box[0][0])
        if mode in ("P", "PA"):
            assert out.getpalette() == image.getpalette()
        # the raw band values: no colour conversion happened
        chw = raw if raw.ndim == 2 else np.moveaxis(raw, -1, 0)
        expected = oracle(chw.astype(np.int64) if raw.dtype != bool else chw, box)
        got = np.asarray(out)
        got = got if got.ndim == 2 else np.moveaxis(got, -1, 0)
        np.testing.assert_array_equal(got.astype(expected.dtype), expected)


@pytest.mark.parametrize(
    ("dtype", "fill", "expected"),
    [
        (torch.uint8, -100, r"an integer in \[0, 255\]"),
        (torch.uint8, 300, r"an integer in \[0, 255\]"),
        (torch.int64, 0.5, "an integer in"),
        (torch.int16, math.nan, "an integer in"),
        (torch.bool, 2, "0 or 1"),
    ],
)
def test_a_fill_the_dtype_cannot_hold_is_refused_everywhere(dtype, fill, expected):
    label = make_tensor((40, 50), dtype)
    match = rf"fill={fill!r} does not fit the input's dtype {dtype}: expected {expected}"
    for box in (((0, 8), (0, 8)), ((-2, 6), (0, 8))):  # inside and outside the image
        with pytest.raises(ValueError, match=match.replace("fill=", "^fill=")):
            crop_tile(label, box, fill=fill)
    with pytest.raises(ValueError, match=r"^fill="):
        TileGrid((40, 50), TileGeometry(12, 8)).extract_output(label, 0, fill=fill)
    if dtype == torch.bool:
        return  # the transforms fill bool labels with False (test_input_rules.py)
    # the transforms name their own argument, wherever the random window falls
    crop = PairedTileCrop(TileGeometry(12, 8), mask_fill=fill)
    for seed in range(5):
        torch.manual_seed(seed)
        with pytest.raises(ValueError, match=match.replace("fill=", "^mask_fill=")):
            crop(make_tensor((3, 40, 50)), label)
    with pytest.raises(ValueError, match=r"^mask_fill="):
        MirrorExtrapolate(2, mask_fill=fill)(make_image((40, 50)), tv_tensors.Mask(label))


@pytest.mark.parametrize(
    ("dtype", "fill"), [(torch.float32, 1e40), (torch.float16, 70000), (torch.float64, 2**2000)]
)
def test_a_fill_beyond_a_float_dtype_is_refused(dtype, fill):
    with pytest.raises(ValueError, match=rf"^fill=.* does not fit the input's dtype {dtype}"):
        crop_tile(torch.zeros(4, 4, dtype=dtype), ((-1, 3), (0, 4)), fill=fill)
    big = crop_tile(torch.zeros(2, 2), ((-1, 1), (0, 1)), fill=2**70)  # fits float32
    assert big[0, 0] == float(2**70)


def test_fills_that_fit():
    assert crop_tile(torch.zeros(2, 2), ((-1, 1), (0, 1)), fill=math.nan).isnan().sum() == 1
    assert (
        crop_tile(torch.zeros(2, 2, dtype=torch.int8), ((-1, 1), (0, 1)), fill=-128.0)[0, 0]
        == -128
    )
    pil = PIL.Image.new("I;16", (4, 3))
    with pytest.raises(ValueError, match=r"fill=-1 does not fit the input's dtype uint16"):
        crop_tile(pil, ((-1, 2), (0, 4)), fill=-1)
    t = PairedTileCrop(TileGeometry(12, 8), mask_fill=np.int64(255))
    assert t.mask_fill == 255 and type(t.mask_fill) is int  # the repr shows the call as given
    with pytest.raises(TypeError, match="fill must be None or a number, got str"):
        crop_tile(torch.zeros(4, 4), ((0, 2), (0, 2)), fill="x")


@pytest.mark.parametrize(
    ("box", "error", "match"),
    [
        (2, TypeError, "box must be a sequence of .* got 2"),
        ((), TypeError, r"box must be a sequence of .* got \(\)"),
        ("ab", TypeError, "box must be a sequence"),
        (
            ((0.0, 2), (0, 2)),
            TypeError,
            r"box must hold \(start, stop\) int pairs, got \(0.0, 2\) for axis 0",
        ),
        (((0, 2), (True, 2)), TypeError, "for axis 1"),
        (((0, 2), (0, 2, 3)), TypeError, "for axis 1"),
        (((2, 2), (0, 2)), ValueError, r"stop > start, got \(2, 2\) on axis 0"),
        (
            ((0, 2),) * 4,
            ValueError,
            r"at least 4 axes \(\.\.\., 4 spatial axes\), got shape \(3, 3\)",
        ),
    ],
)
def test_bad_boxes(box, error, match):
    with pytest.raises(error, match=match):
        crop_tile(torch.zeros(3, 3), box)


def test_bad_inputs():
    with pytest.raises(
        ValueError, match=r"at least 1 axes \(\.\.\., 1 spatial axes\), got shape \(\)"
    ):
        crop_tile(torch.tensor(1.0), ((0, 1),))
    with pytest.raises(ValueError, match="cannot crop from an empty image"):
        crop_tile(torch.zeros(2, 0), ((0, 1), (0, 1)))
    with pytest.raises(
        TypeError, match="inpt must be a tensor, tv_tensor, PIL image or array for crop_tile"
    ):
        crop_tile([[1, 2]], ((0, 1), (0, 1)))
    with pytest.raises(ValueError, match="mode must be 'reflect' or 'symmetric', got 'wrap'"):
        crop_tile(torch.zeros(3, 3), ((0, 1), (0, 1)), "wrap")


def test_2d_tv_tensors_cannot_follow_a_3d_tile():
    geometry = TileGeometry((6, 6, 6), (4, 4, 4))
    with pytest.raises(TypeError, match=r"channel axis .* got shape \(3, 10, 10\)"):
        PairedTileCrop(geometry, index=0)(make_image((10, 10)))  # (C, H, W): a 2-D image
    with pytest.raises(TypeError, match=r"channel axis .* \(a 2-D image\?\)"):
        MirrorExtrapolate([(1, 1)] * 3)(make_image((10, 10)))
    video = tv_tensors.Video(torch.rand(2, 1, 10, 10))
    with pytest.raises(TypeError, match=r"tv_tensors\.Video is 2-D .* cannot follow a 3-D"):
        PairedTileCrop(geometry, index=0)(video)
    volume = PairedTileCrop(geometry, index=0)(torch.rand(3, 10, 10))  # a plain tensor is 3-D
    assert volume.shape == (6, 6, 6)


def test_3d_images_masks_and_weight_maps_are_cropped_aligned():
    # Mask and WeightMap were refused as 2-D in a 3-D tile, so a volume's weight map
    # could not travel with its label (t(image, label) was the only paired call)
    geometry = TileGeometry((9, 9, 9), (5, 5, 3))
    values = torch.arange(6 * 7 * 8).reshape(6, 7, 8)
    crop = PairedTileCrop(geometry, index=1, mask_fill=None)
    for sample in (
        (tv_tensors.Image(values[None].double()), tv_tensors.Mask(values), WeightMap(values)),
        {
            "image": tv_tensors.Image(values[None].double()),
            "label": tv_tensors.Mask(values),
            "w": WeightMap(values.double()),
        },
    ):
        out = list(crop(sample).values()) if isinstance(sample, dict) else crop(*sample)
        image, label, weights = out
        assert type(image) is tv_tensors.Image and image.shape == (1, 9, 9, 9)
        assert type(label) is tv_tensors.Mask and label.shape == (5, 5, 3)
        assert type(weights) is WeightMap and torch.equal(weights.long(), label)
        inner = tuple(slice(m, m + o) for m, o in zip(geometry.margin, geometry.output_size))
        assert torch.equal(image[0][inner].long(), label)  # the centre of the image window
    plain_image, mask = crop(values[None].double(), tv_tensors.Mask(values))
    assert torch.equal(plain_image[0][inner].long(), mask)


def _quietly(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized and nested tensors are deprecated/beta
        return make()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (
            lambda: torch.zeros(4, 4).to_sparse(),
            r"a tensor of layout torch\.sparse_coo \(sparse\)",
        ),
        (lambda: torch.zeros(4, 4).to_sparse_csr(), r"a tensor of layout torch\.sparse_csr"),
        (lambda: torch.zeros(4, 4, device="meta"), r"a meta tensor \(it has no data\)"),
        (
            lambda: torch.quantize_per_tensor(torch.zeros(4, 4), 0.1, 0, torch.quint8),
            r"a quantized tensor \(torch\.quint8\)",
        ),
        (lambda: torch.nested.nested_tensor([torch.zeros(4, 4), torch.zeros(4, 3)]), "a nested"),
        (
            lambda: torch.nested.nested_tensor([torch.zeros(4, 4)] * 2, layout=torch.jagged),
            "a nested",
        ),
    ],
    ids=["sparse", "csr", "meta", "quantized", "nested", "jagged"],
)
def test_tensors_without_dense_data_are_refused(make, kind):
    x = _quietly(make)
    with pytest.raises(
        TypeError,
        match=rf"^inpt must be a dense tensor \(strided, not nested, quantized or on the meta "
        rf"device\), got {kind}",
    ):
        crop_tile(x, ((-1, 3), (0, 4)))


def test_a_nested_tensor_in_a_pair_is_refused_as_not_dense():
    """Reading .shape of a strided nested tensor raises RuntimeError; the pair check
    must not touch it before the dense check."""
    nested = _quietly(lambda: torch.nested.nested_tensor([torch.zeros(4, 4), torch.zeros(4, 3)]))
    geometry = TileGeometry(6, 4)
    image, label = torch.zeros(1, 8, 8), torch.zeros(8, 8, dtype=torch.long)
    calls = [
        lambda: PairedTileCrop(geometry, index=0)(nested, label),
        lambda: PairedTileCrop(geometry, index=0)(image, nested),
        lambda: MirrorExtrapolate(2)(nested, label),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="must be a dense tensor"):
            call()


@pytest.mark.parametrize(
    "box",
    [
        ((0, 2**63), (0, 2)),
        ((-(2**63) - 1, 2), (0, 2)),
        ((0, 2), (np.uint64(2**63), np.uint64(2**63 + 2))),
    ],
)
def test_box_coordinates_beyond_int64_are_refused(box):
    with pytest.raises(ValueError, match=r"box must hold int64 coordinates .* on axis \d"):
        crop_tile(torch.zeros(3, 3), box)


def test_tv_tensor_subclasses_dispatch_along_the_mro():
    class Weights(tv_tensors.Mask):
        pass

    class Points(tv_tensors.TVTensor):
        pass

    weights = Weights(torch.arange(12.0).reshape(3, 4))
    out = crop_tile(weights, ((-1, 3), (0, 4)), fill=-1)
    assert type(out) is Weights
    np.testing.assert_array_equal(out.numpy(), oracle(weights.numpy(), ((-1, 3), (0, 4)), fill=-1))
    # a tv_tensor subclass nobody registered a kernel for is not a plain tensor
    with pytest.raises(TypeError, match=r"crop_tile has no kernel for Points, a tv_tensor"):
        crop_tile(Points(torch.zeros(3, 4)), ((0, 2), (0, 2)))
