"""Elastic deformation inside the crop: PairedTileCrop(deform=) vs deforming the whole image.

4096 x 4096 float32 image + int64 mask, TileGeometry(572, 388), the paper's deformation
(3 x 3 grid, sigma 10 px). References: one ``grid_sample`` of a 572^2 tile (the floor of
any resampling) with a smooth grid (the paper's deformation, drawn ahead: 16 fields used
in turn, each over a 620^2 region as the crop reads) and, for information, with a random
grid (every output pixel reads anywhere: cache-unfriendly) and bicubic with the rotated,
scaled, flipped fields of the last crop (over a 1024^2 region); the plain crop;
torchvision's ``v2.ElasticTransform`` on the whole image followed by the crop (the only
way torchvision keeps image and label aligned), and MONAI's ``Rand2DElasticd``
(resamples straight to a 572^2 output; image and label must share that size, so a 388^2
label needs a second crop).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from unet_transforms import PairedTileCrop
from unet_transforms.deformation import Deformation

from _common import footer, header, paired_sample, parser, round_robin, table


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls, in seconds (for the slow whole-image candidates)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def smooth_grid(n: int, deform: Deformation | None = None) -> torch.Tensor:
    """``grid_sample``'s grid of one deformation (the paper's by default) of a 572^2
    window, over an ``n``^2 region centred on it (``align_corners``), as the crop reads it."""
    coords = (deform or Deformation()).sample((572, 572)) + (n - 572) / 2
    return (coords * (2 / (n - 1)) - 1).flip(0).permute(1, 2, 0)[None].contiguous()


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--slow-repeats", type=int, default=2, help="repeats of the whole-image ones")
    args = p.parse_args()
    header(args)
    _, geometry, image, mask = paired_sample(args.quick)
    repeats = 5 if args.quick else args.repeats

    tile = torch.rand(1, 1, 572, 572)
    random_grid = torch.rand(1, 572, 572, 2) * 2 - 1
    region = torch.rand(1, 1, 620, 620)
    smooth_grids = [smooth_grid(region.shape[-1]) for _ in range(16)]
    full_deform = Deformation(
        rotation=180.0, scale=(0.8, 1.25), flip=True, interpolation="bicubic"
    )
    full_region = torch.rand(1, 1, 1024, 1024)  # a rotated, shrunk window reaches ~1011 px
    full_grids = [smooth_grid(full_region.shape[-1], full_deform) for _ in range(16)]
    turn = iter(range(10**9))
    full_turn = iter(range(10**9))

    def one_grid_sample() -> object:
        grid = smooth_grids[next(turn) % len(smooth_grids)]
        return F.grid_sample(region, grid, padding_mode="border", align_corners=True)

    def one_full_grid_sample() -> object:
        grid = full_grids[next(full_turn) % len(full_grids)]
        return F.grid_sample(
            full_region, grid, mode="bicubic", padding_mode="border", align_corners=True
        )

    def one_random_grid_sample() -> object:
        return F.grid_sample(tile, random_grid, align_corners=True)

    plain = PairedTileCrop(geometry)
    paper = PairedTileCrop(geometry, deform=Deformation())
    full = PairedTileCrop(geometry, deform=full_deform)
    candidates: dict[str, Callable[[], object]] = {
        "one grid_sample 572^2": one_grid_sample,
        "one grid_sample 572^2, random grid": one_random_grid_sample,
        "one grid_sample 572^2 bicubic, rot+scale+flip grid": one_full_grid_sample,
        "PairedTileCrop (no deform)": lambda: plain(image, mask),
        "PairedTileCrop deform (paper)": lambda: paper(image, mask),
        "PairedTileCrop deform (rot+scale+flip, bicubic)": lambda: full(image, mask),
    }
    results = round_robin(candidates, repeats)

    elastic = v2.Compose([v2.ElasticTransform(), PairedTileCrop(geometry)])
    slow = {"v2.ElasticTransform whole image + crop": lambda: elastic(image, mask)}
    try:
        from monai.transforms import Rand2DElasticd

        monai_tf = Rand2DElasticd(
            keys=["image", "label"],
            spacing=(286, 286),  # control points 286 px apart: a 3 x 3 grid over the tile
            magnitude_range=(10, 10),
            prob=1.0,
            spatial_size=(572, 572),
            mode=("bilinear", "nearest"),
            padding_mode="reflection",
        )
        sample = {"image": image.as_subclass(torch.Tensor), "label": mask[None].float()}

        def monai_call() -> object:
            out = monai_tf(sample)
            return out["image"], out["label"][:, 92:480, 92:480]

        slow["MONAI Rand2DElasticd 572^2 (+ label crop)"] = monai_call
    except ImportError:
        print("# monai not installed: skipped (pip install -c constraints.txt monai)")
    for name, fn in slow.items():
        fn()  # warm-up
        results[name] = best_of(fn, args.slow_repeats)
    table(results, "one grid_sample 572^2")
    deform = results["PairedTileCrop deform (paper)"]
    print(
        f"# deform / one grid_sample (smooth grid): "
        f"{deform / results['one grid_sample 572^2']:.2f} (target <= 3)"
    )
    full_ratio = (
        results["PairedTileCrop deform (rot+scale+flip, bicubic)"]
        / results["one grid_sample 572^2 bicubic, rot+scale+flip grid"]
    )
    print(f"# deform (rot+scale+flip, bicubic) / its own grid_sample: {full_ratio:.2f}")
    for name in slow:
        print(f"# {name} / deform: {results[name] / deform:.1f}x")
    footer()


if __name__ == "__main__":
    main()
