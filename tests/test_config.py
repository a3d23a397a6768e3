"""Configs: to_config / from_config laws, pipelines, the allow-list, errors by key path."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torchvision import tv_tensors
from torchvision.transforms import v2

import unet_transforms
from unet_transforms import (
    Deformation,
    MirrorExtrapolate,
    OverlapTileCrop,
    PairedTileCrop,
    TiledDataset,
    TileGeometry,
    TileGrid,
    from_config,
    to_config,
)
from unet_transforms.config import TORCHVISION_TRANSFORMS, Configurable, torch_dtype
from unet_transforms.models import UNet
from unet_transforms.sampling import ForegroundSampler, LabelSampler, WeightedSampler

from common import geometries, grids, make_image, make_mask


def json_round_trip(config):
    return json.loads(json.dumps(config))


def yaml_round_trip(config):
    return yaml.safe_load(yaml.safe_dump(config))


def same_outputs(a, b, sample, seed=0):
    torch.manual_seed(seed)
    out_a = a(*sample)
    torch.manual_seed(seed)
    out_b = b(*sample)
    for x, y in zip(out_a, out_b, strict=True):
        assert type(x) is type(y)
        assert torch.equal(x, y)


# ------------------------------------------------------------------------- values
@given(geometries())
def test_geometry_round_trips_through_json_and_yaml(geometry):
    config = geometry.to_config()
    assert config["_target_"] == "unet_transforms.TileGeometry"
    for trip in (json_round_trip, yaml_round_trip):
        rebuilt = from_config(trip(config))
        assert rebuilt == geometry
        assert rebuilt.to_config() == config
    assert eval(repr(geometry), {"TileGeometry": TileGeometry}) == geometry


@given(grids())
def test_grid_round_trips(grid):
    config = grid.to_config()
    assert from_config(json_round_trip(config)) == grid
    assert from_config(config).to_config() == config


def test_arguments_are_kept_as_given():
    geometry = TileGeometry(np.array([572, 572]), 388.0, step=[384, 384])
    # as given, as plain data: the array becomes a list, the float stays a float
    assert geometry.to_config() == {
        "_target_": "unet_transforms.TileGeometry",
        "input_size": [572, 572],
        "output_size": 388.0,
        "step": [384, 384],
    }
    assert geometry == TileGeometry(572, 388, step=384)
    sizes = [212, 212]
    crop = PairedTileCrop({"input_size": sizes, "output_size": 124}, index=0)
    sizes.append(1)  # changing the caller's list later does not change the config
    assert crop.to_config()["geometry"] == {"input_size": [212, 212], "output_size": 124}
    assert repr(crop) == "PairedTileCrop({'input_size': [212, 212], 'output_size': 124}, index=0)"


def test_classmethod_geometries_have_short_configs():
    assert TileGeometry.unet(input_size=572).to_config() == {
        "_target_": "unet_transforms.TileGeometry",
        "input_size": 572,
        "output_size": 388,
        "step": 384,
    }
    net = torch.nn.Conv2d(1, 1, 5)
    assert repr(TileGeometry.from_model(net, 20)) == "TileGeometry(20, 16)"


def test_geometry_is_immutable_hashable_and_pickles():
    g = TileGeometry(10, 6)
    with pytest.raises(AttributeError, match="immutable"):
        g.step = (1, 1)  # type: ignore[misc]
    assert hash(g) == hash(TileGeometry((10, 10), (6, 6)))
    clone = pickle.loads(pickle.dumps(g))
    assert clone == g and clone.to_config() == g.to_config()


# ------------------------------------------------------------------ transforms
@st.composite
def tile_transforms(draw):
    geometry = draw(geometries(2))
    given_geometry = draw(
        st.sampled_from(["object", "mapping", "config"]).map(
            lambda how: {
                "object": geometry,
                "mapping": {
                    "input_size": list(geometry.input_size),
                    "output_size": list(geometry.output_size),
                    "step": list(geometry.step),
                },
                "config": geometry.to_config(),
            }[how]
        )
    )
    kind = draw(st.sampled_from(["mirror", "overlap", "paired"]))
    kwargs = {}
    if draw(st.booleans()):
        kwargs["mode"] = draw(st.sampled_from(["reflect", "symmetric"]))
    if draw(st.booleans()):
        kwargs["align"] = draw(st.sampled_from(["center", "start"]))
    if kind == "mirror":
        if draw(st.booleans()):
            kwargs["mask_fill"] = draw(st.sampled_from([None, 0, 255, -1]))
        if draw(st.booleans()):
            return MirrorExtrapolate(draw(st.integers(0, 6)), **kwargs)
        return MirrorExtrapolate(geometry=given_geometry, **kwargs)
    kwargs["index"] = draw(st.sampled_from(["random", "all", 0, -1]))
    if kind == "overlap":
        return OverlapTileCrop(given_geometry, **kwargs)
    if draw(st.booleans()):
        kwargs["mask_fill"] = draw(st.sampled_from([None, 0, 255]))
    return PairedTileCrop(given_geometry, **kwargs)


@given(tile_transforms(), st.integers(0, 2**31))
def test_transforms_round_trip_with_equal_outputs(transform, seed):
    config = transform.to_config()
    sample = (make_image((13, 9)), make_mask((13, 9)))
    for trip in (json_round_trip, yaml_round_trip):
        rebuilt = from_config(trip(config))
        assert type(rebuilt) is type(transform)
        assert rebuilt.to_config() == config
        assert repr(rebuilt) == repr(from_config(config))
        same_outputs(transform, rebuilt, sample, seed)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.sampled_from([0, 1]))
def test_unet_round_trips(in_channels, out_channels, depth, padding):
    net = UNet(in_channels, out_channels, depth=depth, base_channels=2.0, padding=padding)
    config = net.to_config()
    assert config["_target_"] == "unet_transforms.models.UNet"
    assert config["base_channels"] == 2.0  # as given
    rebuilt = from_config(json_round_trip(config))
    assert rebuilt.to_config() == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }
    assert (
        repr(net)
        == f"UNet({in_channels}, {out_channels}, depth={depth}, base_channels=2.0, padding={padding})"
    )


def test_tiled_dataset_round_trips_with_a_configurable_base(tmp_path):
    for sub in ("img", "lbl"):
        (tmp_path / sub).mkdir()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img" / "a.npy", rng.random((30, 20), dtype=np.float32))
    np.save(tmp_path / "lbl" / "a.npy", rng.integers(0, 3, (30, 20), dtype=np.uint8))
    from unet_transforms.datasets import ImageMaskFolder

    base = ImageMaskFolder(tmp_path / "img", tmp_path / "lbl")
    dataset = TiledDataset(
        base,
        {"input_size": 20, "output_size": 12},
        mask_fill=255,
        deform=Deformation(sigma=0.0, flip=True),
        index="random",
        tiles_per_epoch=4,
        sample_weights=np.array([2.0]),
    )
    config = dataset.to_config()
    assert config["deform"] == {
        "_target_": "unet_transforms.Deformation",
        "sigma": 0.0,
        "flip": True,
    }
    assert config["sample_weights"] == [2.0]
    assert config["dataset"]["_target_"] == "unet_transforms.datasets.ImageMaskFolder"
    assert config["dataset"]["images"] == str(tmp_path / "img")
    rebuilt = from_config(json_round_trip(config))
    assert rebuilt.to_config() == config and len(rebuilt) == len(dataset)
    for i in range(len(dataset)):
        torch.manual_seed(i)
        items = dataset[i]
        torch.manual_seed(i)
        for a, b in zip(items, rebuilt[i], strict=True):
            assert type(a) is type(b) and torch.equal(a, b)
    # the base dataset given as a config is built from it
    from_base_config = TiledDataset(base.to_config(), TileGeometry(20, 12))
    assert len(from_base_config) == len(base) * 6  # every grid tile of 30 x 20: 3 x 2


def test_an_object_that_cannot_be_described_is_named():
    dataset = TiledDataset([(make_image((5, 5)), make_mask((5, 5)))], TileGeometry(6, 2))
    with pytest.raises(
        TypeError, match=r"^TiledDataset\.dataset\[0\]\[0\]: cannot describe Image"
    ):
        dataset.to_config()

    class Samples(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return make_image((5, 5)), make_mask((5, 5))

    with pytest.raises(TypeError, match=r"^TiledDataset\.dataset: cannot describe Samples"):
        TiledDataset(Samples(), TileGeometry(6, 2)).to_config()


# ------------------------------------------------------------------ torchvision
TORCHVISION_EXAMPLES = {
    "RandomHorizontalFlip": v2.RandomHorizontalFlip(p=0.3),
    "RandomVerticalFlip": v2.RandomVerticalFlip(p=0.7),
    "RandomRotation": v2.RandomRotation(
        15, interpolation=v2.InterpolationMode.BILINEAR, expand=False, center=[3, 4], fill=2
    ),
    "RandomAffine": v2.RandomAffine(
        degrees=(-5, 10),
        translate=(0.1, 0.2),
        scale=(0.9, 1.1),
        shear=3,
        interpolation=v2.InterpolationMode.BILINEAR,
        fill=1,
    ),
    "ColorJitter": v2.ColorJitter(brightness=0.2, contrast=(0.7, 1.2), saturation=0.1, hue=0.05),
    "GaussianBlur": v2.GaussianBlur(5, sigma=(0.1, 2.0)),
    "ElasticTransform": v2.ElasticTransform(alpha=30.0, sigma=4.0, fill=0),
    "Normalize": v2.Normalize(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]),
    "ToDtype": v2.ToDtype(torch.float64, scale=True),
    "ToImage": v2.ToImage(),
    "ToPureTensor": v2.ToPureTensor(),
    "Identity": v2.Identity(),
    "Compose": v2.Compose([v2.RandomHorizontalFlip(), PairedTileCrop(TileGeometry(10, 6))]),
    "RandomApply": v2.RandomApply([v2.RandomVerticalFlip(p=1.0)], p=0.4),
    "RandomChoice": v2.RandomChoice([v2.RandomHorizontalFlip(1.0), v2.Identity()], p=[1, 3]),
    "RandomOrder": v2.RandomOrder([v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(0.5)]),
}


def test_every_supported_torchvision_transform_has_an_example():
    assert sorted(TORCHVISION_EXAMPLES) == sorted(TORCHVISION_TRANSFORMS)


@pytest.mark.parametrize("name", sorted(TORCHVISION_EXAMPLES))
def test_torchvision_transforms_round_trip(name):
    transform = TORCHVISION_EXAMPLES[name]
    config = to_config(transform)
    assert config["_target_"] == f"torchvision.transforms.v2.{name}"
    for trip in (json_round_trip, yaml_round_trip):
        rebuilt = from_config(trip(config))
        assert type(rebuilt) is type(transform)
        assert to_config(rebuilt) == config
    rebuilt = from_config(config)
    # the rebuilt transform does the same thing under the same seed
    image = tv_tensors.Image(torch.rand(3, 40, 36))
    mask = tv_tensors.Mask(torch.randint(0, 4, (40, 36)))
    if name == "ToImage":
        image = image.as_subclass(torch.Tensor)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = transform(image, mask)
        torch.manual_seed(seed)
        got = rebuilt(image, mask)
        for a, b in zip(expected, got, strict=True):
            assert type(a) is type(b) and torch.equal(a, b)


PER_TYPE = {tv_tensors.Image: 7, tv_tensors.Mask: 255}


@pytest.mark.parametrize(
    "transform",
    [
        v2.RandomAffine((45, 45), fill=PER_TYPE),
        v2.RandomRotation((30, 30), fill=PER_TYPE),
        v2.ElasticTransform(alpha=80.0, sigma=3.0, fill=PER_TYPE),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
    ],
    ids=lambda t: type(t).__name__,
)
def test_per_type_arguments_of_torchvision_transforms_round_trip(transform):
    # type keys were written as names and rebuilt as str keys, which torchvision skips:
    # the mask was filled with 0 instead of 255, and ToDtype converted nothing
    rebuilt = from_config(json_round_trip(to_config(transform)))
    image = tv_tensors.Image(torch.ones(1, 20, 20, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(20, 20, dtype=torch.uint8))
    torch.manual_seed(0)
    expected = transform(image, mask)
    torch.manual_seed(0)
    got = rebuilt(image, mask)
    for a, b in zip(expected, got, strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype and torch.equal(a, b)
    assert to_config(rebuilt) == to_config(transform)


def test_size_arrays_are_copied():
    for sizes in (np.array([12, 14]), torch.tensor([12, 14])):
        geometry = TileGeometry(sizes, [8, 10])
        sizes[0] = 20  # changing the caller's array later does not change the config
        assert geometry.to_config()["input_size"] == [12, 14]
        assert from_config(geometry.to_config()) == geometry


def test_pipeline_round_trip_and_hydra_style_flatness():
    pipeline = v2.Compose(
        [
            v2.ToImage(),
            PairedTileCrop(TileGeometry.unet(input_size=188, depth=2), mask_fill=255),
            v2.RandomApply([v2.RandomRotation(10)], p=0.5),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    config = to_config(pipeline)
    assert config["transforms"][3]["dtype"] == {
        "_target_": "unet_transforms.config.torch_dtype",
        "name": "float32",
    }

    def reserved(node):
        if isinstance(node, dict):
            return [k for k in node if k.startswith("_") and k != "_target_"] + [
                r for v in node.values() for r in reserved(v)
            ]
        return [r for v in node for r in reserved(v)] if isinstance(node, list) else []

    assert reserved(config) == []
    rebuilt = from_config(json_round_trip(config))
    assert to_config(rebuilt) == config
    image = torch.randint(0, 256, (3, 200, 150), dtype=torch.uint8)
    mask = tv_tensors.Mask(torch.randint(0, 3, (200, 150)))
    same_outputs(pipeline, rebuilt, (image, mask), seed=4)


def test_unsupported_transforms_are_named():
    with pytest.raises(TypeError, match=r"cannot describe Lambda as a config.*define to_config"):
        to_config(v2.Lambda(lambda x: x))
    with pytest.raises(TypeError, match=r"^Compose\.transforms\[1\]: cannot describe Lambda"):
        to_config(v2.Compose([v2.Identity(), v2.Lambda(lambda x: x)]))

    class Mine(v2.Transform):
        pass

    with pytest.raises(TypeError, match="cannot describe Mine"):
        to_config(v2.RandomApply([Mine()]))


class Scale(v2.Transform):
    """A user's transform that takes part by defining to_config."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def transform(self, inpt, params):
        return inpt * self.factor

    def to_config(self):
        return {"_target_": f"{__name__}.Scale", "factor": self.factor}


