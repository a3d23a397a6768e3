"""A tiny LightningDataModule and LightningModule that take a tile geometry (object or
dict), as a user's dataset definition does; run by tests/test_integrations.py in fresh
interpreters (with and without omegaconf importable)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from unet_transforms import PairedTileCrop, TileGeometry
from unet_transforms.models import UNet


class TileData(L.LightningDataModule):
    def __init__(self, geometry: TileGeometry | Mapping[str, Any], batch_size: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.crop = PairedTileCrop(geometry, mask_fill=0)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        generator = torch.Generator().manual_seed(0)
        samples = [
            (
                torch.rand(1, 50, 40, generator=generator),
                torch.randint(0, 2, (50, 40), generator=generator),
            )
            for _ in range(4)
        ]
        tiles = [self.crop(image, label) for image, label in samples]
        return torch.utils.data.DataLoader(tiles, batch_size=self.hparams.batch_size)


class TileNet(L.LightningModule):
    def __init__(self, depth: int = 1, base_channels: int = 2) -> None:
        super().__init__()
        self.net = UNet(1, 2, depth=depth, base_channels=base_channels)

    def training_step(self, batch: Any, index: int) -> torch.Tensor:
        image, label = batch
        return torch.nn.functional.cross_entropy(self.net(image), label.long())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(geometry: Any, root: str) -> None:
    trainer = L.Trainer(
        max_epochs=1,
        logger=L.pytorch.loggers.CSVLogger(root),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(TileNet(), datamodule=TileData(geometry))


if __name__ == "__main__":
    if sys.argv[1] == "cli":
        from lightning.pytorch.cli import LightningCLI

        cli = LightningCLI(
            TileNet, TileData, run=False, args=sys.argv[2:], save_config_callback=None
        )
        print("GEOMETRY", json.dumps(cli.datamodule.crop.geometry.to_config()))
    else:
        how, root = sys.argv[1], sys.argv[2]
        geometry = (
            TileGeometry(44, 28) if how == "object" else {"input_size": 44, "output_size": 28}
        )
        fit(geometry, root)
