"""Generates the documentation's pictures into docs/images/ with draw_tiles.

Run by ``make docs`` before ``mkdocs build``. The output is deterministic and committed,
so the pages and the README show the pictures on the repository host too; rerun it after
changing ``draw_tiles``. The image is scikit-image's ``coins`` photograph when
scikit-image is installed (the ``examples`` extra), otherwise a synthetic pattern, so the
docs build without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet_transforms import TileGeometry, TileGrid
from unet_transforms.viz import draw_tiles

OUT = Path(__file__).resolve().parents[1] / "images"
SIZE = 512


def sample_image() -> np.ndarray:
    """A 512 x 512 uint8 image: the coins photograph, or a synthetic one without skimage."""
    try:
        from skimage import data, transform
    except ImportError:
        # discs of different brightness on a gradient: enough structure to see the mirroring
        y, x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
        image = 40 + 60 * x / SIZE
        for k, (cy, cx) in enumerate(((100, 120), (150, 380), (300, 200), (420, 420))):
            image[(y - cy) ** 2 + (x - cx) ** 2 < (40 + 10 * k) ** 2] = 120 + 35 * k
        return image.astype(np.uint8)
    coins = data.coins()  # 303 x 384
    # enlarge keeping the aspect ratio, then take the centre 512 columns
    factor = SIZE / coins.shape[0]
    width = round(coins.shape[1] * factor)
    big = transform.resize(coins, (SIZE, width), order=1, preserve_range=True)
    start = (width - SIZE) // 2
    return np.asarray(big[:, start : start + SIZE]).round().astype(np.uint8)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    image = sample_image()
    small = image[200:300, 150:290]  # 100 x 140: narrower than its padding (236, 216)
    paper = TileGeometry(572, 388)
    exact = TileGeometry.unet(input_size=572)
    figures = {
        "paper-512.png": (image, paper, "start", "all"),
        "exact-512.png": (image, exact, "center", "all"),
        "one-tile-512.png": (image, exact, "center", [0]),
        "small-100x140.png": (small, paper, "center", "all"),
    }
    for name, (picture, geometry, align, tiles) in figures.items():
        grid = TileGrid(picture.shape, geometry, align=align)
        drawn = draw_tiles(picture, geometry, align=align, tiles=tiles, scale=0.5)
        drawn.save(OUT / name)
        print(f"wrote {OUT / name}: {grid.shape} grid, canvas {grid.padded_size}")


if __name__ == "__main__":
    main()