class Offset(Configurable, v2.Transform):
    """A user's transform built on the library's Configurable mixin."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = offset

    def transform(self, inpt, params):
        return inpt + self.offset


def test_user_transforms_take_part_with_allow():
    pipeline = v2.Compose([Scale(2.0), Offset(offset=1.5)])
    config = to_config(pipeline)
    assert config["transforms"][1] == {"_target_": f"{__name__}.Offset", "offset": 1.5}
    with pytest.raises(
        ValueError, match=rf"transforms\[0\]: _target_ '{__name__}.Scale' is not allowed"
    ):
        from_config(config)
    rebuilt = from_config(config, allow=[Scale, f"{__name__}.Offset"])
    assert to_config(rebuilt) == config
    x = torch.ones(2)
    assert torch.equal(rebuilt(x), pipeline(x))
    assert repr(Offset(offset=1.5)) == "Offset(offset=1.5)"


# ------------------------------------------------------------------ plain data in
def test_omegaconf_and_mapping_inputs():
    config = {
        "_target_": "unet_transforms.PairedTileCrop",
        "geometry": {"unet": {"input_size": [188, 188], "depth": 2.0}},
        "mask_fill": 255,
    }
    from_dict = from_config(config)
    from_omega = from_config(OmegaConf.create(config))
    assert from_dict.geometry == from_omega.geometry == TileGeometry.unet(input_size=188, depth=2)
    assert from_omega.to_config() == config
    # a transform built from OmegaConf containers describes itself as plain data
    direct = PairedTileCrop(OmegaConf.create({"input_size": 20, "output_size": [12, 12]}))
    assert direct.to_config()["geometry"] == {"input_size": 20, "output_size": [12, 12]}
    json.dumps(direct.to_config())


@pytest.mark.parametrize(
    ("geometry", "error", "match"),
    [
        (
            {"input_size": 8.5, "output_size": 4},
            ValueError,
            r"geometry\.input_size must be an integer, got 8\.5",
        ),
        (
            {"input_size": True, "output_size": 4},
            TypeError,
            r"geometry\.input_size must be an int or a sequence of ints, got bool",
        ),
        (
            {"input_size": "8", "output_size": 4},
            TypeError,
            r"geometry\.input_size must be an int or a sequence",
        ),
        (
            {"input_size": float("nan"), "output_size": 4},
            ValueError,
            r"geometry\.input_size must be an integer, got nan",
        ),
        (
            {"input_size": [8, 8.5], "output_size": 4},
            ValueError,
            r"geometry\.input_size\[1\] must be an integer",
        ),
        ({"input_size": 8}, TypeError, r"geometry needs the key 'output_size'"),
        (
            {"input_size": 8, "output_size": 4, "stride": 2},
            TypeError,
            r"geometry has unknown key 'stride'",
        ),
        (
            {"unet": {"input_size": 573}},
            ValueError,
            r"geometry\.unet: input size 573 on axis 0 is not a valid U-Net input",
        ),
        (
            {"unet": 572},
            TypeError,
            r"geometry as \{'unet': \{\.\.\.\}\} takes one key holding the arguments",
        ),
        (572, TypeError, r"geometry must be a TileGeometry or a mapping .* got int 572"),
    ],
)
def test_bad_geometry_values_name_the_key(geometry, error, match):
    with pytest.raises(error, match=match):
        PairedTileCrop(geometry)
    config = {
        "_target_": "torchvision.transforms.v2.Compose",
        "transforms": [{"_target_": "unet_transforms.PairedTileCrop", "geometry": geometry}],
    }
    with pytest.raises(error, match=r"^transforms\[0\]\." + match):
        from_config(config)


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (
            {"_target_": "unet_transforms.TileGeometry", "input_size": 10, "output_sise": 6},
            TypeError,
            r"^output_sise: unet_transforms\.TileGeometry has no argument 'output_sise'; its arguments are input_size, output_size, step",
        ),
        (
            {"_target_": "unet_transforms.TileGeometry", "input_size": 10},
            TypeError,
            r"^<config> \(unet_transforms\.TileGeometry\): .*missing .*'output_size'",
        ),
        ({"_target_": 3}, TypeError, r"^_target_ must be a str, got int"),
        (
            {"_target_": "unet_transforms.TileGeometry", "_partial_": True},
            ValueError,
            r"reserved key '_partial_' is not supported",
        ),
        (
            {"a": [{"_target_": "unet_transforms.models.UNet", "depth": -1}]},
            ValueError,
            r"^a\[0\]\.depth must be >= 0, got -1",
        ),
        (
            {"_target_": "unet_transforms.config.torch_dtype", "name": "float99"},
            ValueError,
            r"^name must name a torch dtype",
        ),
        (
            {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip", "p": "half"},
            TypeError,
            r"^<config> \(torchvision\.transforms\.v2\.RandomHorizontalFlip\): ",
        ),
    ],
)
def test_bad_configs_name_the_key_path(config, error, match):
    with pytest.raises(error, match=match):
        from_config(config)


def test_plain_data_passes_through():
    config = {"a": [1, 2.5, None, "x", {"b": True}]}
    assert from_config(config) == config
    assert torch_dtype("torch.uint8") is torch.uint8


# ------------------------------------------------------------------ security
@pytest.mark.parametrize("target", ["os.system", "subprocess.Popen", "builtins.eval"])
def test_forbidden_targets_are_refused(target):
    with pytest.raises(
        ValueError, match=rf"_target_ '{target}' is not allowed.*allow=\['{target}'\]"
    ):
        from_config({"_target_": target, "command": "echo hacked"})
    nested = {
        "_target_": "torchvision.transforms.v2.Compose",
        "transforms": [{"_target_": target}],
    }
    with pytest.raises(ValueError, match=r"^transforms\[0\]: _target_"):
        from_config(nested)


def test_nothing_is_imported_for_a_refused_target():
    # a fresh interpreter: the named module must not be imported by the refusal
    code = textwrap.dedent(
        """
        import sys
        import unet_transforms
        assert "smtplib" not in sys.modules and "http.server" not in sys.modules
        for target in ("smtplib.SMTP", "http.server.HTTPServer"):
            try:
                unet_transforms.from_config({"_target_": target, "host": "localhost"})
            except ValueError as e:
                assert "is not allowed" in str(e), e
            else:
                raise AssertionError("not refused")
        assert "smtplib" not in sys.modules and "http.server" not in sys.modules
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_allowed_names_are_imported_only_when_used():
    built = from_config(
        {"_target_": "collections.OrderedDict", "a": 1}, allow=["collections.OrderedDict"]
    )
    assert dict(built) == {"a": 1}
    with pytest.raises(ValueError, match="was allowed but cannot be imported"):
        from_config({"_target_": "no_such_module_xyz.Thing"}, allow=["no_such_module_xyz.Thing"])
    with pytest.raises(TypeError, match="allow must hold dotted names or callables, got int"):
        from_config({}, allow=[3])


