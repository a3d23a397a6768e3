"""Elastic deformation inside the crop: Deformation, deform_tile and the crops' deform=."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from unet_transforms import OverlapTileCrop, PairedTileCrop, TileGeometry, WeightMap, from_config
from unet_transforms.deformation import Deformation
from unet_transforms.functional import _deform, deform_tile, deformation_coords, mirror_pad
from unet_transforms.functional._deform import (
    FactoredField,
    cubic_matrix,
    factored_field,
    plan_resample,
    resample,
)

from common import DTYPES, check_transform, make_keypoints, make_pil, make_tensor

GEOMETRY_2D = TileGeometry(36, 20)
GEOMETRY_3D = TileGeometry((14, 14, 14), (8, 8, 8))


def position_coded(size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose channel k holds each pixel's coordinate along axis k, and a label
    holding each pixel's linear index."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in size], indexing="ij")
    return torch.stack(axes), torch.arange(math.prod(size)).reshape(size)


def decode(label: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    coords, rest = [], label
    for k in range(len(size)):
        stride = math.prod(size[k + 1 :])
        coords.append(rest // stride)
        rest = rest % stride
    return torch.stack(coords).to(torch.float32)


def dense_field(params: dict, i: int = 0) -> torch.Tensor:
    """The dense ``(ndim, *input_size)`` coordinates of tile ``i``'s field (2-D fields are
    kept factored)."""
    field = params["fields"][i]
    return field.dense() if isinstance(field, FactoredField) else field


def reflect(s: torch.Tensor, n: int) -> torch.Tensor:
    """Continuous reflect-mirroring of coordinates onto [0, n - 1]."""
    if n == 1:
        return torch.zeros_like(s)
    m = torch.remainder(s, 2 * (n - 1))
    return torch.where(m <= n - 1, m, 2 * (n - 1) - m)


# --------------------------------------------------------------------- zero deformation
@settings(max_examples=25)
@given(
    dtype=st.sampled_from(DTYPES),
    ndim=st.sampled_from([2, 3]),
    size=st.lists(st.integers(1, 30), min_size=3, max_size=3),
    flip=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_zero_deformation_equals_plain_crop(dtype, ndim, size, flip, seed):
    geometry = GEOMETRY_2D if ndim == 2 else GEOMETRY_3D
    spatial = tuple(size[:ndim])
    image = make_tensor((2, *spatial), dtype)
    mask = make_tensor(spatial, dtype, seed=1)  # the label of (image, target)
    if ndim == 2:
        mask = tv_tensors.Mask(mask)
    deform = Deformation(sigma=0.0, flip=flip)
    for crop, plain in [
        (
            PairedTileCrop(geometry, deform=deform, mask_fill=1),
            PairedTileCrop(geometry, mask_fill=1),
        ),
        (
            OverlapTileCrop(geometry, deform=deform, mode="symmetric"),
            OverlapTileCrop(geometry, mode="symmetric"),
        ),
    ]:
        torch.manual_seed(seed)
        params = crop.make_params([image, mask])
        torch.manual_seed(seed)
        got = crop(image, mask)
        torch.manual_seed(seed)
        want = plain(image, mask)
        # flips come after the window draw: undo them on the expected crop
        flips = [d for d in range(ndim) if dense_field(params)[(slice(None), *(0,) * ndim)][d] > 0]
        for g, w, lead in zip(got, want, (1, 0), strict=True):
            assert g.dtype == w.dtype == dtype
            assert type(g) is type(w)
            assert torch.equal(g, w.flip([lead + d for d in flips]) if flips else w)
        if not flip:
            assert not flips


@pytest.mark.parametrize("mask_fill", [None, 255])
def test_zero_deformation_weight_map_equals_plain_crop(mask_fill):
    # a plan's "nearest" (integer coordinates) was turned back into bilinear for weight
    # maps, whose float grid_sample then rounded them (8.6e-5 on a 572 px tile)
    geometry = TileGeometry(92, 60)
    image = torch.rand(1, 100, 130)
    label = tv_tensors.Mask(torch.randint(0, 3, (100, 130)))
    weights = WeightMap(torch.rand(100, 130) * 10)
    crop = PairedTileCrop(geometry, deform=Deformation(sigma=0.0), mask_fill=mask_fill)
    plain = PairedTileCrop(geometry, mask_fill=mask_fill)
    for seed in range(4):
        torch.manual_seed(seed)
        got = crop(image, label, weights)
        torch.manual_seed(seed)
        want = plain(image, label, weights)
        for g, w in zip(got, want, strict=True):
            assert type(g) is type(w) and torch.equal(g, w)
    whole = OverlapTileCrop(geometry, index=0, deform=Deformation(sigma=0.0))(weights)
    assert torch.equal(whole, OverlapTileCrop(geometry, index=0)(weights))


def test_zero_deformation_pil_equals_plain_crop():
    for mode in ("RGB", "P"):
        image = make_pil((23, 17), mode)
        torch.manual_seed(3)
        got = PairedTileCrop(GEOMETRY_2D, deform=Deformation(sigma=0.0))(image)
        torch.manual_seed(3)
        want = PairedTileCrop(GEOMETRY_2D)(image)
        assert isinstance(got, PIL.Image.Image) and got.mode == mode
        assert np.array_equal(np.asarray(got), np.asarray(want))
        assert got.getpalette() == want.getpalette()


# --------------------------------------------------------------------- alignment
@settings(max_examples=20)
@given(
    ndim=st.sampled_from([2, 3]),
    size=st.lists(st.integers(5, 45), min_size=3, max_size=3),
    sigma=st.floats(0.5, 12.0),
    rotation=st.floats(0.0, 40.0),
    flip=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_label_follows_image_under_deformation(ndim, size, sigma, rotation, flip, seed):
    geometry = GEOMETRY_2D if ndim == 2 else GEOMETRY_3D
    spatial = tuple(size[:ndim])
    image, label = position_coded(spatial)
    crop = PairedTileCrop(
        geometry,
        deform=Deformation(sigma=sigma, rotation=rotation, scale=(0.8, 1.25), flip=flip),
    )
    torch.manual_seed(seed)
    params = crop.make_params([image, label])
    torch.manual_seed(seed)
    tile, label_tile = crop(image, label)
    assert type(label_tile) is tv_tensors.Mask and label_tile.dtype == torch.int64
    assert tuple(tile.shape) == (ndim, *geometry.input_size)
    assert tuple(label_tile.shape) == geometry.output_size
    # oracle: each image pixel holds the reflect-mirrored source coordinate it reads
    tile_origin = [a for a, _ in params["tiles"][0].input_box]
    source = dense_field(params)
    for k in range(ndim):
        expected = reflect(source[k] + tile_origin[k], spatial[k])
        assert torch.allclose(tile[k], expected, atol=2e-3)
    # the label is the centre of the image's coordinates, nearest-rounded
    centre = tuple(slice(m, m + o) for m, o in zip(geometry.margin, geometry.output_size))
    coords = decode(label_tile.as_subclass(torch.Tensor), spatial)
    assert (coords - tile[(slice(None), *centre)]).abs().max() <= 0.5 + 2e-3


def test_dense_oracle_pad_then_grid_sample():
    """Reading only the reached region equals sampling the whole padded image."""
    image = make_tensor((3, 40, 31))
    crop = OverlapTileCrop(GEOMETRY_2D, deform=Deformation(sigma=8.0, rotation=30.0))
    for seed in range(5):
        torch.manual_seed(seed)
        params = crop.make_params([image])
        torch.manual_seed(seed)
        out = crop(image)
        pad = 120
        padded = mirror_pad(image, ((pad, pad), (pad, pad)))
        origin = torch.tensor([a + pad for a, _ in params["tiles"][0].input_box])
        coords = dense_field(params).double().permute(1, 2, 0) + origin
        n = torch.tensor(padded.shape[-2:], dtype=torch.float64)
        grid = (coords * 2 / (n - 1) - 1).flip(-1)
        want = F.grid_sample(padded.double()[None], grid[None], align_corners=True)[0]
        assert torch.allclose(out.double(), want, atol=1e-4)


# --------------------------------------------------------------------- borders
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("mode", ["reflect", "symmetric"])
def test_no_constant_border_at_large_displacement(interpolation, mode):
    image = 1 + torch.rand(1, 13, 9)  # no zeros anywhere
    label = torch.randint(0, 3, (13, 9))
    crop = PairedTileCrop(
        GEOMETRY_2D,
        mode=mode,
        deform=Deformation(
            sigma=60.0, rotation=90.0, scale=(0.5, 2.0), interpolation=interpolation
        ),
    )
    for seed in range(6):
        torch.manual_seed(seed)
        tile, label_tile = crop(image, label)
        assert tile.min() > 0.5  # no zero or constant border ever
        for edge in (tile[0, 0], tile[0, -1], tile[0, :, 0], tile[0, :, -1]):
            assert edge.std() > 0
        assert set(label_tile.unique().tolist()) <= {0, 1, 2}


def test_labels_outside_get_mask_fill():
    image, label = torch.rand(1, 24, 24), torch.randint(0, 3, (24, 24))
    crop = PairedTileCrop(GEOMETRY_2D, mask_fill=255, index=0, deform=Deformation(sigma=8.0))
    plain = PairedTileCrop(GEOMETRY_2D, mask_fill=255, index=0)
    outside = (plain(image, label)[1] == 255).float().mean().item()
    assert 0 < outside < 1  # the tile reaches outside the image
    for seed in range(4):
        torch.manual_seed(seed)
        _, label_tile = crop(image, label)
        values = set(label_tile.unique().tolist())
        assert 255 in values and values - {255} and values <= {0, 1, 2, 255}


def test_weight_map_bilinear_mask_nearest():
    image = torch.rand(1, 30, 30)
    mask = tv_tensors.Mask(torch.randint(0, 2, (30, 30)).float())
    weights = WeightMap(mask.as_subclass(torch.Tensor).clone())
    crop = PairedTileCrop(GEOMETRY_2D, deform=Deformation(sigma=5.0, rotation=20.0))
    torch.manual_seed(1)
    _, m, w = crop(image, mask, weights)
    assert type(w) is WeightMap and type(m) is tv_tensors.Mask
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert ((w > 0) & (w < 1)).any()  # interpolated between the classes
    assert torch.equal(w.round(), m) or (w.round() != m).float().mean() < 0.1


@settings(max_examples=40, deadline=None)
@given(
    ndim=st.sampled_from([2, 3]),
    size=st.integers(1, 30),
    sigma=st.floats(0.0, 6.0),
    rotation=st.floats(0.0, 30.0),
    scale=st.floats(0.8, 1.25),
    weight_fill=st.sampled_from([255, 0.0]),
    seed=st.integers(0, 2**16),
)
def test_weight_map_fill_exactly_where_the_label_is_filled(
    ndim, size, sigma, rotation, scale, weight_fill, seed
):
    # bilinear weight maps were blended with their fill next to the image's border:
    # a valid pixel (label 1) got a weight of up to 255 from mask_fill=255
    spatial = (size,) * ndim
    geometry = TileGeometry(12, 6) if ndim == 2 else TileGeometry(8, 4)
    deform = Deformation(sigma=sigma, rotation=rotation, scale=(scale, scale), grid=3)
    fills = {tv_tensors.Mask: 255, WeightMap: weight_fill}
    crop = PairedTileCrop(geometry, mask_fill=fills, deform=deform)
    mirrored = PairedTileCrop(geometry, deform=deform)
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, *spatial, generator=generator)
    label = tv_tensors.Mask(torch.ones(spatial, dtype=torch.long))
    weights = WeightMap(1 + torch.rand(spatial, generator=generator))
    torch.manual_seed(seed)
    _, target, w = crop(image, label, weights)
    torch.manual_seed(seed)
    _, _, w_mirrored = mirrored(image, label, weights)
    filled = target == 255
    assert type(w) is WeightMap
    assert torch.equal(w[filled], torch.full_like(w[filled], weight_fill))
    valid = w[~filled]
    assert bool(((valid >= 1) & (valid <= 2)).all())  # never blended with the fill
    assert torch.equal(valid, w_mirrored[~filled])


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_under_deformation(dtype):
    image = make_tensor((2, 25, 19), dtype)
    mask = tv_tensors.Mask(make_tensor((25, 19), dtype, seed=1))
    crop = PairedTileCrop(GEOMETRY_2D, deform=Deformation(sigma=6.0))
    torch.manual_seed(0)
    tile, label = crop(image, mask)
    assert tile.dtype == label.dtype == dtype
    assert set(label.unique().tolist()) <= set(mask.unique().tolist())
    # bilinear stays within the image's range; integers are rounded from the float result
    assert tile.min() >= image.min() and tile.max() <= image.max()
    torch.manual_seed(0)
    as_float, _ = crop(image.float(), mask)
    if dtype.is_floating_point:
        assert torch.allclose(tile.float(), as_float, atol=1e-2, rtol=1e-2)
    else:
        assert torch.equal(tile, as_float.round().to(dtype))


def test_bicubic_overshoot_is_clamped_not_wrapped():
    image = torch.zeros(1, 25, 19, dtype=torch.uint8)
    image[..., 9:] = 255  # a step edge: bicubic overshoots on both sides of it
    crop = OverlapTileCrop(GEOMETRY_2D, deform=Deformation(sigma=6.0, interpolation="bicubic"))
    torch.manual_seed(0)
    tile = crop(image)
    torch.manual_seed(0)
    as_float = crop(image.float())
    assert as_float.min() < -1 and as_float.max() > 256  # bicubic overshoots
    assert torch.equal(tile, as_float.round().clamp(0, 255).to(torch.uint8))


def test_pil_deformed():
    for mode in ("RGB", "P", "L"):
        image = make_pil((23, 17), mode if mode != "L" else "P").convert(mode)
        torch.manual_seed(0)
        out = OverlapTileCrop(GEOMETRY_2D, deform=Deformation(sigma=5.0))(image)
        assert isinstance(out, PIL.Image.Image) and out.mode == mode and out.size == (36, 36)
        if mode == "P":
            assert out.getpalette() == image.getpalette()
            assert set(np.unique(np.asarray(out))) <= set(np.unique(np.asarray(image)))
    bits = PIL.Image.fromarray(np.random.default_rng(0).random((20, 23)) > 0.5)
    torch.manual_seed(0)
    out = OverlapTileCrop(GEOMETRY_2D, deform=Deformation(sigma=5.0))(bits)
    assert out.mode == "1" and np.asarray(out).dtype == np.bool_ and np.asarray(out).any()


def test_all_tiles_each_deformed_and_stacked():
    image = torch.rand(1, 50, 41)
    crop = OverlapTileCrop(GEOMETRY_2D, index="all", deform=Deformation(sigma=3.0))
    torch.manual_seed(0)
    params = crop.make_params([image])
    torch.manual_seed(0)
    out = crop(image)
    assert out.shape[0] == len(params["tiles"]) == len(params["fields"]) > 1
    assert not torch.equal(dense_field(params, 0), dense_field(params, 1))


def test_check_transform_and_pickling():
    crop = PairedTileCrop(GEOMETRY_2D, mask_fill=255, deform=Deformation(sigma=4.0, flip=True))
    sample = {
        "image": tv_tensors.Image(torch.rand(3, 30, 22)),
        "mask": tv_tensors.Mask(torch.zeros(30, 22, dtype=torch.long)),
        "name": "x",
    }
    check_transform(crop, sample)
    clone = pickle.loads(pickle.dumps(crop))
    assert repr(clone) == repr(crop)


# --------------------------------------------------------------------- config
def test_to_config_round_trip_equal_outputs():
    deform = Deformation(grid=[3, 4], sigma=7.0, rotation=10.0, scale=[0.9, 1.1], flip=True)
    crop = PairedTileCrop(GEOMETRY_2D, mask_fill=255, deform=deform)
    image, label = torch.rand(1, 40, 33), torch.randint(0, 3, (40, 33))
    for obj in (deform, crop):
        rebuilt = from_config(json.loads(json.dumps(obj.to_config())), allow=[Deformation])
        assert rebuilt.to_config() == obj.to_config()
        torch.manual_seed(5)
        a = obj.sample((20, 17)) if obj is deform else obj(image, label)
        torch.manual_seed(5)
        b = rebuilt.sample((20, 17)) if obj is deform else rebuilt(image, label)
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(x, y)
    assert deform.grid == (3, 4) and deform.scale == (0.9, 1.1)
    assert Deformation(grid=3.0).grid == 3  # YAML/JSON integral floats


# --------------------------------------------------------------------- sampling
def test_displacement_statistics_and_draws():
    torch.manual_seed(0)
    base = deformation_coords((3, 3))
    d = Deformation(sigma=10.0)
    samples = torch.stack([d.sample((3, 3)) - base for _ in range(400)])
    assert 9.0 < samples.std().item() < 11.0  # the grid points carry the drawn displacement
    assert abs(samples.mean().item()) < 1.0
    # rotation: angles within +-rotation, both signs
    rot = Deformation(sigma=0.0, rotation=30.0)
    angles = []
    for _ in range(100):
        c = rot.sample((21, 21))
        v = c[:, 10, 20] - c[:, 10, 10]  # where the pixel right of centre reads
        angles.append(math.degrees(math.atan2(v[0].item(), v[1].item())))
    assert max(abs(a) for a in angles) <= 30.0 + 1e-3
    assert min(angles) < -15 and max(angles) > 15
    # scale: the drawn zoom
    zoom = Deformation(sigma=0.0, scale=(0.5, 2.0))
    reads = [(zoom.sample((11, 11))[1, 5, 10] - 5).item() for _ in range(100)]
    assert min(reads) >= 5 / 2.0 - 1e-4 and max(reads) <= 5 / 0.5 + 1e-4
    # nothing random, nothing drawn
    state = torch.get_rng_state()
    Deformation(sigma=0.0).sample((4, 4))
    assert torch.equal(state, torch.get_rng_state())


def test_cubic_matrix_matches_interpolate():
    coarse = torch.randn(1, 2, 3, 4)
    want = F.interpolate(coarse, size=(17, 9), mode="bicubic", align_corners=True)[0]
    got = torch.einsum("ia,jb,kab->kij", cubic_matrix(3, 17), cubic_matrix(4, 9), coarse[0])
    assert torch.allclose(got, want, atol=1e-5)
    coords = deformation_coords((17, 9), displacement=coarse[0])
    assert torch.allclose(coords - deformation_coords((17, 9)), want, atol=1e-5)


def test_3d_deformation_runs_trilinear():
    image, label = torch.rand(1, 9, 11, 10), torch.randint(0, 4, (9, 11, 10))
    crop = PairedTileCrop(GEOMETRY_3D, deform=Deformation(sigma=2.0, rotation=15.0, flip=True))
    torch.manual_seed(0)
    tile, lab = crop(image, label)
    assert tuple(tile.shape) == (1, 14, 14, 14) and tuple(lab.shape) == (8, 8, 8)
    assert set(lab.unique().tolist()) <= set(range(4))


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"grid": 0}, ValueError, "grid must be >= 1"),
        ({"grid": 2.5}, ValueError, "grid must be an integer"),
        ({"grid": "3"}, TypeError, "grid must be an int"),
        ({"grid": (3, 3, 3, 3)}, ValueError, "grid must be an int or 2 or 3 ints"),
        ({"sigma": -1.0}, ValueError, "sigma must be finite and >= 0, got -1.0"),
        ({"sigma": "10"}, TypeError, "sigma must be a number, got str"),
        ({"rotation": float("nan")}, ValueError, "rotation must be finite"),
        ({"scale": 1.0}, TypeError, r"scale must be a \(low, high\) pair"),
        ({"scale": (2.0, 1.0)}, ValueError, "scale must be a range 0 < low <= high"),
        ({"scale": (0.0, 1.0)}, ValueError, "scale must be a range"),
        ({"flip": 1}, TypeError, "flip must be a bool, got int"),
        (
            {"interpolation": "nearest"},
            ValueError,
            "interpolation must be 'bilinear' or 'bicubic'",
        ),
    ],
)
def test_deformation_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        Deformation(**kwargs)


def test_crop_errors_name_the_argument():
    with pytest.raises(
        TypeError, match=r"deform must be a unet_transforms\.Deformation or None, got dict"
    ):
        PairedTileCrop(GEOMETRY_2D, deform={"sigma": 1.0})
    with pytest.raises(ValueError, match=r"deform\.interpolation must be 'bilinear' for a 3-D"):
        OverlapTileCrop(GEOMETRY_3D, deform=Deformation(interpolation="bicubic"))
    with pytest.raises(ValueError, match=r"deform\.grid must have 3 entries"):
        PairedTileCrop(GEOMETRY_3D, deform=Deformation(grid=(3, 3)))
    crop = OverlapTileCrop(GEOMETRY_2D, deform=Deformation())
    image = tv_tensors.Image(torch.rand(3, 17, 11))
    for extra in (
        make_keypoints(),
        tv_tensors.BoundingBoxes(
            torch.tensor([[0, 0, 2, 2]]), format="XYXY", canvas_size=(17, 11)
        ),
    ):
        with pytest.raises(
            TypeError, match=r"deform=\.\.\.\) cannot move (KeyPoints|BoundingBoxes)"
        ):
            crop(image, extra)
    with pytest.raises(TypeError, match="cannot deform KeyPoints"):
        deform_tile(make_keypoints(), deformation_coords((2, 2)), (0, 0))


def test_functional_errors():
    with pytest.raises(ValueError, match="size must be 2 or 3 ints >= 1"):
        deformation_coords((0, 3))
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        deformation_coords((3, 3), scale=0.0)
    with pytest.raises(ValueError, match="angles must hold at most 1"):
        deformation_coords((3, 3), angles=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"displacement must have shape \(ndim, \*grid\)"):
        deformation_coords((3, 3), displacement=torch.zeros(3, 3, 3))
    with pytest.raises(TypeError, match="coords must be a floating-point tensor"):
        plan_resample(torch.zeros(2, 2, 2, dtype=torch.long), (0, 0))
    with pytest.raises(ValueError, match="origin must hold 2 ints"):
        plan_resample(torch.zeros(2, 2, 2), (0,))
    with pytest.raises(ValueError, match="coords must be finite"):
        plan_resample(torch.full((2, 2, 2), float("nan")), (0, 0))
    with pytest.raises(
        ValueError, match="interpolation must be 'nearest', 'bilinear' or 'bicubic'"
    ):
        deform_tile(torch.rand(4, 4), deformation_coords((2, 2)), (0, 0), interpolation="area")
    with pytest.raises(ValueError, match="coords must lie inside the source region"):
        resample(torch.rand(4, 4), deformation_coords((2, 2)) + 3, "bilinear")
    with pytest.raises(ValueError, match="interpolation='bicubic' is 2-D only"):
        resample(torch.rand(4, 4, 4), deformation_coords((2, 2, 2)) + 0.5, "bicubic")
    with pytest.raises(ValueError, match="coords must be finite"):
        resample(torch.rand(4, 4), torch.full((2, 2, 2), float("inf")), "nearest")
    coords = deformation_coords((2, 2)) + 0.5
    plan = plan_resample(coords, (0, 0))
    with pytest.raises(ValueError, match=r"region of size \(5, 5\) is not the plan's box"):
        resample(torch.rand(5, 5), coords, plan)
    assert torch.equal(
        resample(torch.arange(9.0).reshape(3, 3), coords, plan),
        torch.tensor([[2.0, 3.0], [5.0, 6.0]]),
    )
    with pytest.raises(TypeError, match="resample supports tensors"):
        resample([1, 2], deformation_coords((2, 2)), "bilinear")


# --------------------------------------------------------------------- factored fast path
@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(1, 140), st.integers(1, 140)),
    grid=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    sigma=st.sampled_from([0.0, 0.3, 4.0, 10.0, 40.0]),
    rotation=st.floats(0.0, 180.0),
    scale=st.floats(0.5, 2.0),
    flip=st.booleans(),
    window=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_field_bounds_contain_every_coordinate(
    size, grid, sigma, rotation, scale, flip, window, seed
):
    deform = Deformation(
        grid=grid, sigma=sigma, rotation=rotation, scale=(scale, scale * 1.1), flip=flip
    )
    torch.manual_seed(seed)
    field = factored_field(size, **deform.make_params(2))
    torch.manual_seed(seed)
    dense = deform.sample(size)
    assert isinstance(field, FactoredField) and torch.equal(field.dense(), dense)
    # the whole field (the images' window) and any window in it (e.g. the labels')
    cuts = [
        sorted(int(w * (n + 1)) for w in pair) for pair, n in zip((window[:2], window[2:]), size)
    ]
    rows, cols = (
        slice(a, max(b, a + 1)) if a < n else slice(n - 1, n) for (a, b), n in zip(cuts, size)
    )
    whole = _deform.field_bounds(field, slice(None), slice(None))
    for r, c in [(slice(None), slice(None)), (rows, cols)]:
        bounds = _deform.field_bounds(field, r, c)
        part = dense[:, r, c]
        if bounds is None:  # sampled integers, only without a displacement: dense path
            assert sigma == 0
            continue
        low, high = bounds
        for k in range(2):
            assert low[k] <= part[k].min().item() and part[k].max().item() <= high[k]
            if r == slice(None):  # tight: within a pixel
                assert high[k] - part[k].max().item() < 1.0
                assert part[k].min().item() - low[k] < 1.0
            else:  # a window's bound is never looser than the whole field's
                assert whole[0][k] <= low[k] and high[k] <= whole[1][k]


def reference_crop(crop, params, inputs):
    """The crop's outputs computed from the dense field: plan_resample, crop_tile, resample."""
    field = dense_field(params)
    tile = params["tiles"][0]
    origin = [a for a, _ in tile.input_box]
    outs = []
    for inpt in inputs:
        is_label = isinstance(inpt, tv_tensors.Mask)
        box, fill = crop.window(tile, inpt)
        part = field[(slice(None), *(slice(a - o, b - o) for (a, b), o in zip(box, origin)))]
        interpolation = _deform.interpolation_for(inpt, crop.deform.interpolation)
        plan = plan_resample(part, origin, interpolation)
        if fill is None or plan.interpolation == "nearest":
            outs.append(resample(crop.crop(inpt, plan.box, fill), part, plan))
        else:  # a weight map: the mirrored map, and the fill where a label's fill goes
            mirrored = resample(crop.crop(inpt, plan.box, None), part, plan)
            nearest = plan_resample(part, origin, "nearest")
            ones = torch.ones(inpt.shape[-2:], dtype=torch.uint8)
            inside = resample(crop.crop(ones, nearest.box, 0), part, nearest)
            outs.append(WeightMap(mirrored.masked_fill(inside == 0, fill)))
        assert is_label == (type(inpt) is not tv_tensors.Image)
    return outs


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.float64, torch.int32])
@pytest.mark.parametrize("mask_fill", [None, 255])
def test_factored_path_equals_dense_path(dtype, mask_fill):
    """Inside the image and across its borders, images, masks and weight maps of the fast
    path equal the dense field's plan_resample / crop_tile / resample."""
    n = 150
    image = tv_tensors.Image((torch.rand(2, n, n) * 100).to(dtype))
    mask = tv_tensors.Mask(torch.arange(n * n).reshape(n, n) % 1000)
    weights = WeightMap(torch.rand(n, n))
    geometry = TileGeometry(60, 40)
    for deform in (
        Deformation(sigma=6.0),
        Deformation(sigma=3.0, rotation=180.0, scale=(0.8, 1.25), flip=True),
        Deformation(sigma=4.0, interpolation="bicubic"),
    ):
        crop = PairedTileCrop(geometry, deform=deform, mask_fill=mask_fill)
        inside = outside = 0
        for seed in range(12):
            torch.manual_seed(seed)
            params = crop.make_params([image, mask, weights])
            got = [crop.transform(x, params) for x in (image, mask, weights)]
            want = reference_crop(crop, params, [image, mask, weights])
            for g, w in zip(got, want, strict=True):
                assert type(g) is type(w) and g.dtype == w.dtype and g.shape == w.shape
            atol = 1.0 if not dtype.is_floating_point else 0.02  # of 100: 2e-4 pixel
            assert (got[0].double() - want[0].double()).abs().max() <= atol
            assert torch.equal(got[1], want[1])
            assert (got[2] - want[2]).abs().max() <= 1e-4
            box = params["tiles"][0].input_box
            if all(a >= 8 and b <= n - 8 for a, b in box):
                inside += 1
            else:
                outside += 1
        assert inside and outside  # both the direct reads and the mirrored crops


