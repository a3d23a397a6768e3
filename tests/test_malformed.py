"""Malformed arguments to every public function and command: only ValueError or
TypeError come out (or a documented subclass), each naming the argument."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import unet_transforms as ut
from unet_transforms import losses, viz
from unet_transforms.cli import main
from unet_transforms.models import UNet

MALFORMED = st.sampled_from(
    [
        None,
        True,
        "x",
        b"<<",
        math.nan,
        math.inf,
        -1,
        0,
        1.5,
        10**30,
        -(10**30),
        [],
        [1, 2, 3, 4, 5],
        [[1, 2]],
        {"a": 1},
        object(),
        complex(1, 1),
        np.array([[1, 2], [3, 4]]),
        torch.tensor(True),
        torch.zeros(2, 2, 2, 2, 2, 2),
    ]
)

GEOMETRY = ut.TileGeometry(12, 8)
NET = torch.nn.Conv2d(1, 2, 5)


def image() -> torch.Tensor:
    return torch.rand(1, 13, 9)


# callable, the valid keyword arguments, the names to break (each named in the error)
CASES: list[tuple[str, Callable[..., Any], Callable[[], dict[str, Any]]]] = [
    ("TileGeometry", ut.TileGeometry, lambda: {"input_size": 12, "output_size": 8, "step": 4}),
    ("TileGeometry.unet", ut.TileGeometry.unet, lambda: {"input_size": 572, "depth": 4}),
    (
        "TileGeometry.from_model",
        ut.TileGeometry.from_model,
        lambda: {"model": NET, "input_size": 20, "in_channels": 1},
    ),
    (
        "TileGrid",
        ut.TileGrid,
        lambda: {"image_size": (13, 9), "geometry": GEOMETRY, "align": "start"},
    ),
    ("tile_at", ut.tile_at, lambda: {"geometry": GEOMETRY, "output_start": (0, 0)}),
    (
        "mirror_pad",
        ut.mirror_pad,
        lambda: {"x": image(), "padding": ((1, 2), (3, 4)), "mode": "reflect"},
    ),
    (
        "crop_tile",
        ut.crop_tile,
        lambda: {"inpt": image(), "box": ((-2, 5), (0, 12)), "mode": "symmetric"},
    ),
    (
        "MirrorExtrapolate",
        ut.MirrorExtrapolate,
        lambda: {"padding": 3, "mode": "reflect", "mask_fill": 0},
    ),
    (
        "OverlapTileCrop",
        ut.OverlapTileCrop,
        lambda: {"geometry": GEOMETRY, "index": 0, "align": "center"},
    ),
    (
        "PairedTileCrop",
        ut.PairedTileCrop,
        lambda: {"geometry": GEOMETRY, "index": 0, "mask_fill": 255},
    ),
    (
        "plan_geometry",
        ut.plan_geometry,
        lambda: {"image_size": (500, 300), "max_input_size": 600, "depth": 3},
    ),
    (
        "predict_tiled",
        ut.predict_tiled,
        lambda: {
            "model": torch.nn.Conv2d(1, 2, 5),
            "image": image(),
            "geometry": ut.TileGeometry(12, 8),
            "batch_size": 2,
            "resume": False,
        },
    ),
    (
        "TileMerger",
        ut.TileMerger,
        lambda: {
            "grid": ut.TileGrid((13, 9), GEOMETRY),
            "blend": "gaussian",
            "output": "labels",
            "region": ((0, 5), (0, 9)),
            "resume": False,
        },
    ),
    (
        "TiledDataset",
        ut.TiledDataset,
        lambda: {
            "dataset": [(image(), torch.zeros(13, 9, dtype=torch.long))],
            "geometry": GEOMETRY,
            "mode": "reflect",
        },
    ),
    ("UNet", UNet, lambda: {"in_channels": 1, "out_channels": 2, "depth": 1, "base_channels": 2}),
    (
        "unet_weight_map",
        ut.unet_weight_map,
        lambda: {
            "instances": torch.tensor([[1, 0, 2]]),
            "w0": 10.0,
            "sigma": 5.0,
            "background": 0,
        },
    ),
    (
        "weighted_cross_entropy",
        losses.weighted_cross_entropy,
        lambda: {
            "logits": torch.zeros(1, 2, 3, 3),
            "target": torch.zeros(1, 3, 3, dtype=torch.long),
            "weights": torch.ones(1, 3, 3),
            "reduction": "mean",
        },
    ),
    (
        "draw_tiles",
        viz.draw_tiles,
        lambda: {
            "image": np.zeros((40, 30), np.uint8),
            "geometry": ut.TileGeometry(20, 12),
            "scale": 1.0,
        },
    ),
    (
        "from_config",
        ut.from_config,
        lambda: {
            "config": {
                "_target_": "unet_transforms.TileGeometry",
                "input_size": 12,
                "output_size": 8,
            }
        },
    ),
]


def names_the_argument(message: str, name: str) -> bool:
    return name in message or name.replace("_", " ") in message


@pytest.mark.parametrize(("label", "function", "valid"), CASES, ids=[c[0] for c in CASES])
@given(data=st.data())
def test_malformed_arguments_give_value_or_type_errors(label, function, valid, data):
    kwargs = valid()
    function(**kwargs)  # the valid call works
    name = data.draw(st.sampled_from(sorted(kwargs)), label="argument")
    kwargs[name] = data.draw(MALFORMED, label="value")
    try:
        function(**kwargs)
    except (ValueError, TypeError) as error:
        message = str(error)
    else:
        return  # a malformed-looking value may still be valid (None for an optional one)
    assert names_the_argument(message, name), f"{label}({name}=...): {message}"


COMMANDS = [
    ["plan", "--image-size", "{v}", "512", "--unet-input", "572"],
    ["plan", "--image-size", "512", "512", "--unet-input", "{v}"],
    ["plan", "--image-size", "512", "512", "--unet-input", "572", "--depth", "{v}"],
    ["plan", "--image-size", "512", "512", "--input-size", "{v}", "--output-size", "8"],
    ["segment", "{v}", "--checkpoint", "{v}", "-o", "{v}"],
    ["preview", "{v}", "-o", "x.png", "--unet-input", "572"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@given(value=st.sampled_from(["1e30", "-5", "0", "nan", "x", "", "1.5", "99999999999999999999"]))
def test_malformed_command_lines_give_one_line(command, value, tmp_path_factory):
    argv = [part.replace("{v}", value) for part in command]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own usage errors
            code = int(e.code or 0)
    if code != 0:
        assert "Traceback" not in err.getvalue()
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert 1 <= len(lines) <= 3, err.getvalue()  # argparse: usage + error


def test_tensors_without_dense_data_are_refused_by_mirror_pad():
    for x, kind in (
        (torch.zeros(3, 3).to_sparse(), "sparse"),
        (torch.zeros(3, 3, device="meta"), "meta tensor"),
    ):
        with pytest.raises(TypeError, match=rf"x must be a dense tensor .*{kind}"):
            ut.mirror_pad(x, ((1, 1), (1, 1)))


def test_positions_beyond_int64_are_named():
    from unet_transforms.functional import mirror_index

    for positions in ([2**70], range(2**70, 2**70 + 2), [[1, 2**80]]):
        with pytest.raises(ValueError, match="positions must fit in int64"):
            mirror_index(positions, 5)


def test_pil_modes_without_a_conversion_are_named():
    import PIL.Image

    with pytest.raises(TypeError, match="image in PIL mode 'La' cannot be drawn"):
        viz.draw_tiles(PIL.Image.new("La", (20, 20)), ut.TileGeometry(12, 8))
