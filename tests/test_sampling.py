"""Fair random windows and the label-aware samplers of unet_transforms.sampling."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import warnings

import numpy as np
import PIL.Image
import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors

from unet_transforms import (
    OverlapTileCrop,
    PairedTileCrop,
    TileGeometry,
    TileGrid,
    WeightMap,
    from_config,
    sampling,
)
from unet_transforms.sampling import (
    ForegroundSampler,
    LabelSampler,
    SamplerFallbackWarning,
    WeightedSampler,
    random_window_range,
    random_window_start,
)

from common import check_transform, make_image

SAMPLERS = [LabelSampler, WeightedSampler, ForegroundSampler]
GEOMETRY = TileGeometry(14, 6, step=4)  # margin 4


def coverage_from_ranges(size, output_size):
    """Exact per-pixel coverage counts of uniformly drawn starts over the given ranges."""
    per_axis = []
    for (first, last), n, o in zip(random_window_range(size, output_size), size, output_size):
        counts = np.zeros(n, dtype=np.int64)
        for s in range(first, last + 1):
            counts[max(0, s) : max(0, min(n, s + o))] += 1
        per_axis.append(counts)
    out = per_axis[0]
    for counts in per_axis[1:]:
        out = np.multiply.outer(out, counts)
    return out


def centre_of(start, output_size):
    return tuple(s + o // 2 for s, o in zip(start, output_size))


def chi_square_p(observed, expected_probabilities):
    observed = np.asarray(observed, dtype=float)
    expected = np.asarray(expected_probabilities, dtype=float)
    return scipy.stats.chisquare(observed, expected / expected.sum() * observed.sum()).pvalue


def coordinates(size, dtype=torch.int64):
    """Every pixel holds its own flat index: crops show where they came from."""
    return torch.arange(math.prod(size), dtype=dtype).reshape(size)


# ---------------------------------------------------------------- fair windows
@given(
    st.lists(st.integers(1, 40), min_size=2, max_size=2),
    st.lists(st.integers(1, 20), min_size=2, max_size=2),
)
def test_fair_windows_cover_every_pixel_equally_2d(size, output_size):
    coverage = coverage_from_ranges(size, output_size)
    assert coverage.min() > 0
    assert coverage.max() <= 1.1 * coverage.min()  # border within 10 % of centre
    # the exact probability: out / (size + out - 1) per axis
    total = math.prod(n + o - 1 for n, o in zip(size, output_size))
    expected = math.prod(output_size) / total
    assert np.allclose(coverage / total, expected)


@given(
    st.lists(st.integers(1, 12), min_size=3, max_size=3),
    st.lists(st.integers(1, 9), min_size=3, max_size=3),
)
def test_fair_windows_cover_every_pixel_equally_3d(size, output_size):
    coverage = coverage_from_ranges(size, output_size)
    assert coverage.min() > 0 and coverage.max() <= 1.1 * coverage.min()


@pytest.mark.parametrize(
    ("size", "geometry"),
    [
        ((5, 3), TileGeometry(6, 2)),
        ((1, 7), TileGeometry(12, 4)),  # smaller than a tile on one axis
        ((3, 2), TileGeometry(14, 6, step=4)),  # smaller than a tile on both
        ((2, 3, 4), TileGeometry((7, 7, 7), (3, 3, 3))),
    ],
)
def test_the_transform_draws_every_fair_window_once_per_residue(monkeypatch, size, geometry):
    """Exact distribution of make_params: feed it every residue of its draw, count the
    windows it makes (each residue is equally likely up to a bias below 2**-30)."""
    ranges = random_window_range(size, geometry.output_size)
    lengths = [b - a + 1 for a, b in ranges]
    t = OverlapTileCrop(geometry)
    image = torch.zeros((1, *size)) if len(size) == 3 else make_image(size)
    coverage = np.zeros(size, dtype=np.int64)
    residues = iter(itertools.product(*(range(n) for n in lengths)))
    monkeypatch.setattr(
        sampling.torch, "randint", lambda high, shape: torch.tensor(next(residues))
    )
    for _ in range(math.prod(lengths)):
        (tile,) = t.make_params([image])["tiles"]
        box = tile.output_box
        assert all(a <= n - 1 and b >= 1 for (a, b), n in zip(box, size))
        coverage[tuple(slice(max(0, a), max(0, b)) for a, b in box)] += 1
    monkeypatch.undo()
    assert coverage.min() == coverage.max() == math.prod(geometry.output_size)


def test_fair_windows_through_the_transform_cover_the_border():
    """Empirically, with torch's RNG: 8-px border and centre of a 40 x 40 image."""
    t = PairedTileCrop(TileGeometry(20, 12))
    image, label = make_image((40, 40)), tv_tensors.Mask(torch.zeros(40, 40, dtype=torch.long))
    torch.manual_seed(0)
    coverage = torch.zeros(40, 40)
    for _ in range(3000):
        (tile,) = t.make_params([image, label])["tiles"]
        (a, b), (c, d) = tile.output_box
        coverage[max(0, a) : max(0, b), max(0, c) : max(0, d)] += 1
    border = torch.ones(40, 40, dtype=torch.bool)
    border[8:-8, 8:-8] = False
    ratio = coverage[border].mean() / coverage[~border].mean()
    assert 0.9 < ratio < 1.1 and coverage.min() > 0


