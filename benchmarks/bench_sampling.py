"""Random windows: border coverage, foreground rate and time per sample, against MONAI and TorchIO.

Part 1 (the issue's measurement): 300 windows on scikit-image's coins (303 x 384), a
label of one class covering about 0.9 % of the pixels, output window 100 x 100 (input
188). Per method: how much less the 8-px border is covered than the rest (mean
coverage ratio), the share of border pixels never covered, and the share of windows
whose output holds foreground. "before" is the old ``index="random"`` (windows inside
the image). MONAI: ``BorderPadd`` then ``RandCropByPosNegLabeld(pos=1, neg=1)``;
TorchIO: ``LabelSampler`` with classes 0 and 1 equally likely.

Part 2: time per sample on a 4096 x 4096 float32 image and int64 label (about 0.9 %
foreground in blobs), TileGeometry(572, 388). Samplers draw from the same label tensor
(its class locations cached after the first call; "first call" builds them on a
fresh label). The same label as a numpy array in a TiledDataset: read-only (cached per
array) and writable (read every item: numpy has no change counter). MONAI and TorchIO
crop 572 x 572 from image and label; they recompute their indices / probability map on
every call (their default use).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from torchvision import tv_tensors

from unet_transforms import PairedTileCrop, TiledDataset, TileGeometry
from unet_transforms.sampling import ForegroundSampler, LabelSampler

from _common import footer, header, parser, round_robin, table

BORDER = 8


def coins_label() -> tuple[np.ndarray, np.ndarray]:
    """coins and a one-coin label: the coin whose area is closest to 0.93 % of the image."""
    import scipy.ndimage as ndi
    from skimage import data, filters

    image = data.coins().astype(np.float32)
    blobs = ndi.binary_fill_holes(image > filters.threshold_otsu(image))
    regions, n = ndi.label(blobs)
    areas = ndi.sum_labels(np.ones_like(image), regions, index=np.arange(1, n + 1))
    pick = 1 + int(np.argmin(np.abs(areas / image.size - 0.0093)))
    return image, (regions == pick).astype(np.int64)


def report(name: str, coverage: np.ndarray, hits: int, draws: int) -> None:
    border = np.ones(coverage.shape, dtype=bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    inner, outer = coverage[~border].mean(), coverage[border].mean()
    ratio = f"{inner / outer:6.1f}x" if outer else "   inf"
    never = (coverage[border] == 0).mean()
    print(f"{name:<44} {ratio}  {never:10.1%}  {hits / draws:11.1%}")


def part1(draws: int) -> None:
    image, label = coins_label()
    h, w = label.shape
    o, size = 100, (h, w)
    geometry = TileGeometry(188, o)
    print(f"\n# coins {h}x{w}, foreground {label.mean():.2%}, output {o}x{o}, {draws} windows")
    print(f"{'method':<44} {'centre/border':>7}  {'border never':>10}  {'foreground':>11}")
    lab = torch.from_numpy(label)

    def ours(name: str, t: PairedTileCrop) -> None:
        coverage = np.zeros(size)
        hits = 0
        img = tv_tensors.Image(torch.from_numpy(image)[None])
        torch.manual_seed(0)
        for _ in range(draws):
            (tile,) = t.make_params([img, tv_tensors.Mask(lab)])["tiles"]
            box = tuple(slice(max(0, a), max(0, b)) for a, b in tile.output_box)
            coverage[box] += 1
            hits += bool(lab[box].any())
        report(name, coverage, hits, draws)

    before = np.zeros(size)
    hits = 0
    rng = np.random.default_rng(0)
    for _ in range(draws):  # the old index="random": inside the image
        a, b = rng.integers(0, h - o + 1), rng.integers(0, w - o + 1)
        before[a : a + o, b : b + o] += 1
        hits += bool(label[a : a + o, b : b + o].any())
    report("before: random inside the image", before, hits, draws)
    ours("PairedTileCrop index='random' (fair)", PairedTileCrop(geometry))
    ours("LabelSampler({0: 1, 1: 1})", PairedTileCrop(geometry, index=LabelSampler({0: 1, 1: 1})))
    ours("LabelSampler('balanced')", PairedTileCrop(geometry, index=LabelSampler()))
    ours("ForegroundSampler(probability=0.9)", PairedTileCrop(geometry, index=ForegroundSampler()))
    coords = np.arange(1, h * w + 1, dtype=np.float64).reshape(1, h, w)  # 0: padding
    try:
        from monai.transforms import BorderPadd, Compose, RandCropByPosNegLabeld

        monai = Compose(
            [
                BorderPadd(keys=["image", "label"], spatial_border=o // 2),
                RandCropByPosNegLabeld(
                    keys=["image", "label"], label_key="label", spatial_size=(o, o), pos=1, neg=1
                ),
            ]
        )
        monai.set_random_state(0)
        coverage, hits = np.zeros(h * w + 1), 0
        for _ in range(draws):
            (out,) = monai({"image": coords, "label": label[None]})
            seen = np.asarray(out["image"]).astype(np.int64).ravel()
            coverage[np.unique(seen)] += 1
            hits += bool(np.asarray(out["label"]).any())
        report(
            "MONAI BorderPadd + RandCropByPosNegLabeld", coverage[1:].reshape(h, w), hits, draws
        )
    except ImportError:
        print("# monai not installed: skipped")
    try:
        import torchio as tio

        subject = tio.Subject(
            image=tio.ScalarImage(tensor=torch.from_numpy(coords[..., None]).float()),
            label=tio.LabelMap(tensor=lab[None, ..., None]),
        )
        sampler = tio.LabelSampler((o, o, 1), "label", label_probabilities={0: 1, 1: 1})
        torch.manual_seed(0)
        coverage, hits = np.zeros(size), 0
        for patch in sampler(subject, num_patches=draws):
            i0, j0, _, i1, j1, _ = (int(v) for v in patch[tio.LOCATION])
            coverage[i0:i1, j0:j1] += 1
            hits += bool(patch["label"].data.any())
        report("TorchIO LabelSampler({0: 1, 1: 1})", coverage, hits, draws)
    except ImportError:
        print("# torchio not installed: skipped")


def part2(n: int, repeats: int) -> None:
    geometry = TileGeometry(572, 388)
    g = torch.Generator().manual_seed(0)
    image = tv_tensors.Image(torch.rand(1, n, n, generator=g))
    label = torch.zeros(n, n, dtype=torch.int64)
    centres = torch.randint(0, n, (int(n * n * 0.0093 / 314) + 1, 2), generator=g)
    yy, xx = torch.meshgrid(torch.arange(-10, 11), torch.arange(-10, 11), indexing="ij")
    disc = (yy**2 + xx**2 <= 100).nonzero() - 10
    pixels = (centres[:, None, :] + disc[None]).reshape(-1, 2).clamp(0, n - 1)
    label[pixels[:, 0], pixels[:, 1]] = 1
    mask = tv_tensors.Mask(label)
    print(f"\n# {n}x{n} image + label, foreground {label.float().mean():.2%}, {geometry}")
    uniform = PairedTileCrop(geometry)
    by_class = PairedTileCrop(geometry, index=LabelSampler({0: 1, 1: 1}))
    balanced = PairedTileCrop(geometry, index=LabelSampler())
    foreground = PairedTileCrop(geometry, index=ForegroundSampler())
    candidates = {
        "PairedTileCrop random (uniform)": lambda: uniform(image, mask),
        "LabelSampler({0: 1, 1: 1})": lambda: by_class(image, mask),
        "LabelSampler('balanced')": lambda: balanced(image, mask),
        "ForegroundSampler()": lambda: foreground(image, mask),
    }
    # the same label as numpy in a TiledDataset: read-only (memory maps opened with
    # mode="r" are) keeps the class locations per array, writable is read every item
    pixels_np = image.as_subclass(torch.Tensor).numpy()
    for name, label_np in (("read-only", label.numpy().copy()), ("writable", label.numpy())):
        if name == "read-only":
            label_np.flags.writeable = False
        tiles = TiledDataset(
            [(pixels_np, label_np)],
            geometry,
            index=LabelSampler({0: 1, 1: 1}),
            tiles_per_epoch=1,
            sizes=[(n, n)],
        )
        candidates[f"TiledDataset, LabelSampler, {name} numpy label"] = lambda t=tiles: t[0]
    try:
        from monai.transforms import RandCropByPosNegLabeld

        crop = RandCropByPosNegLabeld(
            keys=["image", "label"], label_key="label", spatial_size=(572, 572), pos=1, neg=1
        )
        sample = {"image": image.as_subclass(torch.Tensor), "label": label[None]}
        candidates["MONAI RandCropByPosNegLabeld"] = lambda: crop(sample)
    except ImportError:
        print("# monai not installed: skipped")
    try:
        import torchio as tio

        subject = tio.Subject(
            image=tio.ScalarImage(tensor=image.as_subclass(torch.Tensor)[..., None]),
            label=tio.LabelMap(tensor=label[None, ..., None]),
        )
        sampler = tio.LabelSampler((572, 572, 1), "label", label_probabilities={0: 1, 1: 1})
        candidates["TorchIO LabelSampler"] = lambda: next(iter(sampler(subject, num_patches=1)))
    except ImportError:
        print("# torchio not installed: skipped")
    results = round_robin(candidates, repeats, warmup=1)
    for name, factory in [
        ("LabelSampler first call (builds locations)", lambda: LabelSampler({0: 1, 1: 1})),
        ("ForegroundSampler first call (builds windows)", ForegroundSampler),
    ]:
        times = []
        for _ in range(max(1, repeats // 3)):
            t = PairedTileCrop(geometry, index=factory())
            start = time.perf_counter()
            t(image, mask)
            times.append(time.perf_counter() - start)
        results[name] = float(np.median(times))
    table(results, "PairedTileCrop random (uniform)")


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=300, help="windows in part 1")
    args = p.parse_args()
    header(args)
    warnings.simplefilter("ignore", FutureWarning)  # the libraries' deprecations
    part1(args.draws)
    part2(1024 if args.quick else 4096, 3 if args.quick else min(args.repeats, 7))
    footer()


if __name__ == "__main__":
    main()