def test_factored_path_reads_strided_labels_and_checks_the_fill():
    image = torch.rand(1, 200, 200)
    label = torch.randint(0, 5, (200, 200)).T  # not contiguous: read through the crop
    crop = PairedTileCrop(TileGeometry(60, 40), index=8, deform=Deformation(sigma=5.0))
    torch.manual_seed(0)
    params = crop.make_params([image, tv_tensors.Mask(label)])
    got = crop.transform(tv_tensors.Mask(label), params)
    want = reference_crop(crop, params, [tv_tensors.Mask(label)])[0]
    assert torch.equal(got, want)
    # a mask_fill the label cannot hold is refused even where the window lies inside
    strict = PairedTileCrop(TileGeometry(60, 40), index=8, mask_fill=-1, deform=Deformation())
    with pytest.raises(ValueError, match=r"^mask_fill=-1 does not fit"):
        strict(image, tv_tensors.Mask(label.to(torch.uint8)))


def test_gather_nearest_wide_indices():
    """int64 linear indices when int32 cannot hold them: the same values."""
    field = factored_field((20, 30), **Deformation(sigma=5.0).make_params(2))
    src = torch.arange(60 * 70).reshape(60, 70)
    window = (slice(2, 18), slice(3, 25))
    narrow = _deform._gather_nearest(src, field, *window, (-20, -20), 100)
    wide = _deform._gather_nearest(src, field, *window, (-20, -20), 2**31)
    coords = field.dense()[:, 2:18, 3:25].round().long() + 20
    assert torch.equal(narrow, wide) and torch.equal(narrow, src[coords[0], coords[1]])


