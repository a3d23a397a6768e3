"""TiledDataset items from memory-mapped images: read the window, not the image.

Five 2000 x 3000 float32 images with uint8 labels, saved as .npy and opened with
``np.load(mmap_mode="r")`` (read-only memory maps; the files are in the page cache
after the warm-up, so this measures copies, not the disk), TileGeometry.unet(572) (388
output). Per item: a random tile and a grid tile from the memory maps, the same from
in-memory tensors, the floor (slicing and copying the two windows out of the memory
map, at random positions: first touches of a memory map's pages cost page faults), and what a dataset that reads its whole sample per item costs (``np.array`` of
the memory maps, then the crop: what TiledDataset did before).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from unet_transforms import PairedTileCrop, TiledDataset, TileGeometry

from _common import footer, header, parser, round_robin, table


def main() -> None:
    args = parser(__doc__.split("\n")[0]).parse_args()
    header(args)
    count, (h, w) = (2, (1000, 1500)) if args.quick else (5, (2000, 3000))
    repeats = 5 if args.quick else args.repeats
    geometry = TileGeometry.unet(input_size=572)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        mapped = []
        for i in range(count):
            np.save(Path(tmp) / f"image{i}.npy", rng.random((1, h, w), dtype=np.float32))
            np.save(Path(tmp) / f"label{i}.npy", rng.integers(0, 3, (h, w), dtype=np.uint8))
            mapped.append(
                (
                    np.load(Path(tmp) / f"image{i}.npy", mmap_mode="r"),
                    np.load(Path(tmp) / f"label{i}.npy", mmap_mode="r"),
                )
            )
        in_memory = [
            (torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))) for x, y in mapped
        ]
        sizes = [(h, w)] * count
        random_mapped = TiledDataset(mapped, geometry, index="random", tiles_per_epoch=10**6)
        grid_mapped = TiledDataset(mapped, geometry, sizes=sizes)
        random_memory = TiledDataset(in_memory, geometry, index="random", tiles_per_epoch=10**6)
        crop = PairedTileCrop(geometry, index="random")
        a, b = h // 2, w // 3
        image, label = mapped[count // 2]
        inside = next(  # an interior grid tile of the middle image (no mirroring)
            t.index
            for t in grid_mapped.grids[count // 2]
            if all(lo >= 0 and hi <= n for (lo, hi), n in zip(t.input_box, (h, w), strict=True))
        )
        middle = grid_mapped.offsets[count // 2] + inside

        def floor() -> object:  # a random window inside a random image, as the items
            x, y = mapped[int(torch.randint(count, ()))]
            a, b = (int(torch.randint(n - 572, ())) for n in (h, w))
            return (
                np.array(x[:, a : a + 572, b : b + 572]),
                np.array(y[a + 92 : a + 480, b + 92 : b + 480]),
            )

        def floor_fixed() -> object:  # one window: its pages stay mapped
            return (
                np.array(image[:, a : a + 572, b : b + 572]),
                np.array(label[a + 92 : a + 480, b + 92 : b + 480]),
            )

        def whole_sample() -> object:
            return crop(torch.from_numpy(np.array(image)), torch.from_numpy(np.array(label)))

        results = round_robin(
            {
                "floor: slice + copy of the windows": floor,
                "floor, always the same window": floor_fixed,
                "TiledDataset random, memmap": lambda: random_mapped[0],
                "TiledDataset grid, memmap": lambda: grid_mapped[middle],
                "TiledDataset random, tensors": lambda: random_memory[0],
                "whole sample read + crop, memmap": whole_sample,
            },
            repeats,
        )
        table(results, "floor: slice + copy of the windows")
        print(
            f"# {count} images of {h} x {w}: {len(grid_mapped)} grid tiles per epoch, each "
            f"reading a {geometry.input_size} and a {geometry.output_size} window"
        )
    footer()


if __name__ == "__main__":
    main()
