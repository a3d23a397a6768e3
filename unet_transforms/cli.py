"""The ``unet-transforms`` command: plan a tile grid, preview it, segment an image.

Run ``unet-transforms --help`` (or ``python -m unet_transforms --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, NoReturn

import numpy as np

from ._atomic import atomic_write, check_writable

__all__ = ["main", "read_image"]

_DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own refusal threshold, 2 * MAX_IMAGE_PIXELS


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def read_image(path: str, *, max_pixels: int | None = _DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image as ``(C, H, W)`` (2-D) or ``(C, D, H, W)`` (a 3-D TIFF).

    TIFF files are read with tifffile when it is installed (the ``io`` extra), which
    tells channels (RGB samples, planar or interleaved) from depth (pages, slices) by
    the file's own metadata; other formats, and TIFF without tifffile, with Pillow.
    Alpha is dropped (TIFF: the samples the file marks as alpha); palette and 1-bit
    images become RGB or grey; other TIFF channels (e.g. 4 microscopy channels, CMYK)
    are kept as they are.

    The pixel count (voxels for a volume) is read from the file's header and checked
    against ``max_pixels`` before anything is decoded, so a decompression bomb (a small
    file that claims a huge image) is refused without using memory.

    Args:
        path: The image file.
        max_pixels: The most pixels an image may have (default 178,956,970, where
            Pillow refuses too); ``None`` for no limit.

    Returns:
        The pixels with a leading channel axis.

    Raises:
        CLIError: If the file is missing, cannot be read as an image, or has more than
            ``max_pixels`` pixels.

    Example:
        >>> import os, tempfile, PIL.Image
        >>> path = os.path.join(tempfile.mkdtemp(), "rgba.png")
        >>> PIL.Image.new("RGBA", (5, 3)).save(path)
        >>> read_image(path).shape
        (3, 3, 5)
    """
    if not os.path.exists(path):
        raise CLIError(f"image file not found: {path}")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a directory, not an image file")
    if path.lower().endswith((".tif", ".tiff")):
        try:
            import tifffile
        except ImportError:
            pass
        else:
            return _read_tiff(path, tifffile, max_pixels)
    import PIL.Image

    try:
        with _pillow_size_check_off(), PIL.Image.open(path) as opened:
            image: PIL.Image.Image = opened
            _check_pixels(path, image.size, max_pixels)
            tiles = getattr(image, "tile", None)  # how the file's samples are decoded
            raw = tiles[0].args if image.format == "PNG" and tiles else None
            if isinstance(raw, str) and raw.endswith(";16B") and raw != "I;16B":
                raise CLIError(
                    f"{path} is a 16-bit colour or grey+alpha PNG, which Pillow reads with "
                    "8 bits per sample only: save it as a 16-bit TIFF (or a grey PNG)"
                )
            if image.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "HSV", "1"):
                image = image.convert("RGB" if image.mode not in ("LA", "1") else "L")
            array = np.asarray(image)
            if image.mode == "I" and image.format in ("PNG", "PPM"):
                # 16-bit grey (a PGM, say) in Pillow's 32-bit mode: 16-bit pixels
                array = array.astype(np.uint16)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read {path} as an image: {e}") from e
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


@contextlib.contextmanager
def _pillow_size_check_off() -> Iterator[None]:
    """Pillow's own size limit off (its warning, its error): ``max_pixels`` replaces it.

    Pillow keeps the limit in a module global; the command reads one image at a time.
    """
    import PIL.Image

    limit = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = limit


def _check_pixels(path: str, shape: Sequence[int], max_pixels: int | None) -> None:
    """Refuses an image whose header gives more than ``max_pixels`` pixels (or voxels)."""
    pixels = math.prod(shape)
    if max_pixels is not None and pixels > max_pixels:
        size = " x ".join(str(n) for n in shape)
        raise CLIError(
            f"{path} has {pixels} pixels ({size}), more than --max-pixels {max_pixels}; "
            "give a larger --max-pixels if the file is trusted"
        )


