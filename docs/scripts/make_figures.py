"""Generates the documentation's pictures into docs/images/ with draw_tiles.

Run by ``make docs`` before ``mkdocs build``. The output is deterministic and committed,
so the pages and the README show the pictures on the repository host too; rerun it after
changing ``draw_tiles``. The image is scikit-image's ``coins`` photograph when
scikit-image is installed (the ``examples`` extra), otherwise a synthetic pattern, so the
docs build without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from torchvision import tv_tensors

from unet_transforms import Deformation, PairedTileCrop, TileGeometry, TileGrid
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


def train_example() -> ModuleType:
    """examples/train_unet.py as a module: its coins labels, instances and weight map."""
    path = OUT.parents[1] / "examples" / "train_unet.py"
    spec = importlib.util.spec_from_file_location("train_unet", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grey(array: np.ndarray) -> np.ndarray:
    """``array`` stretched to 0..255 uint8 over its own range."""
    low, high = float(array.min()), float(array.max())
    return ((array - low) / max(high - low, 1e-12) * 255).round().astype(np.uint8)


def tile_pair(tile: torch.Tensor, label: torch.Tensor, margin: int) -> PIL.Image.Image:
    """An input tile with its output window outlined, next to the label (grey: ignored)."""
    image = PIL.Image.fromarray(tile[0].numpy().round().astype(np.uint8)).convert("RGB")
    size = tile.shape[-1] - 1 - margin
    PIL.ImageDraw.Draw(image).rectangle((margin, margin, size, size), outline=(255, 200, 0))
    values = label.numpy()
    shown = np.where(values < 0, 128, values * 255).astype(np.uint8)
    canvas = PIL.Image.new("RGB", image.size, (40, 40, 40))
    canvas.paste(PIL.Image.fromarray(shown).convert("RGB"), (margin, margin))
    pair = PIL.Image.new("RGB", (2 * image.width + 4, image.height), (255, 255, 255))
    pair.paste(image, (0, 0))
    pair.paste(canvas, (image.width + 4, 0))
    return pair


def recipe_figures() -> None:
    """The recipe page's pictures: one tile pair plain and deformed, and the weight map."""
    example = train_example()
    image, labels = example.load_coins()
    gridded = image.copy()
    gridded[::24, :] = 255  # a grid drawn on the image shows the deformation
    gridded[:, ::24] = 255
    geometry = TileGeometry.unet(output_size=124, depth=3)  # the example's: input 212
    source = tv_tensors.Image(torch.from_numpy(gridded).float()[None])
    mask = tv_tensors.Mask(torch.from_numpy(labels))
    pairs = []
    for deform in (None, Deformation()):
        torch.manual_seed(3)
        crop = PairedTileCrop(geometry, index=1, deform=deform, mask_fill=-100)
        pairs.append(tile_pair(*crop(source, mask), geometry.margin[0]))
    figure = PIL.Image.new("RGB", (pairs[0].width, 2 * pairs[0].height + 4), (255, 255, 255))
    figure.paste(pairs[0], (0, 0))
    figure.paste(pairs[1], (0, pairs[0].height + 4))
    figure.save(OUT / "recipe-deformed-tile.png", optimize=True)

    weights, border = example.coin_weights(labels)
    panels = [image, grey(np.sqrt(weights)), np.where(border, 255, image // 3).astype(np.uint8)]
    row = np.full((image.shape[0], 3 * image.shape[1] + 8), 255, dtype=np.uint8)
    for k, panel in enumerate(panels):
        row[:, k * (image.shape[1] + 4) : k * (image.shape[1] + 4) + image.shape[1]] = panel
    PIL.Image.fromarray(row).save(OUT / "recipe-weight-map.png", optimize=True)
    print(f"wrote the recipe figures: max weight {weights.max():.2f}, {border.sum()} border px")


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
    try:
        import scipy  # noqa: F401
        import skimage  # noqa: F401
    except ImportError:
        print("scikit-image or scipy missing: the recipe figures are left as committed")
    else:
        recipe_figures()


if __name__ == "__main__":
    main()