# ------------------------------------------------------------------ YAML objects
def test_yaml_writes_objects_as_their_config():
    crop = PairedTileCrop(TileGeometry(20, 12), mask_fill=255)
    text = yaml.safe_dump({"crop": crop})
    assert "!!python" not in text
    assert from_config(yaml.safe_load(text)["crop"]).to_config() == crop.to_config()
    assert "!!python" not in yaml.dump({"geometry": TileGeometry(20, 12)})


def test_per_type_mask_fill_round_trips_with_named_types():
    from unet_transforms import WeightMap

    crop = PairedTileCrop(
        TileGeometry(10, 6), index=0, mask_fill={tv_tensors.Mask: 255, WeightMap: 0.0}
    )
    config = crop.to_config()
    assert config["mask_fill"] == {
        "torchvision.tv_tensors.Mask": 255,
        "unet_transforms.WeightMap": 0.0,
    }
    rebuilt = from_config(json_round_trip(config))
    assert rebuilt.to_config() == config
    mask = tv_tensors.Mask(torch.ones(3, 3, dtype=torch.int64))
    weights = WeightMap(torch.ones(3, 3))
    for t in (crop, rebuilt):
        _, out_mask, out_weights = t(make_image((3, 3)), mask, weights)
        assert out_mask[0, 0] == 255 and out_weights[0, 0] == 0.0 and out_mask[2, 2] == 1

    class MyMask(tv_tensors.Mask):
        pass

    with pytest.raises(TypeError, match=r"mask_fill: cannot name the type .*MyMask in a config"):
        PairedTileCrop(TileGeometry(10, 6), mask_fill={MyMask: 1}).to_config()
    with pytest.raises(TypeError, match=r"mask_fill keys .* got 'Mask'"):
        PairedTileCrop(TileGeometry(10, 6), mask_fill={"Mask": 1})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"blend": "hann", "output": "labels"},
        {"blend": "gaussian", "region": [[0, 10], [3, 9]]},
    ],
)
def test_tile_merger_round_trips_with_equal_results(options):
    from unet_transforms import TileMerger

    grid = TileGrid((10, 9), TileGeometry(8, 8, step=4))
    merger = TileMerger(grid, **options)
    config = merger.to_config()
    assert config["_target_"] == "unet_transforms.TileMerger"
    rebuilt = from_config(json_round_trip(config))
    assert rebuilt.to_config() == config
    outputs = torch.rand(len(grid), 2, 8, 8)
    for m in (merger, rebuilt):
        for i in m.tile_indices():
            m.add(i, outputs[i])
    assert torch.equal(merger.result(), rebuilt.result())


