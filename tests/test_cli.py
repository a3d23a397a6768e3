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
        (("segment", "missing.png", "--checkpoint", "m.pt", "-o", "x.png"), "not found"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments_give_one_clear_line(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
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