def test_random_window_start_is_seeded_and_checked():
    torch.manual_seed(3)
    first = random_window_start((9, 4, 2), (5, 5, 5))
    torch.manual_seed(3)
    assert random_window_start((9, 4, 2), (5, 5, 5)) == first
    with pytest.raises(
        ValueError, match=r"size must be a sequence of positive ints, got \(0, 3\)"
    ):
        random_window_range((0, 3), (2, 2))
    with pytest.raises(ValueError, match=r"same length, got \(4, 3\) and \(2,\)"):
        random_window_range((4, 3), (2,))


# ---------------------------------------------------------------- LabelSampler
def three_class_label():
    label = torch.zeros(30, 40, dtype=torch.long)
    label[0, :10] = 1  # a border row: 10 pixels
    label[-1, -1] = 1  # the corner
    label[10:20, 10:20] = 2
    label[25:, :5] = 255  # ignored
    return label


def draw_centres(sampler, label, n, size=None, output_size=(5, 4)):
    size = size or tuple(label.shape[-2:])
    torch.manual_seed(0)
    return [
        centre_of(sampler.output_start(size, output_size, [label]), output_size) for _ in range(n)
    ]


def test_label_sampler_class_frequencies_follow_the_weights():
    label = three_class_label()
    weights = {0: 1, 1: 3, 2: 6}
    centres = draw_centres(LabelSampler(weights, ignore_index=255), label, 3000)
    classes = [int(label[c]) for c in centres]
    assert 255 not in classes
    observed = [classes.count(c) for c in weights]
    assert chi_square_p(observed, list(weights.values())) > 0.001
    # within a class, every pixel (border and corner included) is equally likely
    ones = [c for c in centres if label[c] == 1]
    per_pixel = [ones.count(p) for p in [(0, j) for j in range(10)] + [(29, 39)]]
    assert min(per_pixel) > 0 and chi_square_p(per_pixel, [1] * 11) > 0.001


def test_label_sampler_balanced_draws_each_present_class_equally():
    label = three_class_label()
    centres = draw_centres(LabelSampler("balanced", ignore_index=255), label, 1500)
    classes = [int(label[c]) for c in centres]
    observed = [classes.count(c) for c in (0, 1, 2)]
    assert sum(observed) == 1500 and chi_square_p(observed, [1, 1, 1]) > 0.001


@pytest.mark.parametrize("base", [300, 10**12, -(10**12)])
def test_label_sampler_balanced_counts_from_the_smallest_class(base):
    # bincount's length is the largest value + 1: counting 10**12 as it is would
    # allocate 8 TB; the classes are counted from the smallest value instead
    label = three_class_label().to(torch.int64) + base
    centres = draw_centres(LabelSampler("balanced", ignore_index=255 + base), label, 300)
    classes = {int(label[c]) - base for c in centres}
    assert classes == {0, 1, 2}


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_label_sampler_balanced_reads_wide_unsigned_labels(dtype):
    # torch has no aminmax for uint16-64: every item of a 16-bit mask failed
    label = three_class_label().to(dtype)
    centres = draw_centres(LabelSampler("balanced", ignore_index=255), label, 300)
    assert {int(label[c]) for c in centres} == {0, 1, 2}