def test_factored_path_samples_a_copied_region(monkeypatch):
    """grid_sample reads a contiguous copy of the source box, never a strided view of the
    image (twice as slow), whatever the image's dtype."""
    seen = []
    grid_sample = F.grid_sample

    def spy(src, grid, **kwargs):
        seen.append((src.is_contiguous(), grid.is_contiguous()))
        return grid_sample(src, grid, **kwargs)

    monkeypatch.setattr(F, "grid_sample", spy)
    crop = OverlapTileCrop(GEOMETRY_2D, index=112, deform=Deformation(sigma=3.0))
    for dtype in (torch.float32, torch.uint8):
        image = torch.rand(1, 300, 300).mul(100).to(dtype)
        torch.manual_seed(0)
        params = crop.make_params([image])
        assert all(a > 40 and b < 260 for a, b in params["tiles"][0].input_box)  # inside
        torch.manual_seed(0)
        crop(image)
    assert seen == [(True, True)] * 2


@pytest.mark.parametrize("ndim", [2, 3])
def test_make_params_are_what_sample_draws(ndim):
    deform = Deformation(sigma=3.0, rotation=20.0, scale=(0.9, 1.2), flip=True)
    size = (7, 9) if ndim == 2 else (4, 5, 6)
    torch.manual_seed(3)
    params = deform.make_params(ndim)
    torch.manual_seed(3)
    assert torch.equal(deformation_coords(size, **params), deform.sample(size))
    assert params["displacement"].shape == (ndim, 3, 3) + (3,) * (ndim - 2)
    assert len(params["angles"]) == (1 if ndim == 2 else 3) and len(params["flips"]) == ndim
    assert 0.9 <= params["scale"] <= 1.2


