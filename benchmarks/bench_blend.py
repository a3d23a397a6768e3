"""Gaussian blending with a same-padding U-Net: predict_tiled against MONAI.

Both run the same windows: ``predict_tiled(blend="gaussian")`` reads the tiles of
``TileGeometry(T, T, step=S)`` from the unpadded image; MONAI's
``sliding_window_inference(mode="gaussian", sigma_scale=0.125, overlap=1 - S/T)`` runs on
the mirror-extrapolated canvas those tiles cover (which MONAI needs built in memory).
Reported: median time per call (round robin) and the largest difference of the
outputs. Also: the cost of ``tta="flips"`` against 4 plain calls, and
``output="labels"``; and the two engines alone, with a 1x1 convolution as the network
(its forward costs next to nothing, so what is left is reading, padding, weighting and
merging the windows); and, with the U-Net, the time each run spends outside the
network's forward calls (the same timing wrapper around the network in both). Last,
both on every core of the machine: MONAI with that many torch threads, against
``predict_tiled`` with as many ``workers`` (one torch thread each) and with one worker
and that many torch threads. Target (issue 13): time <= MONAI's. Memory:
``bench_memory.py``.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

import unet_transforms as ut
from unet_transforms.models import UNet

from _common import footer, header, parser, round_robin, table


def setup(size: int) -> tuple[torch.nn.Module, torch.Tensor, ut.TileGeometry]:
    torch.manual_seed(0)
    net = UNet(1, 2, depth=3, base_channels=8, padding=1).eval()
    return net, torch.rand(1, size, size), ut.TileGeometry(256, 256, step=192)


def ours(
    net: torch.nn.Module, image: torch.Tensor, geometry: ut.TileGeometry, workers: int = 1
) -> torch.Tensor:
    return ut.predict_tiled(net, image, geometry, blend="gaussian", batch_size=4, workers=workers)


def theirs(net: torch.nn.Module, image: torch.Tensor, geometry: ut.TileGeometry) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    grid = ut.TileGrid(image.shape[1:], geometry)
    canvas = ut.mirror_pad(image, grid.padding)
    tile, step = geometry.input_size[0], geometry.step[0]
    with torch.inference_mode():
        out = sliding_window_inference(
            canvas[None],
            roi_size=geometry.input_size,
            sw_batch_size=4,
            predictor=net,
            overlap=1 - step / tile,
            mode="gaussian",
            sigma_scale=0.125,
        )[0]
    (b0, _), (b1, _) = grid.padding
    return out[:, b0 : b0 + image.shape[1], b1 : b1 + image.shape[2]]


class Timed(torch.nn.Module):
    """The network, timing its own forward calls (seconds, summed in ``spent``)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.spent = net, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        y: torch.Tensor = self.net(x)
        self.spent += time.perf_counter() - start
        return y


def outside_forward(
    net: torch.nn.Module, image: torch.Tensor, geometry: ut.TileGeometry, repeats: int
) -> dict[str, float]:
    """Median seconds per call spent outside the network's forward, round robin."""
    timed = Timed(net)
    spent: dict[str, list[float]] = {"predict_tiled": [], "MONAI": []}
    for _ in range(repeats):
        for name, run in (("predict_tiled", ours), ("MONAI", theirs)):
            timed.spent = 0.0
            start = time.perf_counter()
            run(timed, image, geometry)
            spent[name].append(time.perf_counter() - start - timed.spent)
    return {name: statistics.median(times) for name, times in spent.items()}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048)
    args = p.parse_args()
    size = 768 if args.quick else args.size
    repeats = 3 if args.quick else args.repeats
    header(args)
    net, image, geometry = setup(size)
    print(f"# image {size}^2, UNet(depth=3, base_channels=8, padding=1), {geometry}")
    difference = float((ours(net, image, geometry) - theirs(net, image, geometry)).abs().max())
    print(f"max |predict_tiled - MONAI| = {difference:.2e}")
    results = round_robin(
        {
            "predict_tiled gaussian": lambda: ours(net, image, geometry),
            "MONAI gaussian": lambda: theirs(net, image, geometry),
            "predict_tiled labels": lambda: ut.predict_tiled(
                net, image, geometry, blend="gaussian", batch_size=4, output="labels"
            ),
            "predict_tiled tta=flips": lambda: ut.predict_tiled(
                net, image, geometry, blend="gaussian", batch_size=4, tta="flips"
            ),
        },
        repeats,
        warmup=1,
    )
    table(results, "MONAI gaussian")
    tta = results["predict_tiled tta=flips"] / (4 * results["predict_tiled gaussian"])
    print(f"tta=flips / (4 x plain) = {tta:.3f}")
    # what each engine adds to the same forward calls: the run minus its forwards
    outside = outside_forward(net, image, geometry, repeats)
    print(
        f"outside the forward (U-Net): predict_tiled {outside['predict_tiled'] * 1e3:.1f} ms, "
        f"MONAI {outside['MONAI'] * 1e3:.1f} ms "
        f"({outside['predict_tiled'] / outside['MONAI']:.2f}x)"
    )
    # the engines alone: a network whose forward costs next to nothing
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(1, 2, 1).eval()
    engines = round_robin(
        {
            "engine: predict_tiled gaussian": lambda: ours(pointwise, image, geometry),
            "engine: MONAI gaussian": lambda: theirs(pointwise, image, geometry),
        },
        repeats,
        warmup=1,
    )
    print(f"\n# the engines alone (a 1x1 convolution as the network), {size}^2")
    table(engines, "engine: MONAI gaussian")
    # every core: each library as a user on this machine would run it
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        parallel = ours(net, image, geometry, workers=cores)
        difference = float((parallel - theirs(net, image, geometry)).abs().max())
        every_core = round_robin(
            {
                f"MONAI gaussian, {cores} threads": lambda: theirs(net, image, geometry),
                f"predict_tiled, workers={cores}": lambda: ours(
                    net, image, geometry, workers=cores
                ),
                f"predict_tiled, 1 worker, {cores} threads": lambda: ours(net, image, geometry),
            },
            repeats,
            warmup=1,
        )
    finally:
        torch.set_num_threads(threads)
    print(f"\n# every core ({cores}), U-Net, {size}^2; max |difference| = {difference:.2e}")
    table(every_core, f"MONAI gaussian, {cores} threads")
    footer()


if __name__ == "__main__":
    main()