def test_label_sampler_classes_the_dtype_cannot_hold_are_absent():
    # uint8 == 256 wrapped to the 0s: class 256 took 99 % of the draws from background
    label = three_class_label().to(torch.uint8)
    sampler = LabelSampler({1: 1, 256: 99}, ignore_index=255)
    with pytest.warns(SamplerFallbackWarning, match=r"class\(es\) \[256\] absent"):
        centres = draw_centres(sampler, label, 100)
    assert {int(label[c]) for c in centres} == {1}


def test_label_sampler_weights_as_list_and_string_keys_are_the_same():
    label = three_class_label()
    as_list = draw_centres(LabelSampler([1, 3, 6], ignore_index=255.0), label, 50)
    as_str = draw_centres(LabelSampler({"0": 1, "1": 3, "2": 6}, ignore_index=255), label, 50)
    assert as_list == as_str


def test_label_sampler_3d_and_leading_axes():
    label = torch.zeros(1, 6, 7, 8, dtype=torch.uint8)
    label[0, 0, 0, 0] = label[0, 5, 6, 7] = 1  # two opposite corners
    centres = draw_centres(LabelSampler({1: 1}), label, 200, (6, 7, 8), (3, 3, 3))
    assert set(centres) == {(0, 0, 0), (5, 6, 7)}
    assert 60 < centres.count((0, 0, 0)) < 140


def test_label_sampler_bool_and_pil_labels():
    label = torch.zeros(9, 9, dtype=torch.bool)
    label[4, 0] = True
    assert set(draw_centres(LabelSampler({1: 1}), label, 20)) == {(4, 0)}
    pil = PIL.Image.fromarray((label.numpy() * 7).astype(np.uint8))
    assert set(draw_centres(LabelSampler({7: 1}), pil, 20, size=(9, 9))) == {(4, 0)}


def test_label_sampler_absent_class_falls_back_once():
    sampler = LabelSampler({1: 1, 2: 1})
    label = torch.zeros(8, 8, dtype=torch.long)
    label[3, 3] = 1
    with pytest.warns(SamplerFallbackWarning, match=r"class\(es\) \[2\] absent .* \[1\]"):
        centres = draw_centres(sampler, label, 10)
    assert set(centres) == {(3, 3)}  # drawn among the present classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per sampler: no second warning
        draw_centres(sampler, label, 3)
    nothing = LabelSampler({5: 1})
    torch.manual_seed(0)
    with pytest.warns(SamplerFallbackWarning, match="no pixel of a class with a positive weight"):
        start = nothing.output_start((8, 8), (5, 4), [label])
    first, last = zip(*random_window_range((8, 8), (5, 4)))
    assert all(a <= s <= b for s, a, b in zip(start, first, last))


def test_label_sampler_in_the_transform_centres_the_class():
    t = PairedTileCrop(GEOMETRY, index=LabelSampler({1: 1}), mask_fill=255)
    label = torch.zeros(17, 11, dtype=torch.long)
    label[16, 0] = 1  # a corner pixel: the window reaches past two borders
    torch.manual_seed(1)
    for _ in range(5):
        _, out = t(make_image(), label)
        assert out[3, 3] == 1 and (out == 255).any()


# ---------------------------------------------------------------- WeightedSampler
def test_weighted_sampler_follows_the_map():
    weights = torch.zeros(12, 10)
    pixels = [(0, 0), (5, 9), (11, 4)]
    for p, w in zip(pixels, [1.0, 2.0, 7.0]):
        weights[p] = w
    t = PairedTileCrop(GEOMETRY, index=WeightedSampler("w"))
    image = coordinates((1, 12, 10), torch.float64)
    torch.manual_seed(0)
    centres = []
    for _ in range(1000):
        out = t({"image": image, "label": tv_tensors.Mask(image[0]), "w": weights})
        centres.append(divmod(int(out["label"][3, 3]), 10))
    observed = [centres.count(p) for p in pixels]
    assert sum(observed) == 1000 and chi_square_p(observed, [1, 2, 7]) > 0.001


def test_weighted_sampler_3d_int_map_and_zero_map():
    size = (4, 5, 6)
    weights = torch.zeros(size, dtype=torch.int32)
    weights[3, 0, 5] = 4
    sampler = WeightedSampler("w")
    with sampler.bound_to(({"w": weights},)):
        torch.manual_seed(0)
        assert centre_of(sampler.output_start(size, (3, 3, 3), []), (3, 3, 3)) == (3, 0, 5)
    with (
        sampler.bound_to(({"w": np.zeros(size)},)),
        pytest.warns(SamplerFallbackWarning, match="'w' is zero everywhere"),
    ):
        sampler.output_start(size, (3, 3, 3), [])