@pytest.mark.parametrize("default", [torch.float64, torch.bfloat16])
def test_make_params_do_not_depend_on_the_default_dtype(default):
    # the same draws for a seed, in float32: a bfloat16 default would round the
    # displacements to 8 bits of mantissa
    deform = Deformation(sigma=3.0, rotation=20.0, flip=True)
    torch.manual_seed(5)
    expected = deform.make_params(2)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        torch.manual_seed(5)
        params = deform.make_params(2)
    finally:
        torch.set_default_dtype(previous)
    assert params["displacement"].dtype == torch.float32
    assert torch.equal(params["displacement"], expected["displacement"])
    assert params["flips"] == expected["flips"] and params["angles"] == expected["angles"]


def test_deformed_crops_whatever_the_default_dtype_was_before():
    # the cached factors of the 2-D field are float32 whatever the default dtype was
    # when they were cached: a float64 default afterwards mixed doubles into the product
    crop = PairedTileCrop(TileGeometry(30, 10), deform=Deformation(sigma=3.0, rotation=10.0))
    image, label = torch.rand(1, 40, 40), torch.randint(0, 3, (40, 40))
    torch.manual_seed(0)
    expected = crop(image, label)
    previous = torch.get_default_dtype()
    for default in (torch.float64, torch.bfloat16):
        torch.set_default_dtype(default)
        try:
            torch.manual_seed(0)
            got = crop(image, label)
            coords = Deformation(sigma=3.0).sample((4, 5))
            coords_3d = Deformation(sigma=3.0).sample((2, 4, 5))
        finally:
            torch.set_default_dtype(previous)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
        assert coords.dtype == coords_3d.dtype == torch.float32