def _read_tiff(path: str, tifffile: Any, max_pixels: int | None) -> np.ndarray:
    """A TIFF as ``(C, [D,] H, W)``, laid out by the axes tifffile reads from the file."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = str(series.axes)
            spatial = [n for a, n in zip(axes, series.shape, strict=True) if a not in "SC"]
            _check_pixels(path, spatial, max_pixels)
            array = np.asarray(series.asarray())
            # alpha samples (associated or unassociated) are the last extra samples
            extras = tuple(getattr(tif.pages[0], "extrasamples", ()) or ())
            alpha = sum(1 for e in extras if int(e) in (1, 2))
            palette = tif.pages[0].colormap if int(tif.pages[0].photometric) == 3 else None
    except CLIError:
        raise
    except Exception as e:
        raise CLIError(f"cannot read {path} as a TIFF image: {e}") from e
    # drop axes of length 1 other than Y and X (e.g. a single time point or channel)
    keep = [i for i, a in enumerate(axes) if a in "YX" or array.shape[i] > 1]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    read_axes, read_shape = axes, array.shape
    if "S" not in axes and "C" not in axes:
        array, axes = array[None], "C" + axes  # one channel
    channel = axes.index("S") if "S" in axes else axes.index("C")
    depth = [i for i, a in enumerate(axes) if a not in "YX" and i != channel]
    if "Y" not in axes or "X" not in axes or len(depth) > 1:
        raise CLIError(
            f"unsupported TIFF layout in {path}: axes {read_axes!r}, shape {read_shape} "
            "(expected Y and X, optionally samples/channels and one depth axis)"
        )
    array = np.transpose(array, [channel, *depth, axes.index("Y"), axes.index("X")])
    if axes[channel] == "S" and 0 < alpha < array.shape[0]:
        array = array[: array.shape[0] - alpha]  # RGBA or grey + alpha: drop the alpha
    if palette is not None and array.shape[0] == 1:
        return _expand_palette(np.asarray(palette), array[0], path)
    if array.dtype == np.bool_:  # 1-bit: grey 0 or 255, as Pillow reads it
        return array.astype(np.uint8) * np.uint8(255)
    return array


def _expand_palette(colormap: np.ndarray, indices: np.ndarray, path: str) -> np.ndarray:
    """A palette TIFF's indices as RGB ``(3, ...)``, as Pillow expands a palette image:
    8-bit when the file's 16-bit colour map holds 8-bit colours (each value ``v * 257``
    or ``v * 256``), else 16-bit."""
    if colormap.ndim != 2 or colormap.shape[0] != 3 or int(indices.max()) >= colormap.shape[1]:
        raise CLIError(
            f"cannot read {path}: its colour map {colormap.shape} does not cover the "
            f"palette indices (up to {int(indices.max())})"
        )
    for factor in (257, 256):
        if not (colormap % factor).any():
            colormap = (colormap // factor).astype(np.uint8)
            break
    return colormap[:, indices]


# ---------------------------------------------------------------------- geometry options
def _add_geometry_options(parser: argparse.ArgumentParser, *, mirror: bool = True) -> None:
    group = parser.add_argument_group(
        "tile geometry (either --unet-input or --input-size/--output-size)"
    )
    group.add_argument(
        "--unet-input",
        type=int,
        nargs="+",
        metavar="N",
        help="input tile size of a valid U-Net; the exact step is derived",
    )
    group.add_argument(
        "--depth", type=int, default=None, help="U-Net poolings, with --unet-input (default 4)"
    )
    group.add_argument(
        "--convs-per-level",
        type=int,
        default=None,
        help="unpadded 3x3 convs per level, with --unet-input (default 2)",
    )
    group.add_argument("--input-size", type=int, nargs="+", metavar="N", help="input tile size")
    group.add_argument("--output-size", type=int, nargs="+", metavar="N", help="output tile size")
    group.add_argument(
        "--step",
        type=int,
        nargs="+",
        metavar="N",
        help="tile stride, with --input-size/--output-size (default: output size)",
    )
    parser.add_argument("--align", choices=("center", "start"), default="center")
    if mirror:
        parser.add_argument("--mode", choices=("reflect", "symmetric"), default="reflect")


def _sizes(values: Sequence[int] | None) -> int | tuple[int, ...] | None:
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _geometry(args: argparse.Namespace, ndim: int) -> Any:
    from .geometry import TileGeometry

    for option in ("unet_input", "input_size", "output_size", "step"):
        values = getattr(args, option)
        if values is not None and len(values) not in (1, ndim):
            flag = "--" + option.replace("_", "-")
            raise CLIError(
                f"{flag} takes 1 or {ndim} sizes for a {ndim}-D image, got {len(values)}"
            )
    if args.unet_input is not None:
        if args.input_size is not None or args.output_size is not None:
            raise CLIError("give either --unet-input or --input-size/--output-size, not both")
        if args.step is not None:
            raise CLIError("--step is derived from --unet-input (exact tiling); leave it out")
        return TileGeometry.unet(
            input_size=_broadcast(_sizes(args.unet_input), ndim),
            depth=4 if args.depth is None else args.depth,
            convs_per_level=2 if args.convs_per_level is None else args.convs_per_level,
            ndim=ndim,
        )
    if args.input_size is None or args.output_size is None:
        raise CLIError("give --unet-input N, or both --input-size and --output-size")
    if args.depth is not None or args.convs_per_level is not None:
        raise CLIError("--depth and --convs-per-level go with --unet-input, not --input-size")
    step = _sizes(args.step)
    return TileGeometry(
        _broadcast(_sizes(args.input_size), ndim),
        _broadcast(_sizes(args.output_size), ndim),
        step=None if step is None else _broadcast(step, ndim),
    )


def _broadcast(value: Any, ndim: int) -> Any:
    return (value,) * ndim if isinstance(value, int) else value


def _check_output(path: str, *, classes: int | None = None, image: str | None = None) -> None:
    """Refuses outputs that cannot be written, before any work (creating nothing).

    ``classes``: the number of classes of a label image, which the file format must
    hold without loss; ``None`` for an RGB picture (the preview). ``image``: the input
    image's path, which the output must not replace.
    """
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise CLIError(
            f"-o/--output must be a file name such as mask.png, got a directory: {path}"
        )
    import PIL.Image

    extension = os.path.splitext(path)[1].lower()
    if extension not in PIL.Image.registered_extensions():
        raise CLIError(
            f"-o/--output needs an image file extension such as .png or .tif, got {path!r}"
        )
    if image is not None and os.path.exists(path) and os.path.samefile(image, path):
        raise CLIError(f"-o/--output {path!r} is the input image: give another file name")
    parent = os.path.dirname(os.path.abspath(path))
    missing = _missing_folders(path)
    existing = os.path.dirname(missing[-1]) if missing else parent
    if not os.path.isdir(existing):
        raise CLIError(f"cannot write {path}: {existing} is a file, not a folder")
    try:
        longest = int(os.pathconf(existing, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no such limit on this system
        longest = None
    for name in [os.path.basename(path), *map(os.path.basename, missing)]:
        if longest is not None and len(os.fsencode(name)) > longest:
            raise CLIError(
                f"cannot write {path}: the name {name[:40]!r}... is longer than the "
                f"{longest} bytes a file name may have there"
            )
    try:  # in the deepest existing folder: the missing ones are created when writing
        check_writable(os.path.join(existing, os.path.basename(path)))
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from e
    if classes is None:
        _check_format(path, [PIL.Image.new("RGB", (2, 2))], lossless=False)
    elif not _uses_tifffile(path, ndim=2):
        top = np.array(classes - 1, _label_dtype(classes))
        # and one of 23 x 17 pixels: formats such as ICO store only a few sizes
        varied = (np.arange(23 * 17).reshape(23, 17) % (int(top) + 1)).astype(top.dtype)
        samples = [
            np.array([[0, top], [min(top, 1), 0]], top.dtype),
            np.full((1, 1), top),
            varied,
        ]
        _check_format(path, [_label_picture(sample) for sample in samples], lossless=True)


def _missing_folders(path: str) -> list[str]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


@contextlib.contextmanager
def _output_file(path: str) -> Iterator[BinaryIO]:
    """:func:`atomic_write` into ``path``, creating its missing folders first (and
    removing them again if the write fails)."""
    created = _missing_folders(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path) as file:
            yield file
    except BaseException:
        for folder in created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def _check_format(path: str, samples: list[Any], *, lossless: bool) -> None:
    """Refuses a file format that cannot store the sample pictures (exactly, if lossless)."""
    import PIL.Image

    file_format = _pil_format(path)
    for sample in samples:
        buffer = io.BytesIO()
        try:
            sample.save(buffer, format=file_format)
            if lossless:
                buffer.seek(0)
                with PIL.Image.open(buffer) as back:
                    exact = np.array_equal(np.asarray(back), np.asarray(sample))
        except (OSError, ValueError, KeyError) as e:
            reason = _one_line(e)
        else:
            if not lossless or exact:
                continue
            reason = "the pixel values do not read back unchanged"
        what = f"a label image (Pillow mode {sample.mode})" if lossless else "a picture"
        raise CLIError(
            f"-o/--output: {file_format} cannot hold {what}: {reason}; use .png or .tif"
        )


def _pil_format(path: str) -> str:
    import PIL.Image

    return PIL.Image.registered_extensions()[os.path.splitext(path)[1].lower()]


def _uses_tifffile(path: str, ndim: int) -> bool:
    """Whether labels go to ``path`` through tifffile (volumes, and any .tif when it is
    installed); raises if a volume needs it and it is missing."""
    if ndim == 2 and not path.lower().endswith((".tif", ".tiff")):
        return False
    try:
        import tifffile  # noqa: F401
    except ImportError as e:
        if ndim == 2:
            return False  # Pillow writes 2-D TIFF labels too
        raise CLIError(
            "writing TIFF volumes needs tifffile: pip install 'unet-transforms[io]'"
        ) from e
    return True


def _label_dtype(classes: int) -> type[np.unsignedinteger[Any]]:
    # load_checkpoint refuses more than 65536 classes (model.out_channels)
    return np.uint8 if classes <= 256 else np.uint16


def _label_picture(labels: np.ndarray) -> Any:
    """2-D labels as a Pillow image: a palette image (class k = index k) up to 256
    classes, a 16-bit grey image beyond."""
    import PIL.Image

    picture = PIL.Image.fromarray(labels)
    if labels.dtype == np.uint8:
        palette = [0, 0, 0, 255, 214, 0, 0, 114, 255, 230, 60, 60, 60, 200, 90]
        picture.putpalette(palette + [128] * (768 - len(palette)))
    return picture


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
    image = read_image(args.image, max_pixels=args.max_pixels)
    ndim = 3 if image.ndim == 4 else 2
    geometry = _geometry(args, ndim)
    from .viz import MAX_TILES, draw_tiles

    tiles: Any = "all" if not args.tiles else args.tiles
    _check_output(args.output, image=args.image)
    picture = draw_tiles(
        image,
        geometry,
        align=args.align,
        mode=args.mode,
        tiles=tiles,
        scale=args.scale,
        max_tiles=MAX_TILES if args.max_tiles is None else (args.max_tiles or None),
    )
    with _output_file(args.output) as file:
        picture.save(file, format=_pil_format(args.output))
    print(f"wrote {args.output} ({picture.width}x{picture.height})")
    return 0


_NO_RECORD_WARNING = (
    "unet-transforms: warning: the checkpoint has no metadata['normalization'] record; "
    "assuming pixels divided by the dtype's maximum (255 for 8-bit, 65535 for 16-bit; "
    "float images as they are), no mean/std"
)


def _segment(args: argparse.Namespace) -> int:
    import torch

    from ._model import parse_device
    from .checkpoint import load_checkpoint, read_normalization
    from .inference import predict_tiled

    if not os.path.exists(args.checkpoint):
        raise CLIError(f"checkpoint file not found: {args.checkpoint}")
    model, geometry, meta = load_checkpoint(args.checkpoint, allow=args.allow)
    try:
        record = read_normalization(meta)
    except ValueError as e:
        raise CLIError(f"checkpoint {args.checkpoint!r}: {e}") from e
    image = read_image(args.image, max_pixels=args.max_pixels)
    if image.dtype.kind not in "biuf":
        raise CLIError(
            f"image must have a boolean, integer or floating dtype, got {image.dtype} "
            f"({args.image})"
        )
    nan = int(np.isnan(image).sum()) if np.issubdtype(image.dtype, np.floating) else 0
    pixels = image.size
    ndim = image.ndim - 1
    if ndim != geometry.ndim:
        raise CLIError(f"the checkpoint is for {geometry.ndim}-D images, {args.image} is {ndim}-D")
    in_channels = getattr(model, "in_channels", None)
    # a model that does not say: the image's channels, or one with --to-gray
    unknown = 1 if args.to_gray else image.shape[0]
    channels = in_channels if type(in_channels) is int else unknown
    if args.to_gray and channels != 1:
        raise CLIError(
            f"--to-gray averages the image's channels into one, for a 1-channel model; "
            f"this model takes {channels} channels"
        )
    if image.shape[0] != channels and not args.to_gray:
        raise CLIError(
            f"the model takes {channels} channel{'s' * (channels != 1)}, {args.image} has "
            f"{image.shape[0]}"
            + (" (give --to-gray to average them into one)" if channels == 1 else "")
        )
    if record is not None and len(record["mean"]) not in (1, channels):
        raise CLIError(
            f"the checkpoint's normalisation has {len(record['mean'])} channels, the "
            f"model takes {channels}"
        )
    spatial = image.shape[1:]
    if args.output_kind == "labels":
        if ndim == 3 and not args.output.lower().endswith((".tif", ".tiff")):
            raise CLIError(
                f"a 3-D segmentation is written as TIFF: give -o *.tif, got {args.output}"
            )
        # at least two classes (a one-channel model gives 0 and 1); a model without
        # out_channels: checked again before writing if the result holds more
        out_channels = getattr(model, "out_channels", None)
        classes = max(out_channels, 2) if type(out_channels) is int else 2
        _check_output(args.output, classes=classes, image=args.image)
    else:
        _check_float_output(args.output, args.output_kind, image=args.image)
    device = parse_device(args.device) or torch.device("cpu")
    if device.type == "meta":
        raise CLIError("--device meta computes no values; use cpu or an accelerator")
    x = torch.from_numpy(_normalize(image, record, to_gray=args.to_gray))
    del image
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:  # e.g. no CUDA driver, torch without CUDA
        raise CLIError(f"cannot use --device {args.device}: {str(e).splitlines()[0]}") from e
    predicted = predict_tiled(  # labels: per tile, the logits are never held whole
        model,
        x,
        geometry,
        batch_size=args.batch_size,
        device=device,
        progress=args.progress,
        blend=args.blend,
        output=args.output_kind,
        tta=None if args.tta == "none" else args.tta,
    )
    result = predicted.cpu().numpy()
    if args.output_kind != "labels":
        result = result.astype(np.float32, copy=False)
        _write_float(result, args.output)
        print(f"wrote {args.output}: {result.shape} float32 {args.output_kind}")
    else:
        checked, classes = classes, max(classes, int(result.max()) + 1 if result.size else 1)
        if classes > checked:
            _check_output(args.output, classes=classes, image=args.image)
        labels = result.astype(_label_dtype(classes))
        _write_labels(labels, args.output)
        counts = np.bincount(labels.ravel(), minlength=classes)
        print(f"wrote {args.output}: {tuple(spatial)} labels, class counts {counts.tolist()}")
    if record is None:  # after the result, so that an error stays one line
        print(_NO_RECORD_WARNING, file=sys.stderr)
    if nan:
        print(
            f"unet-transforms: warning: {args.image} holds {nan} NaN value(s) of {pixels}; "
            "the predictions near them are undefined",
            file=sys.stderr,
        )
    return 0


def _normalize(image: np.ndarray, record: dict[str, Any] | None, *, to_gray: bool) -> np.ndarray:
    """The model's float32 input from raw pixels: ``(pixels / scale - mean[c]) / std[c]``
    (:func:`~unet_transforms.checkpoint.read_normalization`); without a record, pixels
    divided by the dtype's maximum. ``to_gray`` averages the channels after scaling."""
    scale = "dtype_max" if record is None else record["scale"]
    if scale == "dtype_max":
        scale = np.iinfo(image.dtype).max if image.dtype.kind in "iu" else 1.0
    x = image.astype(np.float32)  # a new array: the image read is left as it is
    if scale != 1:
        x /= np.float32(scale)
    if to_gray and x.shape[0] != 1:
        x = x.mean(0, keepdims=True, dtype=np.float32)
    if record is not None:
        spread = (-1,) + (1,) * (x.ndim - 1)
        x -= np.asarray(record["mean"], np.float32).reshape(spread)
        x /= np.asarray(record["std"], np.float32).reshape(spread)
    return x


