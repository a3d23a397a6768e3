"""Tiled inference: predict_tiled vs the forward-only floor, a naive loop and TorchIO.

A small valid U-Net (base width 8, depth 4) with its exact geometry (572 in, 388 out,
step 384). The floor runs only ``model(x)`` over the same, pre-extracted tiles. Per-tile
times at batch sizes 1, 2 and 4 justify ``predict_tiled``'s default batch size. The
test-time augmentation line compares ``tta="flips"`` (4 forwards per tile) with 4 plain
calls at the same forward batch size: the issue allows k forwards plus 3 %.
"""

from __future__ import annotations

import numpy as np
import torch

from unet_transforms import TileGrid, predict_tiled
from unet_transforms.merging import TileMerger
from unet_transforms.models import UNet

from _common import footer, header, parser, round_robin, table


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1024, help="image size (the target: 2048)")
    args = p.parse_args()
    header(args)
    n = 600 if args.quick else args.size
    repeats = 2 if args.quick else max(3, args.repeats // 5)
    torch.manual_seed(0)
    model = UNet(1, 2, depth=4, base_channels=8).eval()
    geometry = model.geometry(input_size=572)
    image = torch.rand(1, n, n)
    grid = TileGrid((n, n), geometry)
    tiles = torch.stack([grid.extract(image, i) for i in range(len(grid))])
    print(f"# image {n} x {n}, {geometry}, {len(grid)} tiles")

    def floor(batch: int):
        def run() -> None:
            with torch.inference_mode():
                for s in range(0, len(tiles), batch):
                    model(tiles[s : s + batch])

        return run

    def naive() -> torch.Tensor:
        padded = np.pad(image.numpy(), [(0, 0), *grid.padding], mode="reflect")
        merger = TileMerger(grid)
        before = [b for b, _ in grid.padding]
        with torch.inference_mode():
            for tile in grid:
                (y0, y1), (x0, x1) = tile.input_box
                window = padded[
                    :, y0 + before[0] : y1 + before[0], x0 + before[1] : x1 + before[1]
                ]
                merger.add(tile.index, model(torch.from_numpy(window.copy())[None])[0])
        return merger.result()

    candidates = {f"floor: forward only, batch {b}": floor(b) for b in (1, 2, 4)}
    for b in (1, 2, 4):
        candidates[f"predict_tiled, batch {b}"] = lambda b=b: predict_tiled(
            model, image, geometry, batch_size=b
        )
    candidates["predict_tiled, batch 1, output='labels'"] = lambda: predict_tiled(
        model, image, geometry, output="labels"
    )
    candidates["predict_tiled, batch 1, blend='gaussian'"] = lambda: predict_tiled(
        model, image, geometry, blend="gaussian"
    )
    for b in (1, 4):
        candidates[f"predict_tiled, batch {b}, tta='flips'"] = lambda b=b: predict_tiled(
            model, image, geometry, batch_size=b, tta="flips"
        )
    candidates["naive np.pad + loop"] = naive
    try:
        import torchio as tio

        def torchio_run() -> torch.Tensor:
            subject = tio.Subject(img=tio.ScalarImage(tensor=image[..., None]))
            margin = 2 * geometry.margin[0]
            sampler = tio.inference.GridSampler(
                subject, (572, 572, 1), (margin, margin, 0), padding_mode="reflect"
            )
            loader = torch.utils.data.DataLoader(sampler, batch_size=1)
            aggregator = tio.inference.GridAggregator(sampler, overlap_mode="crop")
            m = geometry.margin[0]
            with torch.inference_mode():
                for batch in loader:
                    x = batch["img"][tio.DATA][..., 0]
                    y = model(x)
                    # TorchIO's aggregator wants patch-sized outputs: zero-pad 388 -> 572
                    y = torch.nn.functional.pad(y, (m, m, m, m))[..., None]
                    aggregator.add_batch(y, batch[tio.LOCATION])
            return aggregator.get_output_tensor()

        candidates["TorchIO GridSampler+GridAggregator"] = torchio_run
    except ImportError:
        print("# torchio not installed: skipped")
    results = round_robin(candidates, repeats, warmup=1)
    best_floor = min(v for k, v in results.items() if k.startswith("floor"))
    results = {"best floor": best_floor, **results}
    table(results, "best floor", unit=1.0, label="s")
    print("\n# per tile (ms):")
    for k, v in results.items():
        print(f"#   {k}: {1000 * v / len(grid):.1f}")
    for b in (1, 4):
        ratio = results[f"predict_tiled, batch {b}, tta='flips'"] / (
            4 * results[f"predict_tiled, batch {b}"]
        )
        print(f"# TTA overhead, batch {b}: tta='flips' / (4 x plain) = {ratio:.3f}")
    footer()


if __name__ == "__main__":
    main()
