"""Train a small valid-convolution U-Net on a real image with the overlap-tile strategy.

The image is scikit-image's bundled ``coins`` photograph (303 x 384, grey). Its labels
are *pseudo-labels* from a classical pipeline (watershed from intensity markers, hole
filling, small object removal): good enough to show that the network learns, not
ground truth.

Training samples are random overlap tiles: ``TiledDataset(..., index="random")`` draws
a window, gives the image its mirror-extrapolated input window and the label the
aligned output window (as ``PairedTileCrop`` does), then flips both. The whole image is then segmented with ``predict_tiled``,
which the script checks against one forward pass over the mirror-extrapolated image.

Run ``python examples/train_unet.py --quick`` (what ``make demo`` does, well under
3 minutes on 2 CPU cores) or without ``--quick`` for a longer schedule. Writes
``input.png``, ``labels.png``, ``prediction.png``, ``tiles.png`` and ``model.pt`` to
``--out``, and prints the pixel accuracy and IoU against the pseudo-labels.

``--recipe paper`` trains with the paper's recipe instead (``docs/recipe.md``): coins
split into instances by a distance-transform watershed, their weight map
(``unet_weight_map``, w0 = 10, sigma = 5), windows drawn by ``ForegroundSampler``,
``Deformation()`` inside the crop and ``weighted_cross_entropy``. Both recipes also print
the *border accuracy*: the fraction of the background pixels between neighbouring coins
(where the weight map's border term exceeds 1) predicted background.

``--config examples/configs/train.yaml`` trains from a dataset definition instead: the
file describes the folder dataset, its transform pipeline, the geometry and the model
(``_target_`` keys, built by ``unet_transforms.from_config``); the script writes the
coins image and pseudo-labels into the dataset's folders when they are missing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from unet_transforms import (
    Deformation,
    PairedTileCrop,
    TiledDataset,
    TileGeometry,
    TileGrid,
    WeightMap,
    from_config,
    mirror_pad,
    predict_tiled,
    unet_weight_map,
)
from unet_transforms.checkpoint import NORMALIZATION, save_checkpoint
from unet_transforms.losses import weighted_cross_entropy
from unet_transforms.models import UNet
from unet_transforms.sampling import ForegroundSampler
from unet_transforms.viz import draw_tiles


def load_coins() -> tuple[np.ndarray, np.ndarray]:
    """The coins image and its pseudo-labels (1 = coin, 0 = background).

    The labels follow scikit-image's own coins tutorial: a watershed of the Sobel
    elevation map from confident markers (dark background < 30, bright coins > 150),
    holes filled and specks removed.
    """
    from scipy import ndimage
    from skimage import data, filters, morphology, segmentation

    image = data.coins()
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[image < 30] = 1
    markers[image > 150] = 2
    coins = segmentation.watershed(filters.sobel(image), markers) == 2
    coins = morphology.remove_small_objects(ndimage.binary_fill_holes(coins), max_size=80)
    return image, coins.astype(np.int64)


def scores(prediction: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    accuracy = float((prediction == labels).mean())
    inter = np.logical_and(prediction == 1, labels == 1).sum()
    union = np.logical_or(prediction == 1, labels == 1).sum()
    return accuracy, float(inter / max(union, 1))


def save_png(array: np.ndarray, path: Path) -> None:
    PIL.Image.fromarray(array).save(path)


def write_coins(images: Path, masks: Path) -> None:
    """The coins image and its pseudo-labels as PNG files, for a folder dataset."""
    image, labels = load_coins()
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    save_png(image, images / "coins.png")
    save_png(labels.astype(np.uint8), masks / "coins.png")


def train(
    model: torch.nn.Module,
    batches: Any,
    steps: int,
    *,
    lr: float,
    ignore_index: int,
) -> None:
    """Adam on the cross-entropy of ``steps`` batches of ``(tiles, labels)``."""
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    optimise(model, batches, steps, lr, lambda batch: loss_fn(model(batch[0]), batch[1].long()))


def optimise(
    model: torch.nn.Module,
    batches: Any,
    steps: int,
    lr: float,
    loss_of: Callable[[Any], torch.Tensor],
) -> None:
    """Adam on ``loss_of(batch)`` for ``steps`` batches, printing the loss 10 times."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step, batch in enumerate(batches, 1):
        loss = loss_of(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            print(f"step {step:4d}/{steps}  loss {loss.item():.4f}")
        if step == steps:
            break


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    image: np.ndarray,
    labels: np.ndarray,
    geometry: TileGeometry,
    out: Path,
    metadata: dict[str, Any],
) -> float:
    """Segments the whole image, checks it against one forward pass, writes the pictures
    and the checkpoint; returns the pixel accuracy."""
    model.eval()
    logits = predict_tiled(model, x, geometry)
    prediction = logits.argmax(0).numpy()
    accuracy, iou = scores(prediction, labels)

    # Self-check: tiled inference equals one pass over the mirror-extrapolated image.
    grid = TileGrid(image.shape, geometry)
    with torch.inference_mode():
        whole = model(mirror_pad(x, grid.padding)[None])[0]
    offset = [b - m for (b, _), m in zip(grid.padding, geometry.margin, strict=True)]
    whole = whole[
        :, offset[0] : offset[0] + image.shape[0], offset[1] : offset[1] + image.shape[1]
    ]
    difference = float((whole - logits).abs().max())
    assert difference < 1e-4, f"tiled inference differs from the whole-image pass by {difference}"

    save_png(image, out / "input.png")
    save_png((labels * 255).astype(np.uint8), out / "labels.png")
    save_png((prediction * 255).astype(np.uint8), out / "prediction.png")
    draw_tiles(image, geometry).save(out / "tiles.png")
    save_checkpoint(out / "model.pt", model, geometry, metadata=metadata)
    print(f"pixel accuracy {accuracy:.4f}, IoU {iou:.4f} against the pseudo-labels")
    print(f"tiled vs whole-image max difference {difference:.2e}")
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return accuracy


