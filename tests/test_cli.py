"""The unet-transforms command line, run as a user would (subprocess)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from unet_transforms import TileGeometry, TileGrid
from unet_transforms.cli import main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unet_transforms", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def run_here(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs the command in this process (fast); same exit status and output as a subprocess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess[str], match: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert match in lines[0], lines[0]


def test_plan_json_matches_the_grid():
    result = run("plan", "--image-size", "512", "512", "--unet-input", "572", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    grid = TileGrid(512, TileGeometry.unet(input_size=572))
    assert report["tiles"] == [2, 2] and report["num_tiles"] == 4
    assert report["padding"] == [list(p) for p in grid.padding]
    assert report["canvas_size"] == [956, 956]
    assert report["step"] == [384, 384]
    assert report["cost_ratio"] == pytest.approx(4 * 572 * 572 / (512 * 512))


def test_plan_table_for_the_paper_geometry():
    result = run(
        "plan",
        "--image-size",
        "512",
        "512",
        "--input-size",
        "572",
        "--output-size",
        "388",
        "--align",
        "start",
    )
    assert result.returncode == 0, result.stderr
    assert "2 x 2 = 4" in result.stdout
    assert "92+356 x 92+356" in result.stdout
    assert "960 x 960" in result.stdout


def test_plan_3d():
    result = run(
        "plan",
        "--image-size",
        "60",
        "300",
        "300",
        "--unet-input",
        "116",
        "132",
        "132",
        "--depth",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output_size"] == [28, 44, 44]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            ("plan", "--image-size", "512", "512", "--unet-input", "570"),
            "nearest valid input sizes: 556 or 572",
        ),
        (("plan", "--image-size", "512"), "--image-size takes 2 or 3 sizes"),
        (
            ("plan", "--image-size", "512", "512"),
            "give --unet-input N, or both --input-size and --output-size",
        ),
        (
            ("plan", "--image-size", "512", "512", "--input-size", "10", "--output-size", "20"),
            "output_size must not exceed input_size",
        ),
        (("plan", "--image-size", "5x5"), "invalid int value"),
        (
            ("preview", "missing.png", "-o", "x.png", "--unet-input", "572"),
            "image file not found: missing.png",
        ),
        (
            ("segment", "in.png", "--checkpoint", "m.pt", "-o", "x.png"),
            "checkpoint file not found: m.pt",
        ),
        (("frobnicate",), "invalid choice"),
        (
            ("plan", "--image-size", "512", "512", "--unet-input", "572", "--step", "100"),
            "--step is derived from --unet-input",
        ),
        (
            (
                "plan",
                "--image-size",
                "64",
                "64",
                "--input-size",
                "12",
                "--output-size",
                "8",
                "--depth",
                "3",
            ),
            "--depth and --convs-per-level go with --unet-input",
        ),
        (
            (
                "plan",
                "--image-size",
                "9",
                "9",
                "9",
                "--input-size",
                "12",
                "12",
                "--output-size",
                "8",
            ),
            "--input-size takes 1 or 3 sizes for a 3-D image, got 2",
        ),
        (
            ("plan", "--image-size", "9", "9", "--unet-input", "572", "--mode", "symmetric"),
            "unrecognized arguments: --mode symmetric",
        ),
        (
            ("preview", "in.png", "-o", ".", "--unet-input", "572"),
            "-o/--output must be a file name such as mask.png, got a directory",
        ),
        (
            ("preview", "in.png", "-o", "t.png", "--unet-input", "572", "--scale", "0"),
            "scale must be a positive finite number, got 0.0",
        ),
        (
            ("preview", "in.png", "-o", "t.png", "--unet-input", "572", "--scale", "1e5"),
            "use a smaller scale",
        ),
        (
            ("preview", "in.png", "-o", "out/noext", "--unet-input", "572"),
            "-o/--output needs an image file extension such as .png or .tif, got 'out/noext'",
        ),
        (
            ("preview", "in.png", "-o", "in.png/x.png", "--unet-input", "572"),
            "in.png is a file, not a folder",
        ),
    ],
)
def test_bad_arguments_give_one_clear_line(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    assert_one_line_error(run_here(*args), match)


def test_a_bad_argument_in_a_real_process(tmp_path):
    assert_one_line_error(
        run("plan", "--image-size", "5", "5", "--unet-input", "570", cwd=tmp_path), "556 or 572"
    )


def test_unreadable_image_and_checkpoint(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert_one_line_error(
        run_here("preview", str(bad), "-o", str(tmp_path / "t.png"), "--unet-input", "572"),
        "cannot read",
    )
    good = tmp_path / "good.png"
    PIL.Image.fromarray(np.zeros((40, 50), dtype=np.uint8)).save(good)
    not_a_checkpoint = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, not_a_checkpoint)
    assert_one_line_error(
        run(
            "segment",
            str(good),
            "--checkpoint",
            str(not_a_checkpoint),
            "-o",
            str(tmp_path / "m.png"),
        ),
        "is not a unet-transforms checkpoint",
    )


def test_segment_and_preview_with_a_saved_checkpoint(tmp_path):
    from unet_transforms.checkpoint import load_checkpoint, save_checkpoint
    from unet_transforms.models import UNet

    torch.manual_seed(0)
    model = UNet(1, 3, depth=2, base_channels=2)
    geometry = model.geometry(input_size=60)
    save_checkpoint(tmp_path / "m.pt", model, geometry, metadata={"mean": 0.5, "std": 0.25})
    loaded, loaded_geometry, meta = load_checkpoint(tmp_path / "m.pt")
    assert loaded_geometry == geometry and meta == {"mean": 0.5, "std": 0.25}
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    image = np.random.default_rng(0).integers(0, 255, (45, 70), dtype=np.uint8)
    PIL.Image.fromarray(image).save(tmp_path / "in.png")
    result = run(
        "segment",
        str(tmp_path / "in.png"),
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "-o",
        str(tmp_path / "out" / "mask.png"),
    )
    assert result.returncode == 0, result.stderr
    with PIL.Image.open(tmp_path / "out" / "mask.png") as written:
        labels = np.asarray(written)
    x = (torch.from_numpy(image).float()[None] / 255.0 - 0.5) / 0.25
    from unet_transforms import predict_tiled

    expected = predict_tiled(loaded, x, geometry).argmax(0).numpy()
    assert labels.shape == (45, 70)
    np.testing.assert_array_equal(labels, expected)
    preview = run_here(
        "preview",
        str(tmp_path / "in.png"),
        "-o",
        str(tmp_path / "t.png"),
        "--unet-input",
        "60",
        "--depth",
        "2",
    )
    assert preview.returncode == 0, preview.stderr
    with PIL.Image.open(tmp_path / "t.png") as picture:
        assert picture.size == TileGrid((45, 70), geometry).padded_size[::-1]


def test_tiff_layouts_follow_the_files_axes(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from unet_transforms.cli import read_image

    rng = np.random.default_rng(0)
    cases = [
        ((20, 30), {}, (1, 20, 30)),
        ((20, 30, 3), {}, (3, 20, 30)),  # interleaved RGB
        ((3, 20, 30), {"photometric": "rgb", "planarconfig": "separate"}, (3, 20, 30)),
        ((5, 20, 30), {}, (1, 5, 20, 30)),  # pages: a volume
        ((5, 20, 3), {"photometric": "minisblack"}, (1, 5, 20, 3)),  # a thin volume, not RGB
        ((20, 30, 4), {}, (3, 20, 30)),  # RGBA: alpha dropped
        ((4, 20, 30, 3), {"photometric": "rgb"}, (3, 4, 20, 30)),  # an RGB volume
        ((4, 20, 30), {"imagej": True, "metadata": {"axes": "CYX"}}, (4, 20, 30)),  # channels
        ((20, 30, 2), {"photometric": "minisblack", "extrasamples": ["unassalpha"]}, (1, 20, 30)),
        ((20, 30, 4), {"photometric": "separated"}, (4, 20, 30)),  # CMYK: kept raw
    ]
    for k, (shape, options, expected) in enumerate(cases):
        array = rng.integers(0, 255, shape, dtype=np.uint8)
        path = str(tmp_path / f"{k}.tif")
        tifffile.imwrite(path, array, **options)
        out = read_image(path)
        assert out.shape == expected, (shape, options)
        assert out.dtype == np.uint8 and set(np.unique(out)) <= set(np.unique(array))
    tifffile.imwrite(
        tmp_path / "4d.tif", np.zeros((2, 4, 20, 30), np.uint8), photometric="minisblack"
    )
    result = run_here(
        "preview", str(tmp_path / "4d.tif"), "-o", str(tmp_path / "p.png"), "--unet-input", "572"
    )
    assert_one_line_error(result, "unsupported TIFF layout")


def test_segment_refuses_what_it_cannot_write_or_run(tmp_path):
    from unet_transforms.checkpoint import save_checkpoint
    from unet_transforms.models import UNet

    model = UNet(1, 2, depth=1, base_channels=1, ndim=3)
    save_checkpoint(tmp_path / "m3.pt", model, model.geometry(input_size=18))
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "vol.tif", np.zeros((6, 20, 20), np.uint8))
    args = ("segment", str(tmp_path / "vol.tif"), "--checkpoint", str(tmp_path / "m3.pt"))
    assert_one_line_error(run_here(*args, "-o", str(tmp_path / "v.png")), "give -o *.tif")
    assert run_here(*args, "-o", str(tmp_path / "v.tif")).returncode == 0
    assert tifffile.imread(tmp_path / "v.tif").shape == (6, 20, 20)
    net = UNet(1, 2, depth=1, base_channels=1)
    save_checkpoint(
        tmp_path / "m.pt", net, net.geometry(input_size=18), metadata={"mean": 0.0, "std": 0}
    )
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    args = ("segment", str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "m.pt"))
    assert_one_line_error(run_here(*args, "-o", str(tmp_path / "o.png")), "std=0; expected > 0")
    save_checkpoint(tmp_path / "m.pt", net, net.geometry(input_size=18))
    assert_one_line_error(
        run_here(*args, "-o", str(tmp_path / "o.png"), "--device", "bogus"),
        "device must name a torch device such as 'cpu' or 'cuda:0', got 'bogus'",
    )
    assert_one_line_error(
        run_here(*args, "-o", str(tmp_path / "o.png"), "--device", "meta"), "--device meta"
    )
    if not torch.cuda.is_available():
        assert_one_line_error(
            run_here(*args, "-o", str(tmp_path / "o.png"), "--device", "cuda"),
            "cannot use --device cuda",
        )


def test_many_classes_are_written_as_16_bit_labels(tmp_path):
    from unet_transforms.checkpoint import save_checkpoint
    from unet_transforms.models import UNet

    torch.manual_seed(0)
    net = UNet(1, 300, depth=1, base_channels=1)
    with torch.no_grad():
        net.head.bias.zero_()
        net.head.bias[280] = 100.0  # every pixel is class 280
    save_checkpoint(tmp_path / "m.pt", net, net.geometry(input_size=18))
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    result = run_here(
        "segment",
        str(tmp_path / "in.png"),
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "-o",
        str(tmp_path / "o.png"),
    )
    assert result.returncode == 0, result.stderr
    with PIL.Image.open(tmp_path / "o.png") as written:
        assert np.asarray(written).max() == 280 and np.asarray(written).min() == 280