def test_make_params_draw_nothing_for_the_identity():
    state = torch.get_rng_state()
    params = Deformation(sigma=0.0).make_params(2)
    assert torch.equal(torch.get_rng_state(), state)
    assert params == {"displacement": None, "angles": [], "scale": 1.0, "flips": []}


def test_make_params_checks_the_axes():
    with pytest.raises(ValueError, match=r"deform\.grid must have 3 entries"):
        Deformation(grid=(3, 3)).make_params(3)


def test_deforming_a_complex_image_is_a_type_error():
    crop = OverlapTileCrop(TileGeometry(6, 4), index=0, deform=Deformation(sigma=2.0))
    with pytest.raises(TypeError, match="a deformed input must be real"):
        crop(torch.randn(1, 9, 9, dtype=torch.complex64))


def test_flips_are_drawn_with_probability_one_half():
    # Deformation(flip=True) documents "mirror each axis with probability 1/2";
    # no test looked at the drawn frequency.
    torch.manual_seed(0)
    d = Deformation(sigma=0.0, flip=True)
    flips = torch.tensor([d.make_params(2)["flips"] for _ in range(4000)], dtype=torch.float64)
    assert flips.shape == (4000, 2)
    assert ((flips.mean(0) - 0.5).abs() < 0.03).all()  # sd 0.008: about 4 sd


