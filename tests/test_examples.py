"""The README example and the examples/ scripts run and pass their own self-checks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2  # the example, then the config route building on it
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["crop"].to_config()["mask_fill"] == 255
    logits, tile, label = namespace["logits"], namespace["tile"], namespace["label"]
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1000, 700)
    assert tile.shape == (1, 572, 572) and label.shape == (388, 388)


# Pages whose Python blocks run in about a second; the others read files the reader
# brings (huge-images) or segment large images (inference, same-padding, volumes-3d).
QUICK_PAGES = [
    "index.md",
    "overlap-tile.md",
    "tiled-dataset.md",
    "training.md",
    "weight-map.md",
    "configuration.md",
    "sampling.md",
    "command-line.md",
    "recipe.md",
]


@pytest.mark.parametrize("page", QUICK_PAGES)
def test_docs_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may save pictures
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), re.S)
    assert blocks, f"{page} has no Python block"
    namespace: dict[str, object] = {}
    for block in blocks:  # a page's blocks build on each other, as a reader runs them
        exec(compile(block, f"docs/{page}", "exec"), namespace)


def run_example(
    script: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs ``examples/<script>`` with ``args``; fails the test on a non-zero exit."""
    command = [sys.executable, str(ROOT / "examples" / script), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_train_unet_smoke(tmp_path):
    args = ("--steps", "3", "--batch-size", "2", "--threads", "1", "--out", str(tmp_path))
    result = run_example("train_unet.py", *args)
    assert "pixel accuracy" in result.stdout
    for name in ("input.png", "labels.png", "prediction.png", "tiles.png"):
        with PIL.Image.open(tmp_path / name) as picture:
            assert picture.width > 300
    assert (tmp_path / "model.pt").stat().st_size > 1000


def test_train_unet_paper_recipe_smoke(tmp_path):
    args = ("--recipe", "paper", "--steps", "3", "--batch-size", "2", "--threads", "1")
    result = run_example("train_unet.py", *args, "--out", str(tmp_path))
    border = re.search(r"weight map: (\d+) pixels between neighbouring coins", result.stdout)
    assert border is not None and int(border.group(1)) > 50, result.stdout
    accuracy = re.search(r"border accuracy (\d\.\d{4}) between neighbouring coins", result.stdout)
    assert accuracy is not None and 0.0 <= float(accuracy.group(1)) <= 1.0, result.stdout
    assert "pixel accuracy" in result.stdout and (tmp_path / "model.pt").stat().st_size > 1000


def test_train_unet_from_the_config_file(tmp_path):
    config = ROOT / "examples" / "configs" / "train.yaml"
    args = ("--config", str(config), "--steps", "2", "--threads", "1", "--out", "run")
    args += ("--batch-size", "3")  # overrides the config's batch size
    result = run_example("train_unet.py", *args, cwd=tmp_path)
    assert (
        f"from {config}: TileGeometry(input_size=212, output_size=124, step=120)" in result.stdout
    )
    assert (tmp_path / "out" / "coins" / "images" / "coins.png").exists()  # data written
    assert "training 2 steps of 3 tiles" in result.stdout
    assert "pixel accuracy" in result.stdout and (tmp_path / "run" / "model.pt").exists()


def test_example_options_are_checked():
    # --steps 0 trained forever on the paper and config paths; --config dropped
    # --recipe silently; --windows -3 checked only the corner window
    for script, args, match in [
        (
            "train_unet.py",
            ("--recipe", "paper", "--steps", "0"),
            "--steps must be a positive int, got 0",
        ),
        ("train_unet.py", ("--batch-size", "0"), "--batch-size must be a positive int, got 0"),
        ("train_unet.py", ("--threads", "-1"), "--threads must be a positive int, got -1"),
        (
            "train_unet.py",
            ("--config", "x.yaml", "--recipe", "paper"),
            "with --config the file defines it",
        ),
        ("whole_slide.py", ("--windows", "-3"), "--windows must be >= 0, got -3"),
    ]:
        command = [sys.executable, str(ROOT / "examples" / script), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and match in result.stderr, (args, result.stderr)


def test_whole_slide_example_smoke(tmp_path):
    args = ("--size", "512", "--chunk", "256", "--workers", "2", "--windows", "1")
    result = run_example("whole_slide.py", *args, "--out", str(tmp_path / "ws"))
    assert "MP/s" in result.stdout and "peak RSS" in result.stdout
    assert "match predict_tiled" in result.stdout