def _check_float_output(path: str, kind: str, *, image: str | None = None) -> None:
    """Refuses an output that cannot hold float32 ``kind``, before any work."""
    if not path.lower().endswith((".tif", ".tiff")):
        raise CLIError(
            f"--output-kind {kind} writes float32 channels as TIFF: give -o *.tif, got {path}"
        )
    try:
        import tifffile  # noqa: F401
    except ImportError as e:
        raise CLIError(
            f"--output-kind {kind} needs tifffile: pip install 'unet-transforms[io]'"
        ) from e
    _check_output(path, classes=1, image=image)


def _write_float(values: np.ndarray, path: str) -> None:
    """Writes ``(C, *spatial)`` float32 values atomically as a TIFF of axes ``C[Z]YX``."""
    import tifffile

    axes = "CYX" if values.ndim == 3 else "CZYX"
    with _output_file(path) as file:
        tifffile.imwrite(file, values, photometric="minisblack", metadata={"axes": axes})


def _write_labels(labels: np.ndarray, path: str) -> None:
    """Writes labels atomically: ``path`` is the old file or the whole new one."""
    with _output_file(path) as file:
        if _uses_tifffile(path, labels.ndim):
            import tifffile

            tifffile.imwrite(file, labels)
        else:
            _label_picture(labels).save(file, format=_pil_format(path))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "positive int"  # argparse names the type in its error