def run_config(path: Path, steps: int | None, batch_size: int | None, out: Path) -> float:
    """Trains from a dataset definition: every object comes from the config file."""
    import yaml

    config = yaml.safe_load(path.read_text())
    folders = config["dataset"]
    images, masks = Path(folders["images"]), Path(folders["masks"])
    if not images.is_dir() or not masks.is_dir():
        write_coins(images, masks)
    built = from_config(config)
    geometry, model, dataset, options = (
        built["geometry"],
        built["model"],
        built["dataset"],
        built["train"],
    )
    print(f"from {path}: {geometry}, {model}, {len(dataset)} image(s)")
    steps = steps if steps is not None else int(options["steps"])
    batch_size = batch_size if batch_size is not None else int(options["batch_size"])
    print(f"training {steps} steps of {batch_size} tiles")

    def batches() -> Any:
        while True:  # a random tile of a random image per item, as the pipeline draws it
            picks = torch.randint(len(dataset), (batch_size,)).tolist()
            tiles, labels = zip(*(dataset[i] for i in picks), strict=True)
            yield torch.stack(tiles), torch.stack(labels)

    train(model, batches(), steps, lr=float(options["lr"]), ignore_index=options["ignore_index"])

    # the image as training saw it: the pipeline's intensity transforms, no crop or flip
    image, labels = load_coins()
    intensity = [
        t for t in dataset.transforms.transforms if isinstance(t, v2.ToDtype | v2.Normalize)
    ]
    x = v2.Compose(intensity)(tv_tensors.Image(torch.from_numpy(image)[None]))
    x = x.as_subclass(torch.Tensor)
    normalize = next(t for t in intensity if isinstance(t, v2.Normalize))
    # what segment applies: ToDtype(scale=True) divides by the dtype's maximum
    record = {
        "scale": "dtype_max",
        "mean": [float(m) for m in normalize.mean],
        "std": [float(s) for s in normalize.std],
    }
    return evaluate(model, x, image, labels, geometry, out, {NORMALIZATION: record})


def run_quick(steps: int, batch_size: int, out: Path) -> float:
    """The quick path of ``make demo``: objects built in code."""
    image, labels = load_coins()
    x = torch.from_numpy(image).float()[None] / 255.0
    mean, std = float(x.mean()), float(x.std())
    x = (x - mean) / std
    y = torch.from_numpy(labels)

    model = UNet(in_channels=1, out_channels=2, depth=3, base_channels=8)
    geometry = model.geometry(output_size=124)  # input 212: 124 + a 44 px margin per side
    print(f"image {tuple(image.shape)}, {geometry}, margin {geometry.margin}")
    print(f"grid for the whole image: {TileGrid(image.shape, geometry).shape} tiles")

    flips = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])
    tiles = TiledDataset(
        [(x, y)],
        geometry,
        index="random",  # a fresh random window per item: "many tiles from one image"
        tiles_per_epoch=steps * batch_size,
        mask_fill=-100,  # ignore labels outside the image
        transforms=flips,
    )
    loader = torch.utils.data.DataLoader(tiles, batch_size=batch_size)
    train(model, loader, steps, lr=3e-3, ignore_index=-100)
    record = {"scale": "dtype_max", "mean": [mean], "std": [std]}  # what segment applies
    return evaluate(model, x, image, labels, geometry, out, {NORMALIZATION: record})


