"""Generates the documentation's pictures into docs/images/ with draw_tiles.

Run by ``make docs``; the pictures are build output and not committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet_transforms import TileGeometry
from unet_transforms.viz import draw_tiles

OUT = Path(__file__).resolve().parents[1] / "images"


def sample_image() -> np.ndarray:
    """A real photograph (scikit-image's coins), resized to 512 x 512."""
    from skimage import data, transform

    coins = data.coins().astype(np.float32)
    return transform.resize(coins, (512, 512), preserve_range=True).astype(np.uint8)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    image = sample_image()
    figures = {
        "paper-512.png": (image, TileGeometry(572, 388), "start", "all"),
        "exact-512.png": (image, TileGeometry.unet(input_size=572), "center", "all"),
        "one-tile-512.png": (image, TileGeometry.unet(input_size=572), "center", [0]),
        "small-100x140.png": (image[200:300, 150:290], TileGeometry(572, 388), "center", "all"),
    }
    for name, (picture, geometry, align, tiles) in figures.items():
        draw_tiles(picture, geometry, align=align, tiles=tiles, scale=0.5).save(OUT / name)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