@pytest.mark.parametrize(
    ("sample", "match"),
    [
        ({"x": torch.ones(3)}, r"found no 'w' in the sample"),
        (
            {"w": torch.ones(5, 6)},
            r"the weight map 'w' must have the image's spatial size \(6, 5\)",
        ),
        ({"w": -torch.ones(6, 5)}, r"must be non-negative and finite, got a minimum of -1.0"),
        ({"w": torch.full((6, 5), math.nan)}, r"non-negative and finite"),
    ],
)
def test_weighted_sampler_errors(sample, match):
    with pytest.raises(ValueError, match=match):
        PairedTileCrop(GEOMETRY, index=WeightedSampler("w"))(
            {"image": make_image((6, 5)), **sample}
        )


def test_weighted_sampler_needs_the_call():
    t = PairedTileCrop(GEOMETRY, index=WeightedSampler("w"))
    with pytest.raises(ValueError, match="reads its map from the sample a transform is called"):
        t.make_params([make_image()])


# ---------------------------------------------------------------- ForegroundSampler
def brute_force_valid(foreground, output_size, need):
    size = foreground.shape
    valid = set()
    for c in itertools.product(*(range(n) for n in size)):
        box = tuple(
            slice(max(0, x - o // 2), max(0, x - o // 2 + o)) for x, o in zip(c, output_size)
        )
        if int(foreground[box].sum()) >= need:
            valid.add(c)
    return valid


@pytest.mark.parametrize(
    ("size", "output_size", "min_fraction"),
    [((9, 12), (4, 5), 0.1), ((5, 6, 7), (3, 4, 3), 0.05), ((3, 3), (6, 6), 0.05)],
)
def test_foreground_sampler_draws_uniformly_among_windows_with_enough_foreground(
    size, output_size, min_fraction
):
    g = torch.Generator().manual_seed(2)
    label = (torch.rand(size, generator=g) < 0.08).long() * 3
    label.view(-1)[0] = label.view(-1)[-1] = 3  # foreground in two corners
    need = math.ceil(min_fraction * math.prod(output_size))
    valid = brute_force_valid(label != 0, output_size, need)
    sampler = ForegroundSampler(min_fraction=min_fraction, probability=1.0)
    torch.manual_seed(0)
    n = 30 * len(valid)
    centres = [
        centre_of(sampler.output_start(size, output_size, [label]), output_size) for _ in range(n)
    ]
    assert set(centres) == valid
    assert chi_square_p([centres.count(c) for c in sorted(valid)], [1] * len(valid)) > 0.001


def test_foreground_sampler_probability_and_channels():
    label = torch.zeros(2, 40, 40, dtype=torch.uint8)  # channels: foreground in either
    label[1, 30, 5] = 1
    t = PairedTileCrop(TileGeometry(12, 6), index=ForegroundSampler(probability=0.5))
    torch.manual_seed(0)
    hits = sum(bool(t(make_image((40, 40)), label)[1].any()) for _ in range(400))
    fair = 36 / (45 * 45)  # a fair window holds the pixel with probability 6*6/(45*45)
    assert abs(hits / 400 - (0.5 + 0.5 * fair)) < 0.08


@pytest.mark.parametrize("default", [torch.float64, torch.bfloat16])
def test_foreground_sampler_draws_do_not_depend_on_the_default_dtype(default):
    # its coin is float32 whatever the default: a bfloat16 draw would round
    # probability=0.999 to 1 and a float64 one would change the draws for a seed
    label = torch.zeros(40, 40, dtype=torch.uint8)
    label[30, 5] = 1
    t = PairedTileCrop(TileGeometry(12, 6), index=ForegroundSampler(probability=0.5))

    image = make_image((40, 40))

    def windows() -> list[torch.Tensor]:
        torch.manual_seed(0)
        return [t(image, label)[0] for _ in range(50)]

    expected = windows()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        drawn = windows()
    finally:
        torch.set_default_dtype(previous)
    assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))


def test_foreground_sampler_falls_back_without_foreground():
    sampler = ForegroundSampler(probability=1.0, background=2)
    label = torch.full((10, 10), 2)
    with pytest.warns(SamplerFallbackWarning, match=r"no window of size \(4, 4\) holds 0.01"):
        sampler.output_start((10, 10), (4, 4), [label])