def coin_instances(labels: np.ndarray) -> np.ndarray:
    """The coins as instances: touching coins split by a distance-transform watershed.

    Markers are the peaks of the distance to the background (at least 10 px apart); the
    watershed of the negated distance floods each coin from its marker, so two coins that
    touch in the binary labels get different instance numbers.
    """
    from scipy import ndimage
    from skimage import feature, segmentation

    distance = ndimage.distance_transform_edt(labels)
    components, _ = ndimage.label(labels)
    peaks = feature.peak_local_max(distance, min_distance=10, labels=components)
    markers = np.zeros(labels.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return np.asarray(segmentation.watershed(-distance, markers, mask=labels > 0))


def coin_weights(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paper's weight map of the coin instances (w0 = 10, sigma = 5) and the pixels
    between neighbouring coins: background where the border term exceeds 1."""
    weights = unet_weight_map(coin_instances(labels), w0=10.0, sigma=5.0)
    background = labels == 0
    class_weight = labels.size / (2 * background.sum())  # "balanced": w_c of background
    border = background & (weights - class_weight > 1.0)
    return weights, border


def border_accuracy(prediction: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of the pixels between neighbouring coins predicted background."""
    _, border = coin_weights(labels)
    return float((prediction[border] == 0).mean())


def report_borders(prediction_png: Path) -> None:
    """Prints the accuracy on the pixels between neighbouring coins of a written prediction."""
    _, labels = load_coins()
    with PIL.Image.open(prediction_png) as picture:
        prediction = (np.asarray(picture) > 127).astype(np.int64)
    print(f"border accuracy {border_accuracy(prediction, labels):.4f} between neighbouring coins")


def train_weighted(
    model: torch.nn.Module, batches: Any, steps: int, *, lr: float, ignore_index: int
) -> None:
    """Adam on the weighted cross-entropy of ``steps`` batches of (tiles, labels, weights)."""

    def loss_of(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        tiles, targets, weights = batch
        logits = model(tiles)
        return weighted_cross_entropy(logits, targets.long(), weights, ignore_index=ignore_index)

    optimise(model, batches, steps, lr, loss_of)


def paper_pipeline(geometry: TileGeometry) -> v2.Compose:
    """The paper's recipe for one sample (image, label, weights): a window holding
    foreground 9 times in 10, elastically deformed inside the crop, then flipped."""
    crop = PairedTileCrop(
        geometry,
        index=ForegroundSampler(min_fraction=0.05, probability=0.9),
        deform=Deformation(),  # the paper's: 3 x 3 grid, 10 px displacements, bicubic field
        mask_fill={tv_tensors.Mask: -100, WeightMap: 0.0},  # ignored, and weighted 0
    )
    return v2.Compose([crop, v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])


def run_paper(steps: int, batch_size: int, out: Path) -> float:
    """The paper's recipe: foreground windows, deformation, weight map, weighted loss."""
    image, labels = load_coins()
    x = torch.from_numpy(image).float()[None] / 255.0
    mean, std = float(x.mean()), float(x.std())
    x = (x - mean) / std
    weights, border = coin_weights(labels)
    print(f"weight map: {border.sum()} pixels between neighbouring coins")

    model = UNet(in_channels=1, out_channels=2, depth=3, base_channels=8)
    geometry = model.geometry(output_size=124)
    pipeline = paper_pipeline(geometry)
    sample = (
        tv_tensors.Image(x),
        tv_tensors.Mask(torch.from_numpy(labels)),
        WeightMap(torch.from_numpy(weights)),
    )

    def batches() -> Any:
        while True:
            drawn = [pipeline(*sample) for _ in range(batch_size)]
            yield tuple(torch.stack([item[k] for item in drawn]) for k in range(3))

    train_weighted(model, batches(), steps, lr=3e-3, ignore_index=-100)
    record = {"scale": "dtype_max", "mean": [mean], "std": [std]}
    return evaluate(model, x, image, labels, geometry, out, {NORMALIZATION: record})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short schedule (make demo)")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="tiles per step (default 4, or the config's)"
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--config", type=Path, default=None, help="train from a dataset definition (YAML)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--recipe",
        choices=("plain", "paper"),
        default="plain",
        help="plain: fair random tiles, cross-entropy; paper: foreground windows, "
        "elastic deformation, weight map and weighted cross-entropy",
    )
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="fail if the pixel accuracy ends below this",
    )
    args = parser.parse_args()
    for option in ("steps", "batch_size", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be a positive int, got {value}")
    if args.config is not None and args.recipe != "plain":
        parser.error("--recipe chooses the built-in training; with --config the file defines it")
    steps = args.steps if args.steps is not None else (300 if args.quick else 1500)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.config is not None:
        config_steps = args.steps if args.steps is not None or not args.quick else 300
        accuracy = run_config(args.config, config_steps, args.batch_size, args.out)
    else:
        run = run_paper if args.recipe == "paper" else run_quick
        accuracy = run(steps, args.batch_size or 4, args.out)
        report_borders(args.out / "prediction.png")
    elapsed = time.perf_counter() - started
    print(f"done in {elapsed:.1f} s")
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        raise SystemExit(
            f"pixel accuracy {accuracy:.4f} is below --min-accuracy {args.min_accuracy}"
        )


if __name__ == "__main__":
    main()