# ----------------------------------------------------------------- plain data, pickles
def test_scalar_subclasses_are_written_as_plain_builtins():
    import enum

    class Fill(enum.IntEnum):
        IGNORE = 255

    crop = PairedTileCrop(
        TileGeometry(12, 4), mode=np.str_("symmetric"), mask_fill={tv_tensors.Mask: Fill.IGNORE}
    )
    config = to_config(crop)
    assert config["mode"] == "symmetric" and type(config["mode"]) is str
    assert type(config["mask_fill"]["torchvision.tv_tensors.Mask"]) is int
    normalize = to_config(v2.Normalize(mean=[0.5], std=np.array([0.25])))
    sampler = to_config(LabelSampler({1: np.float64(9.0), 0: 1}))
    for value in (config, normalize, sampler):
        assert yaml.safe_load(yaml.safe_dump(value)) == value  # safe_dump refused np.float64
        assert "!!python" not in yaml.dump(value)
    assert type(sampler["class_weights"]["1"]) is float


def test_devices_module_lists_and_size_tables_are_written():
    grid = TileGrid((10, 9), TileGeometry(8, 8, step=4))
    merger = unet_transforms.TileMerger(grid, device=torch.device("cpu"))
    assert to_config(merger)["device"] == "cpu"
    assert from_config(to_config(merger)).to_config() == to_config(merger)
    apply = v2.RandomApply(torch.nn.ModuleList([v2.RandomVerticalFlip(1.0)]), p=0.7)
    assert to_config(apply) == to_config(v2.RandomApply([v2.RandomVerticalFlip(1.0)], p=0.7))
    sizes = np.array([[40, 30], [20, 50]])
    holder = _Holds(sizes)
    sizes[0, 0] = 1  # the holder kept a copy
    assert to_config(holder)["sizes"] == [[40, 30], [20, 50]]
    assert unet_transforms.config.to_plain(torch.tensor([[4, 3]])) == [[4, 3]]
    with pytest.raises(TypeError, match="sizes"):  # image data stays out of configs
        Configurable.to_config(_Holds(np.zeros((4, 4), np.float32)))


