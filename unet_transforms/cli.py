"""The ``unet-transforms`` command: plan a tile grid, preview it, segment an image.

Run ``unet-transforms --help`` (or ``python -m unet_transforms --help``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import numpy as np

__all__ = ["main", "read_image"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def read_image(path: str) -> np.ndarray:
    """Reads an image as ``(C, H, W)`` (2-D) or ``(C, D, H, W)`` (multi-page TIFF).

    PNG, JPEG and single-page TIFF are read with Pillow; multi-page or 3-D TIFF with
    tifffile (the ``io`` extra).

    Args:
        path: The image file.

    Returns:
        The pixels with a leading channel axis.

    Raises:
        CLIError: If the file is missing or cannot be read as an image.
    """
    if not os.path.exists(path):
        raise CLIError(f"image file not found: {path}")
    if path.lower().endswith((".tif", ".tiff")):
        try:
            import tifffile as tiff
        except ImportError:
            tiff = None  # type: ignore[assignment]
        if tiff is not None:
            try:
                array = np.asarray(tiff.imread(path))
            except Exception as e:
                raise CLIError(f"cannot read {path} as a TIFF image: {e}") from e
            if array.ndim == 2:
                return array[None]
            if array.ndim == 3 and array.shape[-1] in (3, 4):
                return np.moveaxis(array[..., :3], -1, 0)
            if array.ndim == 3:
                return array[None]  # (D, H, W) volume
            raise CLIError(f"unsupported TIFF shape {array.shape} in {path}")
    import PIL.Image

    try:
        with PIL.Image.open(path) as opened:
            image: PIL.Image.Image = opened
            if image.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "HSV", "1"):
                image = image.convert("RGB" if image.mode not in ("LA", "1") else "L")
            array = np.asarray(image)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read {path} as an image: {e}") from e
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


# ---------------------------------------------------------------------- geometry options
def _add_geometry_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "tile geometry (either --unet-input or --input/--output-size)"
    )
    group.add_argument(
        "--unet-input",
        type=int,
        nargs="+",
        metavar="N",
        help="input tile size of a valid U-Net; the exact step is derived",
    )
    group.add_argument("--depth", type=int, default=4, help="U-Net poolings (default 4)")
    group.add_argument(
        "--convs-per-level", type=int, default=2, help="unpadded 3x3 convs per level (default 2)"
    )
    group.add_argument("--input-size", type=int, nargs="+", metavar="N", help="input tile size")
    group.add_argument("--output-size", type=int, nargs="+", metavar="N", help="output tile size")
    group.add_argument(
        "--step", type=int, nargs="+", metavar="N", help="tile stride (default: output size)"
    )
    parser.add_argument("--align", choices=("center", "start"), default="center")
    parser.add_argument("--mode", choices=("reflect", "symmetric"), default="reflect")


def _sizes(values: Sequence[int] | None) -> int | tuple[int, ...] | None:
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _geometry(args: argparse.Namespace, ndim: int) -> Any:
    from .geometry import TileGeometry

    if args.unet_input is not None:
        if args.input_size is not None or args.output_size is not None:
            raise CLIError("give either --unet-input or --input-size/--output-size, not both")
        return TileGeometry.unet(
            input_size=_sizes(args.unet_input),
            depth=args.depth,
            convs_per_level=args.convs_per_level,
            ndim=ndim,
        )
    if args.input_size is None or args.output_size is None:
        raise CLIError("give --unet-input N, or both --input-size and --output-size")
    inp: Any = _sizes(args.input_size)
    out: Any = _sizes(args.output_size)
    step: Any = _sizes(args.step)
    if ndim == 3:
        inp, out = _broadcast(inp, 3), _broadcast(out, 3)
        step = None if step is None else _broadcast(step, 3)
    return TileGeometry(inp, out, step=step)


def _broadcast(value: Any, ndim: int) -> Any:
    return (value,) * ndim if isinstance(value, int) else value


# ---------------------------------------------------------------------- commands
def _plan(args: argparse.Namespace) -> int:
    from .grid import TileGrid

    size = tuple(args.image_size)
    if len(size) not in (2, 3):
        raise CLIError(f"--image-size takes 2 or 3 sizes, got {len(size)}")
    geometry = _geometry(args, len(size))
    grid = TileGrid(size, geometry, align=args.align)
    computed = len(grid) * math.prod(geometry.input_size)
    report = {
        "image_size": list(size),
        "input_size": list(geometry.input_size),
        "output_size": list(geometry.output_size),
        "step": list(geometry.step),
        "margin": list(geometry.margin),
        "tiles": list(grid.shape),
        "num_tiles": len(grid),
        "padding": [list(p) for p in grid.padding],
        "canvas_size": list(grid.padded_size),
        "cost_ratio": computed / math.prod(size),
    }
    if args.json:
        print(json.dumps(report))
        return 0

    def axes(v: Iterable[Any]) -> str:
        return " x ".join(str(x) for x in v)

    rows = [
        ("image size", axes(size)),
        ("input tile", axes(geometry.input_size)),
        ("output tile", axes(geometry.output_size)),
        ("step (kept)", axes(geometry.step)),
        ("margin", axes(geometry.margin)),
        ("tiles", f"{axes(grid.shape)} = {len(grid)}"),
        ("padding", axes(f"{b}+{a}" for b, a in grid.padding) + "  (before+after per axis)"),
        ("canvas", axes(grid.padded_size)),
        ("cost ratio", f"{report['cost_ratio']:.2f} input pixels computed per output pixel"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    ndim = 3 if image.ndim == 4 else 2
    geometry = _geometry(args, ndim)
    from .viz import draw_tiles

    tiles: Any = "all" if not args.tiles else args.tiles
    picture = draw_tiles(image, geometry, align=args.align, mode=args.mode, tiles=tiles)
    _ensure_parent(args.output)
    picture.save(args.output)
    print(f"wrote {args.output} ({picture.width}x{picture.height})")
    return 0


def _segment(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .inference import parse_device, predict_tiled

    if not os.path.exists(args.checkpoint):
        raise CLIError(f"checkpoint file not found: {args.checkpoint}")
    model, geometry, meta = load_checkpoint(args.checkpoint)
    image = read_image(args.image)
    ndim = image.ndim - 1
    if ndim != geometry.ndim:
        raise CLIError(f"the checkpoint is for {geometry.ndim}-D images, {args.image} is {ndim}-D")
    x = torch.from_numpy(np.array(image, dtype=np.float32))
    if image.dtype == np.uint8:
        x /= 255.0
    elif image.dtype == np.uint16:
        x /= 65535.0
    in_channels = int(getattr(model, "in_channels", x.shape[0]))
    if x.shape[0] != in_channels:
        if in_channels == 1:
            x = x.mean(0, keepdim=True)
        else:
            raise CLIError(
                f"the model takes {in_channels} channels, {args.image} has {x.shape[0]}"
            )
    if "mean" in meta and "std" in meta:
        x = (x - float(meta["mean"])) / float(meta["std"])
    device = parse_device(args.device) or torch.device("cpu")
    model.to(device)
    logits = predict_tiled(
        model, x, geometry, batch_size=args.batch_size, device=device, progress=args.progress
    )
    labels = logits.argmax(0).to(torch.uint8).numpy()
    _ensure_parent(args.output)
    _write_labels(labels, args.output)
    counts = np.bincount(labels.ravel(), minlength=int(logits.shape[0]))
    print(f"wrote {args.output}: {labels.shape} labels, class counts {counts.tolist()}")
    return 0


def _write_labels(labels: np.ndarray, path: str) -> None:
    if labels.ndim == 3 or path.lower().endswith((".tif", ".tiff")):
        try:
            import tifffile
        except ImportError as e:
            raise CLIError("writing TIFF needs tifffile: pip install 'unet-transforms[io]'") from e
        tifffile.imwrite(path, labels)
        return
    import PIL.Image

    picture = PIL.Image.fromarray(labels)
    palette = [0, 0, 0, 255, 214, 0, 0, 114, 255, 230, 60, 60, 60, 200, 90]
    picture.putpalette(palette + [128] * (768 - len(palette)))
    picture.save(path)


def _ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``unet-transforms`` command."""
    parser = _Parser(
        prog="unet-transforms",
        description="Plan, preview and run the U-Net overlap-tile strategy.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    plan = sub.add_parser("plan", help="print the tile grid of an image size")
    plan.add_argument("--image-size", type=int, nargs="+", required=True, metavar="N")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    _add_geometry_options(plan)
    plan.set_defaults(run=_plan)

    preview = sub.add_parser("preview", help="draw the tile layout over an image")
    preview.add_argument("image", help="PNG, JPEG or TIFF file")
    preview.add_argument("-o", "--output", required=True, help="output PNG")
    preview.add_argument(
        "--tiles", type=int, nargs="+", metavar="I", help="only these tile indices (default: all)"
    )
    _add_geometry_options(preview)
    preview.set_defaults(run=_preview)

    segment = sub.add_parser("segment", help="segment an image with a trained checkpoint")
    segment.add_argument("image", help="PNG, JPEG or TIFF file")
    segment.add_argument("--checkpoint", required=True, help="file written by save_checkpoint")
    segment.add_argument("-o", "--output", required=True, help="label image (PNG, or TIFF)")
    segment.add_argument("--batch-size", type=int, default=None)
    segment.add_argument("--device", default=None, help="e.g. cpu or cuda:0")
    segment.add_argument("--progress", action="store_true", help="show a progress bar")
    segment.set_defaults(run=_segment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Example:
        >>> main(["plan", "--image-size", "512", "512", "--unet-input", "572", "--json"])
        ... # doctest: +ELLIPSIS
        {"image_size": [512, 512], "input_size": [572, 572], "output_size": [388, 388], ...}
        0
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CLIError as e:
        print(f"unet-transforms: error: {e}", file=sys.stderr)
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"unet-transforms: error: {e}", file=sys.stderr)
    return 2
