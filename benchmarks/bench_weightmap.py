"""unet_weight_map with 300 instances on 1024 x 1024 vs one whole-image EDT per instance.

The reference is the weight map's definition computed directly: one exact Euclidean
distance transform (``scipy.ndimage.distance_transform_edt``) of the whole image per
instance, keeping the running nearest and second-nearest distance. ``unet_weight_map``
runs the same transform per instance, but only over the instance's bounding box grown
until the border term is below 1e-6 * w0 (25 px for sigma = 5). The floor row is a
single whole-image distance transform, the cost unit of the reference. The maximum
difference between the two maps is printed under the table.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

from unet_transforms.weightmap import unet_weight_map

from _common import footer, header, parser, round_robin, table

W0, SIGMA = 10.0, 5.0


def cells(shape: tuple[int, ...], count: int, seed: int = 0) -> np.ndarray:
    """``count`` balls of radius 4-14 px at random centres, labelled 1..count (later
    ones cover earlier ones where they overlap): cells that touch, as in the paper."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    for label in range(1, count + 1):
        centre = [rng.integers(0, n) for n in shape]
        radius = rng.uniform(4, 14)
        box = tuple(
            slice(max(0, int(c - radius)), min(n, int(c + radius) + 1))
            for c, n in zip(centre, shape, strict=True)
        )
        sq = sum((g - c) ** 2 for g, c in zip(np.ogrid[box], centre, strict=True))
        labels[box][sq <= radius**2] = label
    return labels


def reference(labels: np.ndarray) -> np.ndarray:
    """The definition with whole-image distance transforms and balanced class weights."""
    nearest = np.full(labels.shape, np.inf)
    second = np.full(labels.shape, np.inf)
    for label in np.unique(labels[labels != 0]):
        dist = scipy.ndimage.distance_transform_edt(labels != label)
        second = np.minimum(second, np.maximum(nearest, dist))
        nearest = np.minimum(nearest, dist)
    background = labels == 0
    n_bg, n_fg = int(background.sum()), int((~background).sum())
    out = np.where(background, labels.size / (2 * n_bg), labels.size / (2 * n_fg))
    border = W0 * np.exp(-((nearest + second) ** 2) / (2 * SIGMA**2))
    return np.where(background, out + border, out).astype(np.float32)


def run(shape: tuple[int, ...], count: int, repeats: int) -> None:
    labels = cells(shape, count)
    count = len(np.unique(labels)) - 1  # some balls are covered entirely
    print(f"\n## {' x '.join(map(str, shape))}, {count} instances, w0={W0}, sigma={SIGMA}")
    diff = np.abs(unet_weight_map(labels, w0=W0, sigma=SIGMA) - reference(labels)).max()
    candidates = {
        "floor: one whole-image EDT": lambda: scipy.ndimage.distance_transform_edt(labels != 1),
        "reference: EDT per instance": lambda: reference(labels),
        "unet_weight_map": lambda: unet_weight_map(labels, w0=W0, sigma=SIGMA),
    }
    results = round_robin(candidates, repeats, warmup=1)
    table(results, "unet_weight_map", unit=1.0, label="s")
    speedup = results["reference: EDT per instance"] / results["unet_weight_map"]
    print(f"speed-up over the reference: {speedup:.1f}x; max |difference|: {diff:.2e}")


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.set_defaults(repeats=5)
    args = p.parse_args()
    header(args)
    if args.quick:
        run((256, 256), 40, 2)
        run((32, 64, 64), 20, 2)
    else:
        run((1024, 1024), 300, args.repeats)
        run((48, 160, 160), 60, args.repeats)
    footer()


if __name__ == "__main__":
    main()