class _Holds(Configurable):
    def __init__(self, sizes: object) -> None:
        self.sizes = sizes


def test_allowing_a_callable_allows_its_public_name():
    config = {"_target_": "torchvision.transforms.v2.RandomResizedCrop", "size": [8, 8]}
    crop = from_config(config, allow=[v2.RandomResizedCrop])  # defined in v2._geometry
    assert type(crop) is v2.RandomResizedCrop
    conv = from_config(
        {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
        allow=[torch.nn.Conv2d],
    )
    assert isinstance(conv, torch.nn.Conv2d)
    with pytest.raises(ValueError, match="not allowed"):  # another callable stays refused
        from_config({"_target_": "torch.nn.Conv3d"}, allow=[torch.nn.Conv2d])


def test_user_classes_with_var_keyword_var_positional_and_positional_only_arguments():
    class WithOptions(Configurable):
        def __init__(self, a: int, **options: float) -> None:
            self.a, self.options = a, options

    class WithSizes(Configurable):
        def __init__(self, *sizes: int, scale: float = 1.0) -> None:
            self.sizes, self.scale = sizes, scale

    class PositionalOnly(Configurable):
        def __init__(self, a: int, /, b: int = 2) -> None:
            self.a, self.b = a, b

    options = WithOptions(1, b=2.0)
    assert repr(options) == "WithOptions(1, b=2.0)"
    config = to_config(options)
    assert config == {"_target_": config["_target_"], "a": 1, "b": 2.0}
    rebuilt = from_config(json_round_trip(config), allow=[WithOptions])
    assert rebuilt.options == {"b": 2.0} and to_config(rebuilt) == config
    sizes = WithSizes(3, 4, scale=2.0)
    assert repr(sizes) == "WithSizes(3, 4, scale=2.0)"
    assert repr(PositionalOnly(5, b=6)) == "PositionalOnly(5, b=6)"
    for obj, name in ((sizes, r"\*sizes"), (PositionalOnly(5), "a")):
        with pytest.raises(TypeError, match=f"takes {name} by position"):
            to_config(obj)


def test_label_sampler_draws_do_not_depend_on_key_order_and_keys_are_written_as_ints():
    crop = PairedTileCrop(TileGeometry(12, 4), index=LabelSampler({1: 9, 0: 1}))
    via_yaml = from_config(yaml.safe_load(yaml.safe_dump(to_config(crop))))  # sorts keys
    image, label = torch.rand(1, 40, 40), torch.zeros(40, 40, dtype=torch.long)
    label[10:30, 10:30] = 1

    def windows(transform):
        torch.manual_seed(0)
        return [transform(image, label)[0] for _ in range(30)]

    assert all(torch.equal(a, b) for a, b in zip(windows(crop), windows(via_yaml)))
    for weights in ({torch.tensor(0): 1.0, torch.tensor(1): 2.0}, {0.0: 1, 1.0: 2}):
        config = to_config(LabelSampler(weights))
        assert set(config["class_weights"]) == {"0", "1"}
        assert from_config(config).class_weights == {0: 1.0, 1: 2.0}
    with pytest.raises(ValueError, match="class 1 twice"):
        LabelSampler({1: 1.0, "1": 2.0})


@pytest.mark.parametrize(
    "value",
    [
        TileGeometry(np.array([44, 46]), 28, step=np.int64(20)),
        TileGrid(np.array([100, 90]), {"input_size": 44, "output_size": 28}, align="start"),
        LabelSampler({1: 9, 0: 1}, ignore_index=255),
        ForegroundSampler(),
        WeightedSampler("w"),
        Deformation(sigma=np.float64(8.0), rotation=10.0, flip=True),
        Deformation(scale=(np.float64(0.9), 1.1), grid=(np.int64(3), 4)),
        LabelSampler({np.int64(1): np.float64(9.0), 0: 1}),
    ],
    ids=[
        "geometry",
        "grid",
        "label-sampler",
        "foreground-sampler",
        "weighted",
        "deformation",
        "numpy-in-tuples",
        "numpy-keys",
    ],
)
def test_value_objects_load_with_torch_load_weights_only(value):
    """Lightning keeps hyperparameters in checkpoints; torch.load reads them with
    weights_only=True by default."""
    import io

    buffer = io.BytesIO()
    torch.save({"hyper_parameters": {"value": value}}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["hyper_parameters"]["value"]
    assert type(loaded) is type(value) and to_config(loaded) == to_config(value)
    if isinstance(value, TileGeometry | TileGrid):
        assert loaded == value and hash(loaded) == hash(value)


def test_tile_grid_is_an_immutable_value_not_a_dataclass():
    import dataclasses

    grid = TileGrid((10, 9), TileGeometry(8, 4))
    assert not dataclasses.is_dataclass(grid)
    assert grid == TileGrid((10, 9), TileGeometry(8, 4)) != TileGrid((10, 9), TileGeometry(8, 2))
    assert len({grid, TileGrid([10, 9], {"input_size": 8, "output_size": 4})}) == 1
    with pytest.raises(AttributeError, match="immutable"):
        grid.align = "start"
    with pytest.raises(AttributeError, match="immutable"):
        del grid.shape
    assert pickle.loads(pickle.dumps(grid)) == grid