def test_3d_displacement_is_the_separable_bicubic_upsampling():
    # the 3-D field without its displacement (rigid only) went unnoticed: the 2-D
    # field is compared with F.interpolate, the 3-D one only checked for shapes.
    from unet_transforms.functional._deform import cubic_matrix

    torch.manual_seed(0)
    coarse = torch.randn(3, 3, 4, 2)
    size = (7, 9, 5)
    got = deformation_coords(size, displacement=coarse) - deformation_coords(size)
    want = torch.einsum(
        "ia,jb,kc,nabc->nijk",
        cubic_matrix(3, 7),
        cubic_matrix(4, 9),
        cubic_matrix(2, 5),
        coarse,
    )
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got[:, -1, -1, -1], coarse[:, -1, -1, -1], atol=1e-5)  # corners


def test_3d_mask_and_weight_map_are_deformed_with_the_label_field():
    # 3-D Masks and WeightMaps were refused, so a volume's weights could not be deformed
    geometry = TileGeometry((12, 12, 12), (6, 6, 6))
    values = torch.arange(8 * 9 * 10).reshape(8, 9, 10)
    crop = PairedTileCrop(
        geometry,
        index=0,
        mask_fill={tv_tensors.Mask: -1, WeightMap: -2.0},
        deform=Deformation(sigma=3.0, rotation=20.0, flip=True),
    )
    torch.manual_seed(0)
    for _ in range(5):
        image, label, weights = crop(
            tv_tensors.Image(values[None].double()),
            tv_tensors.Mask(values),
            WeightMap(values.double()),
        )
        assert image.shape == (1, 12, 12, 12) and label.shape == weights.shape == (6, 6, 6)
        inside = label != -1
        assert torch.equal(inside, weights != -2.0)  # the same field, the same fill
        # weights are interpolated, labels nearest: the same point of the field
        # within about one voxel of each other: steps of 90, 10 and 1 along D, H and W
        assert (weights[inside] - label[inside].double()).abs().max() < 90 + 10 + 1 + 5