# ---------------------------------------------------------------- every index kind
INDEX_KINDS = [
    "random",
    0,
    "all",
    LabelSampler({1: 1}),
    LabelSampler("balanced"),
    WeightedSampler("w"),
    ForegroundSampler(probability=1.0),
]


ALIGNMENT_CASES = [
    (index, size, geometry)
    for size, geometry in [
        ((17, 11), GEOMETRY),
        ((3, 4), GEOMETRY),  # smaller than a tile
        ((5, 6, 7), TileGeometry((9, 9, 9), (5, 5, 3))),
    ]
    for index in INDEX_KINDS
    if len(size) == 2 or not isinstance(index, WeightedSampler)  # 3-D: no dict of labels
]


@pytest.mark.parametrize(("index", "size", "geometry"), ALIGNMENT_CASES, ids=repr)
def test_image_and_label_windows_are_aligned(index, size, geometry):
    """Every pixel holds its flat index (distinct classes): the label window must be the
    centre of the image window, mirrored alike, for every kind of index."""
    t = PairedTileCrop(geometry, index=index)
    values = coordinates(size)
    image = values[None].double()
    inner = tuple(slice(m, m + o) for m, o in zip(geometry.margin, geometry.output_size))
    centre = tuple(o // 2 for o in geometry.output_size)
    torch.manual_seed(5)
    for _ in range(4):
        if len(size) == 2:
            weights = (values % 7 == 3).float()
            sample = {"image": tv_tensors.Image(image), "label": tv_tensors.Mask(values)}
            if isinstance(index, WeightedSampler):  # the map it reads, passed through
                sample["w"] = weights
            out = t(sample)
            out_image, out_label = out["image"], out["label"]
        else:
            out_image, out_label = t(image, values)
        channel = out_image.select(-len(size) - 1, 0)
        assert torch.equal(channel[(..., *inner)].long(), out_label)
        if isinstance(index, LabelSampler) and index.class_weights == {1: 1}:
            assert out_label[centre] == 1  # the class's one pixel is the window's centre
        if isinstance(index, WeightedSampler):
            assert weights.view(-1)[out_label[centre]] > 0


# ---------------------------------------------------------------- config, pickling, cache
CONFIG_CASES = [
    LabelSampler({0: 1, 1: 9}, ignore_index=255),
    LabelSampler([1.0, 2.0]),
    LabelSampler("balanced"),
    ForegroundSampler(min_fraction=0.05, probability=0.5, background=2.0),
    ForegroundSampler(probability=1.0, ignore_index=255),
    WeightedSampler("w"),
]


@pytest.mark.parametrize("sampler", CONFIG_CASES, ids=repr)
def test_config_round_trip_gives_the_same_windows(sampler):
    t = PairedTileCrop(GEOMETRY, index=sampler, mask_fill=255)
    config = json.loads(json.dumps(t.to_config()))
    rebuilt = from_config(config, allow=SAMPLERS)
    assert type(rebuilt.index) is type(sampler) and rebuilt.to_config() == config
    label = coordinates((17, 11)) % 3
    sample = {"image": make_image(), "label": tv_tensors.Mask(label)}
    if isinstance(sampler, WeightedSampler):
        sample["w"] = label.float()
    torch.manual_seed(0)
    expected = [t(sample) for _ in range(3)]
    torch.manual_seed(0)
    got = [rebuilt(sample) for _ in range(3)]
    for a, b in zip(expected, got):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_samplers_pickle_without_their_cache_and_keep_drawing_the_same():
    sampler = LabelSampler({1: 1})
    label = torch.zeros(300, 300, dtype=torch.long)
    label[::7, ::5] = 1
    t = PairedTileCrop(GEOMETRY, index=sampler)
    sample = (make_image((300, 300)), tv_tensors.Mask(label))
    out = check_transform(t, sample)  # types, no in-place change, pickling
    assert out[1][3, 3] == 1
    copy = pickle.loads(pickle.dumps(t))
    assert len(pickle.dumps(t)) < 4000  # the cache is not pickled
    torch.manual_seed(7)
    a = t.make_params([make_image((300, 300)), tv_tensors.Mask(label)])
    torch.manual_seed(7)
    b = copy.make_params([make_image((300, 300)), tv_tensors.Mask(label)])
    assert a["tiles"] == b["tiles"]


def test_class_locations_are_cached_per_label_and_version(monkeypatch):
    calls = []
    table = LabelSampler._table
    monkeypatch.setattr(LabelSampler, "_table", lambda self, v: calls.append(1) or table(self, v))
    sampler = LabelSampler({1: 1})
    label = torch.zeros(20, 20, dtype=torch.long)
    label[2, 3] = 1
    assert set(draw_centres(sampler, label, 5)) == {(2, 3)}
    assert len(calls) == 1  # computed once for five draws
    assert set(draw_centres(sampler, tv_tensors.Mask(label), 2)) == {(2, 3)}
    assert len(calls) == 1  # a new wrapper of the same memory finds the same entry
    label[2, 3], label[15, 16] = 0, 1  # in place: the version counter changes
    assert set(draw_centres(sampler, label, 5)) == {(15, 16)}
    assert len(calls) == 2
    for _ in range(sampling._CACHE_ENTRIES + 5):
        draw_centres(sampler, label.clone(), 1)
    assert len(sampler._cache._entries) <= sampling._CACHE_ENTRIES


def test_samplers_draw_from_torchs_rng():
    sampler = ForegroundSampler(probability=0.7)
    label = (coordinates((30, 30)) % 11 == 0).long()
    assert draw_centres(sampler, label, 30) == draw_centres(sampler, label, 30)
    assert not any(isinstance(v, torch.Generator) for v in vars(sampler).values())


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (
            lambda: LabelSampler("uniform"),
            ValueError,
            r"class_weights must be 'balanced'.*'uniform'",
        ),
        (lambda: LabelSampler(3), TypeError, r"class_weights must be 'balanced'.* got int"),
        (lambda: LabelSampler({0: -1}), ValueError, r"class_weights\[0\] must be in \[0, inf\]"),
        (lambda: LabelSampler({0: 0}), ValueError, r"must give some class a positive weight"),
        (lambda: LabelSampler({"a": 1}), ValueError, r"keys must be int classes, got 'a'"),
        (lambda: LabelSampler({0.5: 1}), ValueError, r"class_weights key must be an integer"),
        (lambda: LabelSampler({0: math.inf}), ValueError, r"class_weights\[0\] must be finite"),
        (lambda: LabelSampler({255: 1}, ignore_index=255), ValueError, r"ignored class 255"),
        (lambda: LabelSampler(ignore_index="x"), TypeError, r"ignore_index must be an int"),
        (
            lambda: ForegroundSampler(min_fraction=0),
            ValueError,
            r"min_fraction must be in \(0, 1\]",
        ),
        (lambda: ForegroundSampler(probability=2), ValueError, r"probability must be in \[0, 1\]"),
        (lambda: ForegroundSampler(probability="1"), TypeError, r"probability must be a number"),
        (lambda: ForegroundSampler(background=None), TypeError, r"background must be a number"),
        (lambda: WeightedSampler(3), TypeError, r"key must be a str \(a dict key\), got int 3"),
        (lambda: ForegroundSampler(ignore_index="x"), TypeError, r"ignore_index must be an int"),
        (
            lambda: ForegroundSampler(background=255, ignore_index=255),
            ValueError,
            r"ignore_index must differ from background, got 255",
        ),
    ],
)
def test_bad_arguments(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


@pytest.mark.parametrize("sampler", [LabelSampler(), ForegroundSampler()], ids=repr)
def test_a_sampler_needs_a_label(sampler):
    t = PairedTileCrop(GEOMETRY, index=sampler)
    with pytest.raises(ValueError, match=r"needs a label in the sample .* got 0 label"):
        t(make_image())
    with pytest.raises(ValueError, match=r"got 1 label\(s\) \(weight maps only\)"):
        t(make_image(), WeightMap(torch.ones(17, 11)))


def test_label_sampler_refuses_float_and_channel_labels():
    t = PairedTileCrop(GEOMETRY, index=LabelSampler())
    with pytest.raises(TypeError, match=r"integer or bool dtype, got torch\.float32"):
        t(make_image(), torch.zeros(17, 11))
    with pytest.raises(ValueError, match=r"one value per pixel.* got shape \(2, 17, 11\)"):
        t(make_image(), tv_tensors.Mask(torch.zeros(2, 17, 11, dtype=torch.long)))


def test_index_accepts_samplers_only_from_the_module():
    with pytest.raises(
        ValueError, match=r"or a sampler of unet_transforms\.sampling, got <object"
    ):
        PairedTileCrop(GEOMETRY, index=object())
    grid = TileGrid((17, 11), GEOMETRY)
    assert PairedTileCrop(GEOMETRY, index=len(grid) - 1).index == len(grid) - 1


@pytest.mark.parametrize(
    "make",
    [
        lambda w: w.numpy().astype(np.uint16),
        lambda w: w.to(torch.uint16),
        lambda w: w.numpy().astype(np.uint32),
        lambda w: np.ascontiguousarray(w.numpy()[::-1, ::-1])[::-1, ::-1],  # negative strides
        lambda w: w.numpy().astype(">f4"),  # big-endian
    ],
    ids=["uint16-numpy", "uint16-tensor", "uint32-numpy", "negative-strides", "big-endian"],
)
def test_weighted_sampler_reads_every_weight_map_its_docstring_accepts(make):
    weights = torch.zeros(9, 9)
    weights[1, 3] = 8  # the only pixel with weight: every window is centred on it
    crop = PairedTileCrop(TileGeometry(5, 3), index=WeightedSampler("w"))
    image = torch.arange(81.0).reshape(1, 9, 9)
    out = crop({"image": tv_tensors.Image(image), "w": make(weights)})
    assert out["image"][0, 2, 2] == image[0, 1, 3]


def test_a_label_changed_behind_torchs_back_is_a_clear_error():
    label = torch.zeros(20, 20, dtype=torch.long)
    label[2, 2] = 1
    crop = PairedTileCrop(TileGeometry(6, 4), index=LabelSampler({1: 1.0}))
    crop(torch.zeros(1, 20, 20), label)
    label.numpy()[2, 2], label.numpy()[15, 15] = 0, 1  # the version counter is unchanged
    with pytest.raises(ValueError, match=r"pass a new tensor or array \(label\.clone\(\)"):
        crop(torch.zeros(1, 20, 20), label)
    out = crop(torch.zeros(1, 20, 20), label.clone())  # a new tensor is read afresh
    assert out[1].sum() == 1
    # ForegroundSampler drew windows without foreground from its stale window sums
    label = torch.zeros(20, 20, dtype=torch.long)
    label[2, 2] = 1
    crop = PairedTileCrop(TileGeometry(6, 4), index=ForegroundSampler(probability=1.0))
    crop(torch.zeros(1, 20, 20), label)
    label.data[2, 2], label.data[15, 15] = 0, 1
    with pytest.raises(ValueError, match=r"pass a new tensor or array \(label\.clone\(\)"):
        crop(torch.zeros(1, 20, 20), label)


def test_foreground_sampler_does_not_count_ignored_pixels_as_foreground():
    # unlabelled rows (255) counted as foreground: 399 of 500 windows held only them
    label = torch.zeros(60, 60, dtype=torch.uint8)
    label[:3] = 255
    label[40:44, 20:24] = 1
    crop = PairedTileCrop(
        TileGeometry(14, 8), index=ForegroundSampler(probability=1.0, ignore_index=255)
    )
    torch.manual_seed(0)
    for _ in range(100):
        _, out = crop(torch.zeros(1, 60, 60), label)
        assert (out == 1).any()
    counted = PairedTileCrop(TileGeometry(14, 8), index=ForegroundSampler(probability=1.0))
    assert not all((counted(torch.zeros(1, 60, 60), label)[1] == 1).any() for _ in range(100))


@pytest.mark.parametrize(
    ("background", "ignore_index"), [(0, -100), (-1, None), (0, 300)], ids=["ignore", "bg", "big"]
)
def test_foreground_sampler_values_outside_the_dtype_match_no_pixel(background, ignore_index):
    # uint8 compared with -100 wrapped to 156: class 156 was ignored (or, as background
    # -1, 255 was background) and the sampler fell back to fair windows
    label = torch.zeros(60, 60, dtype=torch.uint8)
    label[40:44, 20:24] = 156
    if background == -1:
        label[label == 0] = 255  # every other pixel is a real class, not background
    sampler = ForegroundSampler(probability=1.0, background=background, ignore_index=ignore_index)
    crop = PairedTileCrop(TileGeometry(14, 8), index=sampler)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        for _ in range(20):
            _, out = crop(torch.zeros(1, 60, 60), label)
            assert (out == 156).any() or background == -1
