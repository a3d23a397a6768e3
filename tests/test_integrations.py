"""Dataset definitions in the tools users configure with: Hydra, Lightning, LightningCLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision import tv_tensors

from unet_transforms import from_config, to_config

ROOT = Path(__file__).resolve().parents[1]
TRAIN_YAML = ROOT / "examples" / "configs" / "train.yaml"


def write_folders(root: Path) -> None:
    for sub in ("images", "masks"):
        (root / "out" / "coins" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 230), dtype=np.uint8)
    PIL.Image.fromarray(image).save(root / "out" / "coins" / "images" / "a.png")
    PIL.Image.fromarray((image > 128).astype(np.uint8)).save(
        root / "out" / "coins" / "masks" / "a.png"
    )


def test_hydra_and_from_config_build_the_same_training_setup(tmp_path, monkeypatch):
    write_folders(tmp_path)
    monkeypatch.chdir(tmp_path)  # the file's folders are relative
    ours = from_config(yaml.safe_load(TRAIN_YAML.read_text()))
    hydras = instantiate(OmegaConf.load(TRAIN_YAML))
    assert ours["geometry"] == hydras["geometry"]
    assert ours["model"].to_config() == hydras["model"].to_config()
    assert to_config(ours["dataset"]) == to_config(hydras["dataset"])
    assert OmegaConf.to_container(hydras["train"]) == ours["train"]
    # the same samples under the same seed
    for seed in range(3):
        torch.manual_seed(seed)
        a = ours["dataset"][0]
        torch.manual_seed(seed)
        b = hydras["dataset"][0]
        for x, y in zip(a, b, strict=True):
            assert type(x) is type(y) and torch.equal(x, y)
    image, mask = a
    assert isinstance(image, tv_tensors.Image) and image.shape == (1, 212, 212)
    assert image.dtype == torch.float32 and isinstance(mask, tv_tensors.Mask)
    assert mask.shape == (124, 124)
    # and the config written back is the file's, anchors resolved
    written = {k: to_config(v) for k, v in ours.items() if k != "train"}
    assert written == {
        k: v for k, v in yaml.safe_load(TRAIN_YAML.read_text()).items() if k != "train"
    }


def run_app(*args: str, block_omegaconf: bool = False, cwd: Path | None = None) -> str:
    prelude = "import sys; sys.modules['omegaconf'] = None; " if block_omegaconf else ""
    code = (
        f"{prelude}import runpy, sys; sys.argv = ['lightning_app.py', *{list(args)!r}]; "
        f"runpy.run_path({str(ROOT / 'tests' / 'lightning_app.py')!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    ("how", "block_omegaconf"),
    [("object", False), ("dict", False), ("object", True), ("dict", True)],
    ids=["object-omegaconf", "dict-omegaconf", "object-no-omegaconf", "dict-no-omegaconf"],
)
def test_lightning_save_hyperparameters_writes_plain_yaml(tmp_path, how, block_omegaconf):
    run_app(how, str(tmp_path), block_omegaconf=block_omegaconf)
    (hparams,) = tmp_path.glob("**/hparams.yaml")
    text = hparams.read_text()
    assert "!!python" not in text
    geometry = yaml.safe_load(text)["geometry"]
    if how == "object":
        assert geometry == {
            "_target_": "unet_transforms.TileGeometry",
            "input_size": 44,
            "output_size": 28,
        }
    else:
        assert geometry == {"input_size": 44, "output_size": 28}
    assert from_config({"g": geometry})["g"] is not None


def test_lightning_cli_print_config_round_trips(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "data:\n"
        "  geometry:\n"
        "    class_path: unet_transforms.TileGeometry\n"
        "    init_args: {input_size: 212, output_size: 124}\n"
    )
    printed = run_app("cli", "--config", str(config), "--print_config")
    data = yaml.safe_load(printed)["data"]
    assert data["geometry"]["init_args"]["input_size"] == 212  # an int where a size goes
    (tmp_path / "printed.yaml").write_text(printed)
    out = run_app("cli", "--config", str(tmp_path / "printed.yaml"))
    line = next(line for line in out.splitlines() if line.startswith("GEOMETRY"))
    assert json.loads(line.removeprefix("GEOMETRY ")) == {
        "_target_": "unet_transforms.TileGeometry",
        "input_size": 212,
        "output_size": 124,
        "step": None,
    }


def test_lightning_writes_a_tile_grid_hyperparameter(tmp_path):
    """Lightning's hparams handling refuses frozen dataclasses; TileGrid is a plain value."""
    from lightning.pytorch.core.saving import save_hparams_to_yaml

    from unet_transforms import TileGeometry, TileGrid

    grid = TileGrid((100, 90), TileGeometry(44, 28), align="start")
    save_hparams_to_yaml(tmp_path / "hparams.yaml", {"grid": grid})
    written = yaml.safe_load((tmp_path / "hparams.yaml").read_text())["grid"]
    assert from_config(written) == grid