def _add_max_pixels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=_DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse images with more pixels (voxels), read from the header before "
        f"decoding: a guard against decompression bombs (default {_DEFAULT_MAX_PIXELS})",
    )


_SEGMENT_CONTRACT = """\
input contract:
  The image is read as (C, H, W), or (C, D, H, W) for a TIFF volume; alpha is dropped.
  It must have the model's number of input channels (--to-gray averages them into one
  for a 1-channel model). Each channel c becomes the model's input as

      x[c] = (pixels[c] / scale - mean[c]) / std[c]

  by the checkpoint's metadata["normalization"] record, written by save_checkpoint's
  caller: {"scale": "dtype_max" or a number, "mean": [...], "std": [...]}.
  scale "dtype_max" divides integer images by their dtype's maximum (255 for 8-bit,
  65535 for 16-bit) and leaves float images as they are; mean and std hold one value
  per channel, or one for all. Flat metadata "mean" and "std" (older checkpoints) are
  read with scale "dtype_max". A checkpoint with neither gets a warning on stderr and
  is run on pixels / the dtype's maximum, without mean or std.
"""


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
    _add_geometry_options(plan, mirror=False)
    plan.set_defaults(run=_plan)

    preview = sub.add_parser("preview", help="draw the tile layout over an image")
    preview.add_argument("image", help="PNG, JPEG or TIFF file")
    preview.add_argument("-o", "--output", required=True, help="output PNG")
    preview.add_argument(
        "--tiles", type=int, nargs="+", metavar="I", help="only these tile indices (default: all)"
    )
    preview.add_argument(
        "--scale", type=float, default=1.0, help="picture size relative to the canvas (default 1)"
    )
    preview.add_argument(
        "--max-tiles",
        type=int,
        default=None,
        help="most tiles to outline (default: unet_transforms.viz.MAX_TILES, 10000); 0 for "
        "no limit",
    )
    _add_max_pixels_option(preview)
    _add_geometry_options(preview)
    preview.set_defaults(run=_preview)

    segment = sub.add_parser(
        "segment",
        help="segment an image with a trained checkpoint",
        description="Segment an image with a checkpoint written by save_checkpoint, tile "
        "by tile (the overlap-tile strategy).",
        epilog=_SEGMENT_CONTRACT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    segment.add_argument("image", help="PNG, JPEG or TIFF file")
    segment.add_argument("--checkpoint", required=True, help="file written by save_checkpoint")
    segment.add_argument(
        "-o",
        "--output",
        required=True,
        help="the file to write: a label image (PNG or TIFF), or a float32 TIFF for "
        "--output-kind probabilities/logits",
    )
    segment.add_argument(
        "--output-kind",
        choices=("labels", "probabilities", "logits"),
        default="labels",
        help="labels: the class per pixel (default); probabilities (softmax over the "
        "classes, sigmoid for one) or logits: (C, [D,] H, W) float32 in a TIFF",
    )
    segment.add_argument(
        "--blend",
        choices=("crop", "gaussian", "hann"),
        default="crop",
        help="how overlapping tiles are merged: crop (each pixel from one tile, exact; "
        "default), gaussian or hann (weighted towards tile centres)",
    )
    segment.add_argument(
        "--tta",
        choices=("none", "flips", "d4"),
        default="none",
        help="test-time augmentation: none (default); flips (every tile in all 2**ndim "
        "flips) or d4 (2-D square tiles: 8 rotations and mirror images), averaged per "
        "tile at that many times the cost",
    )
    segment.add_argument(
        "--to-gray",
        action="store_true",
        help="average the image's channels into one, for a 1-channel model (otherwise "
        "a channel count that differs from the model's is an error)",
    )
    segment.add_argument("--batch-size", type=int, default=None)
    segment.add_argument("--device", default=None, help="e.g. cpu or cuda:0")
    segment.add_argument("--progress", action="store_true", help="show a progress bar")
    segment.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="TARGET",
        help="a model class the checkpoint may build besides the library's own, e.g. "
        "monai.networks.nets.UNet (repeat for more); nothing else a file names is imported",
    )
    _add_max_pixels_option(segment)
    segment.set_defaults(run=_segment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Every error becomes one line on stderr and a non-zero status: 2 for an error, 130
    for an interruption (Ctrl-C once the command runs, after its imports). Files are
    written atomically, so an error or an interruption leaves an existing output as it
    was.

    Example:
        >>> main(["plan", "--image-size", "512", "512", "--unet-input", "572", "--json"])
        ... # doctest: +ELLIPSIS
        {"image_size": [512, 512], "input_size": [572, 572], "output_size": [388, 388], ...}
        0
    """
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except KeyboardInterrupt:
        print("unet-transforms: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        message = "not enough memory (a smaller image, --scale or --batch-size may help)"
    except (CLIError, ValueError, TypeError, OSError, ImportError) as e:
        message = _one_line(e)
    except Exception as e:  # a library or torch error: its first line, never a traceback
        message = f"{type(e).__name__}: {_one_line(e)}"
    print(f"unet-transforms: error: {message}", file=sys.stderr)
    return 2


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (torch's run to many lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
