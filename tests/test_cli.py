"""The unet-transforms command line, run as a user would (subprocess)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tifffile
import torch

from unet_transforms import TileGeometry, TileGrid
from unet_transforms.cli import CLIError, main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unet_transforms", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def run_here(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs the command in this process (fast); same exit status and output as a subprocess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess[str], match: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert match in lines[0], lines[0]


def test_plan_json_matches_the_grid():
    result = run("plan", "--image-size", "512", "512", "--unet-input", "572", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    grid = TileGrid(512, TileGeometry.unet(input_size=572))
    assert report["tiles"] == [2, 2] and report["num_tiles"] == 4
    assert report["padding"] == [list(p) for p in grid.padding]
    assert report["canvas_size"] == [956, 956]
    assert report["step"] == [384, 384]
    assert report["cost_ratio"] == pytest.approx(4 * 572 * 572 / (512 * 512))


def test_plan_table_for_the_paper_geometry():
    result = run(
        "plan",
        "--image-size",
        "512",
        "512",
        "--input-size",
        "572",
        "--output-size",
        "388",
        "--align",
        "start",
    )
    assert result.returncode == 0, result.stderr
    assert "2 x 2 = 4" in result.stdout
    assert "92+356 x 92+356" in result.stdout
    assert "960 x 960" in result.stdout


def test_plan_3d():
    result = run(
        "plan",
        "--image-size",
        "60",
        "300",
        "300",
        "--unet-input",
        "116",
        "132",
        "132",
        "--depth",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output_size"] == [28, 44, 44]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            ("plan", "--image-size", "512", "512", "--unet-input", "570"),
            "nearest valid input sizes: 556 or 572",
        ),
        (("plan", "--image-size", "512"), "--image-size takes 2 or 3 sizes"),
        (
            ("plan", "--image-size", "512", "512"),
            "give --unet-input N, or both --input-size and --output-size",
        ),
        (
            ("plan", "--image-size", "512", "512", "--input-size", "10", "--output-size", "20"),
            "output_size must not exceed input_size",
        ),
        (("plan", "--image-size", "5x5"), "invalid int value"),
        (
            ("preview", "missing.png", "-o", "x.png", "--unet-input", "572"),
            "image file not found: missing.png",
        ),
        (
            ("segment", "in.png", "--checkpoint", "m.pt", "-o", "x.png"),
            "checkpoint file not found: m.pt",
        ),
        (("frobnicate",), "invalid choice"),
        (
            ("plan", "--image-size", "512", "512", "--unet-input", "572", "--step", "100"),
            "--step is derived from --unet-input",
        ),
        (
            (
                "plan",
                "--image-size",
                "64",
                "64",
                "--input-size",
                "12",
                "--output-size",
                "8",
                "--depth",
                "3",
            ),
            "--depth and --convs-per-level go with --unet-input",
        ),
        (
            (
                "plan",
                "--image-size",
                "9",
                "9",
                "9",
                "--input-size",
                "12",
                "12",
                "--output-size",
                "8",
            ),
            "--input-size takes 1 or 3 sizes for a 3-D image, got 2",
        ),
        (
            ("plan", "--image-size", "9", "9", "--unet-input", "572", "--mode", "symmetric"),
            "unrecognized arguments: --mode symmetric",
        ),
        (
            ("preview", "in.png", "-o", ".", "--unet-input", "572"),
            "-o/--output must be a file name such as mask.png, got a directory",
        ),
        (
            ("preview", "in.png", "-o", "t.png", "--unet-input", "572", "--scale", "0"),
            "scale must be a positive finite number, got 0.0",
        ),
        (
            ("preview", "in.png", "-o", "t.png", "--unet-input", "572", "--scale", "1e5"),
            "use a smaller scale",
        ),
        (
            ("preview", "in.png", "-o", "out/noext", "--unet-input", "572"),
            "-o/--output needs an image file extension such as .png or .tif, got 'out/noext'",
        ),
        (
            ("preview", "in.png", "-o", "in.png/x.png", "--unet-input", "572"),
            "in.png is a file, not a folder",
        ),
    ],
)
def test_bad_arguments_give_one_clear_line(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    assert_one_line_error(run_here(*args), match)


def test_a_bad_argument_in_a_real_process(tmp_path):
    assert_one_line_error(
        run("plan", "--image-size", "5", "5", "--unet-input", "570", cwd=tmp_path), "556 or 572"
    )


def test_unreadable_image_and_checkpoint(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert_one_line_error(
        run_here("preview", str(bad), "-o", str(tmp_path / "t.png"), "--unet-input", "572"),
        "cannot read",
    )
    good = tmp_path / "good.png"
    PIL.Image.fromarray(np.zeros((40, 50), dtype=np.uint8)).save(good)
    not_a_checkpoint = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, not_a_checkpoint)
    assert_one_line_error(
        run(
            "segment",
            str(good),
            "--checkpoint",
            str(not_a_checkpoint),
            "-o",
            str(tmp_path / "m.png"),
        ),
        "is not a unet-transforms checkpoint",
    )


def test_segment_and_preview_with_a_saved_checkpoint(tmp_path):
    from unet_transforms.checkpoint import load_checkpoint, save_checkpoint
    from unet_transforms.models import UNet

    torch.manual_seed(0)
    model = UNet(1, 3, depth=2, base_channels=2)
    geometry = model.geometry(input_size=60)
    save_checkpoint(tmp_path / "m.pt", model, geometry, metadata={"mean": 0.5, "std": 0.25})
    loaded, loaded_geometry, meta = load_checkpoint(tmp_path / "m.pt")
    assert loaded_geometry == geometry and meta == {"mean": 0.5, "std": 0.25}
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    image = np.random.default_rng(0).integers(0, 255, (45, 70), dtype=np.uint8)
    PIL.Image.fromarray(image).save(tmp_path / "in.png")
    result = run(
        "segment",
        str(tmp_path / "in.png"),
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "-o",
        str(tmp_path / "out" / "mask.png"),
    )
    assert result.returncode == 0, result.stderr
    with PIL.Image.open(tmp_path / "out" / "mask.png") as written:
        labels = np.asarray(written)
    x = (torch.from_numpy(image).float()[None] / 255.0 - 0.5) / 0.25
    from unet_transforms import predict_tiled

    expected = predict_tiled(loaded, x, geometry).argmax(0).numpy()
    assert labels.shape == (45, 70)
    np.testing.assert_array_equal(labels, expected)
    preview = run_here(
        "preview",
        str(tmp_path / "in.png"),
        "-o",
        str(tmp_path / "t.png"),
        "--unet-input",
        "60",
        "--depth",
        "2",
    )
    assert preview.returncode == 0, preview.stderr
    with PIL.Image.open(tmp_path / "t.png") as picture:
        assert picture.size == TileGrid((45, 70), geometry).padded_size[::-1]


def test_tiff_layouts_follow_the_files_axes(tmp_path):
    from unet_transforms.cli import read_image

    rng = np.random.default_rng(0)
    cases = [
        ((20, 30), {}, (1, 20, 30)),
        ((20, 30, 3), {}, (3, 20, 30)),  # interleaved RGB
        ((3, 20, 30), {"photometric": "rgb", "planarconfig": "separate"}, (3, 20, 30)),
        ((5, 20, 30), {}, (1, 5, 20, 30)),  # pages: a volume
        ((5, 20, 3), {"photometric": "minisblack"}, (1, 5, 20, 3)),  # a thin volume, not RGB
        ((20, 30, 4), {}, (3, 20, 30)),  # RGBA: alpha dropped
        ((4, 20, 30, 3), {"photometric": "rgb"}, (3, 4, 20, 30)),  # an RGB volume
        ((4, 20, 30), {"imagej": True, "metadata": {"axes": "CYX"}}, (4, 20, 30)),  # channels
        ((20, 30, 2), {"photometric": "minisblack", "extrasamples": ["unassalpha"]}, (1, 20, 30)),
        ((20, 30, 4), {"photometric": "separated"}, (4, 20, 30)),  # CMYK: kept raw
    ]
    for k, (shape, options, expected) in enumerate(cases):
        array = rng.integers(0, 255, shape, dtype=np.uint8)
        path = str(tmp_path / f"{k}.tif")
        tifffile.imwrite(path, array, **options)
        out = read_image(path)
        assert out.shape == expected, (shape, options)
        assert out.dtype == np.uint8 and set(np.unique(out)) <= set(np.unique(array))
    tifffile.imwrite(
        tmp_path / "4d.tif", np.zeros((2, 4, 20, 30), np.uint8), photometric="minisblack"
    )
    result = run_here(
        "preview", str(tmp_path / "4d.tif"), "-o", str(tmp_path / "p.png"), "--unet-input", "572"
    )
    assert_one_line_error(result, "unsupported TIFF layout")


def test_segment_refuses_what_it_cannot_write_or_run(tmp_path):
    from unet_transforms.checkpoint import save_checkpoint
    from unet_transforms.models import UNet

    model = UNet(1, 2, depth=1, base_channels=1, ndim=3)
    save_checkpoint(tmp_path / "m3.pt", model, model.geometry(input_size=18))
    tifffile.imwrite(tmp_path / "vol.tif", np.zeros((6, 20, 20), np.uint8))
    args = ("segment", str(tmp_path / "vol.tif"), "--checkpoint", str(tmp_path / "m3.pt"))
    assert_one_line_error(run_here(*args, "-o", str(tmp_path / "v.png")), "give -o *.tif")
    assert run_here(*args, "-o", str(tmp_path / "v.tif")).returncode == 0
    assert tifffile.imread(tmp_path / "v.tif").shape == (6, 20, 20)
    net = UNet(1, 2, depth=1, base_channels=1)
    save_checkpoint(
        tmp_path / "m.pt", net, net.geometry(input_size=18), metadata={"mean": 0.0, "std": 0}
    )
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    args = ("segment", str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "m.pt"))
    assert_one_line_error(
        run_here(*args, "-o", str(tmp_path / "o.png")),
        "metadata['std'] must be a number or a non-empty list of positive finite numbers",
    )
    save_checkpoint(tmp_path / "m.pt", net, net.geometry(input_size=18))
    assert_one_line_error(
        run_here(*args, "-o", str(tmp_path / "o.png"), "--device", "bogus"),
        "device must name a torch device such as 'cpu' or 'cuda:0', got 'bogus'",
    )
    assert_one_line_error(
        run_here(*args, "-o", str(tmp_path / "o.png"), "--device", "meta"), "--device meta"
    )
    if not torch.cuda.is_available():
        assert_one_line_error(
            run_here(*args, "-o", str(tmp_path / "o.png"), "--device", "cuda"),
            "cannot use --device cuda",
        )


def test_many_classes_are_written_as_16_bit_labels(tmp_path):
    from unet_transforms.checkpoint import save_checkpoint
    from unet_transforms.models import UNet

    torch.manual_seed(0)
    net = UNet(1, 300, depth=1, base_channels=1)
    with torch.no_grad():
        net.head.bias.zero_()
        net.head.bias[280] = 100.0  # every pixel is class 280
    save_checkpoint(tmp_path / "m.pt", net, net.geometry(input_size=18))
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    result = run_here(
        "segment",
        str(tmp_path / "in.png"),
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "-o",
        str(tmp_path / "o.png"),
    )
    assert result.returncode == 0, result.stderr
    with PIL.Image.open(tmp_path / "o.png") as written:
        assert np.asarray(written).max() == 280 and np.asarray(written).min() == 280


def small_checkpoint(folder: Path, out_channels: int = 2) -> Path:
    from unet_transforms.checkpoint import save_checkpoint
    from unet_transforms.models import UNet

    torch.manual_seed(0)
    net = UNet(1, out_channels, depth=1, base_channels=1)
    save_checkpoint(folder / "m.pt", net, net.geometry(input_size=18))
    return folder / "m.pt"


@pytest.fixture
def no_inference(monkeypatch):
    """Records calls of predict_tiled and returns nothing: refusals must come first."""
    import unet_transforms.inference

    calls = []
    monkeypatch.setattr(
        unet_transforms.inference, "predict_tiled", lambda *a, **k: calls.append(a)
    )
    return calls


def test_outputs_that_cannot_hold_the_labels_are_refused_before_inference(tmp_path, no_inference):
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    args = ("segment", str(tmp_path / "in.png"), "--checkpoint")
    (tmp_path / "many").mkdir()
    two, many = small_checkpoint(tmp_path), small_checkpoint(tmp_path / "many", 300)
    for checkpoint, output, match in [
        (
            two,
            "mask.jpg",
            "-o/--output: JPEG cannot hold a label image (Pillow mode P): cannot write mode P as JPEG; use .png or .tif",
        ),
        (
            two,
            "mask.webp",
            "WEBP cannot hold a label image (Pillow mode P): the pixel values do not read back unchanged",
        ),
        (many, "mask.jpg", "JPEG cannot hold a label image (Pillow mode I;16)"),
    ]:
        assert_one_line_error(
            run_here(*args, str(checkpoint), "-o", str(tmp_path / output)), match
        )
    assert no_inference == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.pt", "many"]


def test_a_folder_that_cannot_be_written_is_refused_before_inference(tmp_path, no_inference):
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    checkpoint = small_checkpoint(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE)")
    try:
        for command in (
            ("segment", str(tmp_path / "in.png"), "--checkpoint", str(checkpoint)),
            ("preview", str(tmp_path / "in.png"), "--unet-input", "18", "--depth", "1"),
        ):
            result = run_here(*command, "-o", str(locked / "out.png"))
            assert_one_line_error(
                result, f"cannot write {locked / 'out.png'}: Operation not permitted"
            )
            result = run_here(*command, "-o", str(locked / "new" / "out.png"))
            assert_one_line_error(result, "Operation not permitted")
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert no_inference == [] and list(locked.iterdir()) == []


def no_space(file) -> None:
    """Writes a few bytes to ``file`` (opened if it is a path), then fails as a full disk."""
    if isinstance(file, str | Path):
        with open(file, "wb") as opened:
            opened.write(b"partial")
    else:
        file.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_old_result(tmp_path, monkeypatch):
    import PIL.ImageFile

    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    checkpoint = small_checkpoint(tmp_path)
    segment = ("segment", str(tmp_path / "in.png"), "--checkpoint", str(checkpoint))
    preview = ("preview", str(tmp_path / "in.png"), "--unet-input", "18", "--depth", "1")
    for command, output, module, name, fake in [
        (segment, "out.png", PIL.ImageFile, "_save", lambda im, fp, *a, **k: no_space(fp)),
        (preview, "out.png", PIL.ImageFile, "_save", lambda im, fp, *a, **k: no_space(fp)),
        (segment, "out.tif", tifffile, "imwrite", lambda file, *a, **k: no_space(file)),
    ]:
        (tmp_path / output).write_bytes(b"the good old result")
        monkeypatch.setattr(module, name, fake)
        result = run_here(*command, "-o", str(tmp_path / output))
        monkeypatch.undo()
        assert_one_line_error(result, "No space left on device")
        assert (tmp_path / output).read_bytes() == b"the good old result"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.pt", output]
        (tmp_path / output).unlink()


def test_ctrl_c_while_writing_prints_one_line_and_keeps_the_old_result(tmp_path):
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    checkpoint = small_checkpoint(tmp_path)
    (tmp_path / "out.png").write_bytes(b"the good old result")
    command = ["segment", str(tmp_path / "in.png"), "--checkpoint", str(checkpoint)]
    command += ["-o", str(tmp_path / "out.png")]
    script = f"""
import sys, time
import PIL.ImageFile
from unet_transforms.cli import CLIError, main

real = PIL.ImageFile._save

def slow(*args, **kwargs):  # the image data written, then a pause
    real(*args, **kwargs)
    print("writing", flush=True)
    time.sleep(60)

PIL.ImageFile._save = slow
sys.exit(main({command!r}))
"""
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == 130
    assert stderr == "unet-transforms: interrupted\n"
    assert (tmp_path / "out.png").read_bytes() == b"the good old result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.pt", "out.png"]


def png_header_only(path: Path, width: int, height: int) -> None:
    """A 1-bit PNG of any size, compressed to almost nothing (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" * (1 + (width + 7) // 8)
    pixels = zlib.compressobj(9)
    data = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_with_one_line(tmp_path):
    png_header_only(tmp_path / "bomb.png", 14000, 14000)
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    checkpoint = small_checkpoint(tmp_path)
    message = (
        f"{tmp_path / 'bomb.png'} has 196000000 pixels (14000 x 14000), more than "
        "--max-pixels 178956970; give a larger --max-pixels if the file is trusted"
    )
    for command in (
        ("segment", str(tmp_path / "bomb.png"), "--checkpoint", str(checkpoint)),
        ("preview", str(tmp_path / "bomb.png"), "--unet-input", "18", "--depth", "1"),
    ):
        assert_one_line_error(run_here(*command, "-o", str(tmp_path / "o.png")), message)
    assert not (tmp_path / "o.png").exists()


def test_max_pixels(tmp_path):
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    preview = ("preview", str(tmp_path / "in.png"), "-o", str(tmp_path / "t.png"))
    preview += ("--unet-input", "18", "--depth", "1")
    assert_one_line_error(
        run_here(*preview, "--max-pixels", "199"),
        "has 200 pixels (20 x 10), more than --max-pixels 199",
    )
    assert run_here(*preview, "--max-pixels", "200").returncode == 0
    assert_one_line_error(
        run_here(*preview, "--max-pixels", "0"), "invalid positive int value: '0'"
    )
    from unet_transforms.cli import CLIError, read_image

    tifffile.imwrite(tmp_path / "v.tif", np.zeros((3, 20, 30, 3), np.uint8), photometric="rgb")
    assert read_image(str(tmp_path / "v.tif"), max_pixels=1800).shape == (3, 3, 20, 30)
    with pytest.raises(
        CLIError, match=r"has 1800 pixels \(3 x 20 x 30\), more than --max-pixels 1799"
    ):
        read_image(str(tmp_path / "v.tif"), max_pixels=1799)


def test_every_library_error_is_one_line(tmp_path, monkeypatch):
    import unet_transforms.inference

    assert_one_line_error(
        run_here("plan", "--image-size", str(10**30), "5", "--unet-input", "572"),
        "unet-transforms: error: ",
    )
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    checkpoint = small_checkpoint(tmp_path)
    segment = ("segment", str(tmp_path / "in.png"), "--checkpoint", str(checkpoint))
    segment += ("-o", str(tmp_path / "o.png"))

    def fails(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB.\nSee the docs.")

    monkeypatch.setattr(unet_transforms.inference, "predict_tiled", fails)
    result = run_here(*segment)
    assert_one_line_error(result, "unet-transforms: error: RuntimeError: CUDA out of memory.")
    data = torch.load(checkpoint, weights_only=True)
    data["model"]["depth"] = 100000
    torch.save(data, checkpoint)
    result = run_here(*segment)
    assert_one_line_error(result, "model.depth must be an int in [0, 20], got 100000")
    assert not (tmp_path / "o.png").exists()


def test_segment_builds_other_models_only_with_allow(tmp_path):
    from unet_transforms import TileGeometry
    from unet_transforms.checkpoint import save_checkpoint

    config = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 5}
    conv = torch.nn.Conv2d(1, 2, 5)
    save_checkpoint(tmp_path / "c.pt", conv, TileGeometry(24, 20), model_config=config)
    PIL.Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "in.png")
    args = ["segment", str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "c.pt")]
    refused = run_here(*args, "-o", str(tmp_path / "a.png"))
    assert_one_line_error(refused, "_target_ 'torch.nn.Conv2d' is not allowed")
    assert not (tmp_path / "a.png").exists()
    allowed = run_here(*args, "-o", str(tmp_path / "b.png"), "--allow", "torch.nn.Conv2d")
    assert allowed.returncode == 0, allowed.stderr
    with PIL.Image.open(tmp_path / "b.png") as written:
        assert written.size == (40, 30)


def test_labels_of_a_model_without_out_channels(tmp_path):
    # the class count came from out_channels alone: 0 for nn.Identity, and the format
    # check asked for label -1 (OverflowError)
    from unet_transforms import TileGeometry
    from unet_transforms.checkpoint import save_checkpoint

    save_checkpoint(
        tmp_path / "i.pt",
        torch.nn.Identity(),
        TileGeometry(8, 8),
        model_config={"_target_": "torch.nn.Identity"},
    )
    pixels = np.zeros((1, 12, 10), np.uint8)
    pixels[0, :, 5:] = 255
    tifffile.imwrite(tmp_path / "in.tif", pixels[0])
    args = ["segment", str(tmp_path / "in.tif"), "--checkpoint", str(tmp_path / "i.pt")]
    result = run_here(*args, "-o", str(tmp_path / "a.png"), "--allow", "torch.nn.Identity")
    assert result.returncode == 0, result.stderr
    with PIL.Image.open(tmp_path / "a.png") as written:
        labels = np.asarray(written)
    # one channel: sigmoid > 0.5 of the scaled pixels (0 and 1)
    np.testing.assert_array_equal(labels, (pixels[0] > 0).astype(np.uint8))


def test_formats_that_store_only_some_sizes_are_refused(tmp_path, no_inference):
    # ICO passed the 2 x 2 and 1 x 1 samples, then wrote a 50 x 40 label image as 32 x 32
    PIL.Image.new("L", (50, 40)).save(tmp_path / "in.png")
    checkpoint = small_checkpoint(tmp_path)
    result = run_here(
        "segment",
        str(tmp_path / "in.png"),
        "--checkpoint",
        str(checkpoint),
        "-o",
        str(tmp_path / "m.ico"),
    )
    assert_one_line_error(result, "ICO cannot hold a label image (Pillow mode P)")
    assert no_inference == [] and not (tmp_path / "m.ico").exists()


def test_a_refused_run_creates_no_folder_and_a_written_one_creates_them(tmp_path, no_inference):
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    checkpoint = small_checkpoint(tmp_path)
    segment = ("segment", str(tmp_path / "in.png"), "--checkpoint", str(checkpoint))
    result = run_here(*segment, "-o", str(tmp_path / "new" / "a" / "mask.jpg"))
    assert_one_line_error(result, "JPEG cannot hold a label image")
    assert not (tmp_path / "new").exists()
    preview = ("preview", str(tmp_path / "in.png"), "--unet-input", "18", "--depth", "1")
    result = run_here(*preview, "-o", str(tmp_path / "new" / "a" / "p.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new" / "a" / "p.png").is_file()


def test_palette_and_1_bit_tiffs_read_as_pillow_reads_them(tmp_path):
    # tifffile gives palette indices and bools: the model saw indices / 255
    from unet_transforms.cli import read_image

    indices = np.zeros((12, 10), np.uint8)
    indices[:, 5:] = 1
    indices[:3, :3] = 2
    picture = PIL.Image.fromarray(indices, "P")
    picture.putpalette([0, 0, 0, 255, 255, 255, 200, 30, 0] + [0] * (768 - 9))
    picture.save(tmp_path / "p.png")
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, 1] = 255 * 257
    colormap[:, 2] = np.array([200, 30, 0]) * 257
    tifffile.imwrite(tmp_path / "p.tif", indices, photometric="palette", colormap=colormap)
    picture.save(tmp_path / "pillow.tif")
    expected_rgb = read_image(str(tmp_path / "p.png"))
    assert expected_rgb.shape == (3, 12, 10) and expected_rgb.dtype == np.uint8
    for name in ("p.tif", "pillow.tif"):
        got = read_image(str(tmp_path / name))
        assert got.dtype == np.uint8 and np.array_equal(got, expected_rgb), name
    colormap[0, 2] = 1000  # not an 8-bit colour: kept 16-bit
    tifffile.imwrite(tmp_path / "p16.tif", indices, photometric="palette", colormap=colormap)
    wide = read_image(str(tmp_path / "p16.tif"))
    assert wide.dtype == np.uint16 and wide[0, 0, 0] == 1000 and wide[1, 0, 9] == 255 * 257
    bits = PIL.Image.fromarray(indices > 0).convert("1")
    bits.save(tmp_path / "b.tif")
    bits.save(tmp_path / "b.png")
    assert np.array_equal(read_image(str(tmp_path / "b.tif")), read_image(str(tmp_path / "b.png")))


def test_preview_max_tiles(tmp_path):
    PIL.Image.fromarray(np.zeros((60, 50), np.uint8)).save(tmp_path / "in.png")
    args = ["preview", str(tmp_path / "in.png"), "--input-size", "5", "--output-size", "3"]
    refused = run_here(*args, "-o", str(tmp_path / "a.png"), "--max-tiles", "10")
    assert_one_line_error(refused, "more than max_tiles=10")
    drawn = run_here(*args, "-o", str(tmp_path / "b.png"), "--max-tiles", "0")
    assert drawn.returncode == 0, drawn.stderr


def saved_model(
    folder: Path, in_channels: int, out_channels: int, metadata=None, name="m.pt", geometry=None
):
    """A small random UNet saved with ``metadata``; returns (path, model, geometry)."""
    from unet_transforms.checkpoint import save_checkpoint
    from unet_transforms.models import UNet

    torch.manual_seed(0)
    net = UNet(in_channels, out_channels, depth=1, base_channels=2).eval()
    geometry = geometry or net.geometry(input_size=18)
    save_checkpoint(folder / name, net, geometry, metadata=metadata)
    return folder / name, net, geometry


def expected(net, geometry, x: np.ndarray, **options) -> np.ndarray:
    from unet_transforms import predict_tiled

    return predict_tiled(net, torch.from_numpy(x), geometry, **options).numpy()


def rgb_image(path: Path) -> np.ndarray:
    pixels = np.random.default_rng(1).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path)
    return np.moveaxis(pixels, -1, 0)


def segment(image: Path, checkpoint: Path, output: Path, *options: str):
    return run_here(
        "segment", str(image), "--checkpoint", str(checkpoint), "-o", str(output), *options
    )


def test_per_channel_normalization_for_a_3_channel_model(tmp_path):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    record = {"normalization": {"scale": "dtype_max", "mean": mean, "std": std}}
    checkpoint, net, geometry = saved_model(tmp_path, 3, 3, record)
    pixels = rgb_image(tmp_path / "in.png")
    scaled = pixels.astype(np.float32) / np.float32(255)
    x = (scaled - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    logits = expected(net, geometry, x)
    assert not np.allclose(logits, expected(net, geometry, scaled), atol=1e-3)  # it matters
    # the record, and older checkpoints' flat per-channel lists (float() used to fail)
    legacy, _, _ = saved_model(tmp_path, 3, 3, {"mean": mean, "std": std}, name="old.pt")
    for k, path in enumerate((checkpoint, legacy)):
        output = tmp_path / f"{k}.tif"
        result = segment(tmp_path / "in.png", path, output, "--output-kind", "logits")
        assert result.returncode == 0 and result.stderr == "", result.stderr
        np.testing.assert_array_equal(tifffile.imread(output), logits)


def test_a_numeric_scale_divides_every_image(tmp_path):
    record = {"normalization": {"scale": 2.0, "mean": [1.0], "std": [4.0]}}
    checkpoint, net, geometry = saved_model(tmp_path, 1, 2, record)
    pixels = np.random.default_rng(2).integers(0, 65536, (20, 26), dtype=np.uint16)
    PIL.Image.fromarray(pixels).save(tmp_path / "in.png")
    result = segment(
        tmp_path / "in.png", checkpoint, tmp_path / "l.tif", "--output-kind", "logits"
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    x = (pixels[None].astype(np.float32) / np.float32(2) - np.float32(1)) / np.float32(4)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), expected(net, geometry, x))


def test_a_checkpoint_without_a_record_warns_once_naming_the_assumption(tmp_path):
    checkpoint, net, geometry = saved_model(tmp_path, 1, 2)
    pixels = np.random.default_rng(3).integers(0, 256, (20, 26), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(tmp_path / "in.png")
    result = segment(tmp_path / "in.png", checkpoint, tmp_path / "mask.png")
    assert result.returncode == 0
    assert result.stderr == (
        "unet-transforms: warning: the checkpoint has no metadata['normalization'] record; "
        "assuming pixels divided by the dtype's maximum (255 for 8-bit, 65535 for 16-bit; "
        "float images as they are), no mean/std\n"
    )
    with PIL.Image.open(tmp_path / "mask.png") as written:
        labels = np.asarray(written)
    x = pixels[None].astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(labels, expected(net, geometry, x).argmax(0))


def test_channel_counts_must_match_unless_to_gray(tmp_path):
    record = {"normalization": {"scale": "dtype_max", "mean": [0.5], "std": [0.25]}}
    grey_model, net, geometry = saved_model(tmp_path, 1, 2, record)
    pixels = rgb_image(tmp_path / "rgb.png")
    refused = segment(tmp_path / "rgb.png", grey_model, tmp_path / "a.png")
    assert_one_line_error(
        refused,
        f"the model takes 1 channel, {tmp_path / 'rgb.png'} has 3 (give --to-gray to "
        "average them into one)",
    )
    assert not (tmp_path / "a.png").exists()
    result = segment(tmp_path / "rgb.png", grey_model, tmp_path / "b.png", "--to-gray")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    grey = (pixels.astype(np.float32) / np.float32(255)).mean(0, keepdims=True)
    x = (grey - np.float32(0.5)) / np.float32(0.25)
    with PIL.Image.open(tmp_path / "b.png") as written:
        np.testing.assert_array_equal(np.asarray(written), expected(net, geometry, x).argmax(0))
    (tmp_path / "rgb_model").mkdir()
    rgb_model, _, _ = saved_model(tmp_path / "rgb_model", 3, 2)
    PIL.Image.new("L", (20, 10)).save(tmp_path / "grey.png")
    assert_one_line_error(
        segment(tmp_path / "grey.png", rgb_model, tmp_path / "c.png"),
        f"the model takes 3 channels, {tmp_path / 'grey.png'} has 1",
    )
    assert_one_line_error(
        segment(tmp_path / "rgb.png", rgb_model, tmp_path / "c.png", "--to-gray"),
        "--to-gray averages the image's channels into one, for a 1-channel model; this "
        "model takes 3 channels",
    )


def test_each_output_kind_is_written_and_reads_back(tmp_path):
    from unet_transforms.cli import read_image

    record = {"normalization": {"scale": "dtype_max", "mean": [0.4] * 3, "std": [0.3] * 3}}
    checkpoint, net, geometry = saved_model(tmp_path, 3, 4, record)
    pixels = rgb_image(tmp_path / "in.png")
    x = (pixels.astype(np.float32) / np.float32(255) - np.float32(0.4)) / np.float32(0.3)
    logits = expected(net, geometry, x)
    for kind, output in [("labels", "m.png"), ("probabilities", "p.tif"), ("logits", "l.tiff")]:
        result = segment(tmp_path / "in.png", checkpoint, tmp_path / output, "--output-kind", kind)
        assert result.returncode == 0 and result.stderr == "", result.stderr
    with PIL.Image.open(tmp_path / "m.png") as written:
        labels = np.asarray(written)
    probabilities = tifffile.imread(tmp_path / "p.tif")
    written_logits = tifffile.imread(tmp_path / "l.tiff")
    assert probabilities.dtype == written_logits.dtype == np.float32
    assert probabilities.shape == written_logits.shape == (4, 23, 31)
    np.testing.assert_array_equal(written_logits, logits)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        probabilities, torch.softmax(torch.from_numpy(logits), 0), atol=1e-6
    )
    np.testing.assert_array_equal(labels, logits.argmax(0))
    assert read_image(str(tmp_path / "p.tif")).shape == (4, 23, 31)  # channels, not pages
    refused = segment(
        tmp_path / "in.png", checkpoint, tmp_path / "p.png", "--output-kind", "logits"
    )
    assert_one_line_error(
        refused, "--output-kind logits writes float32 channels as TIFF: give -o *.tif"
    )
    assert not (tmp_path / "p.png").exists()


def test_blend_is_passed_to_the_merger(tmp_path):
    # overlapping tiles at an odd step (not a multiple of 2**depth): tiles disagree
    overlapping = TileGeometry(26, 10, step=5)
    checkpoint, net, geometry = saved_model(tmp_path, 1, 2, geometry=overlapping)
    pixels = np.random.default_rng(4).integers(0, 256, (30, 41), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(tmp_path / "in.png")
    x = pixels[None].astype(np.float32) / np.float32(255)
    for blend in ("crop", "gaussian", "hann"):
        output = tmp_path / f"{blend}.tif"
        result = segment(
            tmp_path / "in.png", checkpoint, output, "--blend", blend, "--output-kind", "logits"
        )
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(
            tifffile.imread(output), expected(net, geometry, x, blend=blend), atol=1e-6
        )
    crop, gaussian = (tifffile.imread(tmp_path / f"{b}.tif") for b in ("crop", "gaussian"))
    assert not np.allclose(crop, gaussian, atol=1e-4)  # the option changes the result
    assert_one_line_error(
        segment(tmp_path / "in.png", checkpoint, tmp_path / "o.png", "--blend", "max"),
        "argument --blend: invalid choice: 'max'",
    )


def test_tta_is_passed_to_predict_tiled(tmp_path):
    checkpoint, net, geometry = saved_model(tmp_path, 1, 2)
    pixels = np.random.default_rng(5).integers(0, 256, (21, 17), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(tmp_path / "in.png")
    x = pixels[None].astype(np.float32) / np.float32(255)
    written = {}
    for tta in ("none", "flips", "d4"):
        output = tmp_path / f"{tta}.tif"
        result = segment(
            tmp_path / "in.png", checkpoint, output, "--tta", tta, "--output-kind", "logits"
        )
        assert result.returncode == 0, result.stderr
        written[tta] = tifffile.imread(output)
        want = expected(net, geometry, x, tta=None if tta == "none" else tta)
        np.testing.assert_allclose(written[tta], want, atol=1e-6)
    assert not np.allclose(written["none"], written["flips"], atol=1e-4)
    assert_one_line_error(
        segment(tmp_path / "in.png", checkpoint, tmp_path / "o.png", "--tta", "rot90"),
        "argument --tta: invalid choice: 'rot90'",
    )


def test_segment_help_states_the_input_contract():
    result = run_here("segment", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for part in (
        'metadata["normalization"] record',
        "x[c] = (pixels[c] / scale - mean[c]) / std[c]",
        'scale "dtype_max" divides integer images by their dtype\'s maximum',
        "--to-gray",
        "--output-kind {labels,probabilities,logits}",
        "--blend {crop,gaussian,hann}",
        "--tta {none,flips,d4}",
        "gets a warning on stderr",
    ):
        assert part in text, part


def test_segment_warns_about_nan_pixels(tmp_path):

    from unet_transforms.checkpoint import save_checkpoint
    from unet_transforms.models import UNet

    model = UNet(1, 2, depth=1, base_channels=2)
    record = {"normalization": {"scale": 1.0, "mean": [0.0], "std": [1.0]}}
    save_checkpoint(tmp_path / "m.pt", model, model.geometry(input_size=36), metadata=record)
    image = np.random.default_rng(0).random((30, 40), dtype=np.float32)
    image[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "in.tif", image)
    args = ["segment", str(tmp_path / "in.tif"), "--checkpoint", str(tmp_path / "m.pt")]
    result = run_here(*args, "-o", str(tmp_path / "out.png"))
    assert result.returncode == 0, result.stderr
    assert "holds 1 NaN value(s) of 1200" in result.stderr
    clean = image.copy()
    clean[3, 4] = 0.5
    tifffile.imwrite(tmp_path / "in.tif", clean)
    result = run_here(*args, "-o", str(tmp_path / "out.png"))
    assert result.returncode == 0 and "NaN" not in result.stderr


def test_a_one_channel_model_checks_the_format_for_labels_0_and_1(tmp_path, no_inference):
    # a sigmoid model gives labels 0 and 1; the format was checked for label 0 only, so
    # GIF passed and wrote every foreground pixel as 0
    PIL.Image.new("L", (20, 10)).save(tmp_path / "in.png")
    checkpoint = small_checkpoint(tmp_path, out_channels=1)
    result = segment(tmp_path / "in.png", checkpoint, tmp_path / "mask.gif")
    assert_one_line_error(result, "GIF cannot hold a label image")
    assert no_inference == []


def test_16_bit_images_pillow_reads_in_other_modes(tmp_path):
    from unet_transforms.cli import read_image

    pixels = np.random.default_rng(0).integers(0, 65536, (12, 9), dtype=np.uint16)
    with open(tmp_path / "in.pgm", "wb") as f:  # a 16-bit PGM: Pillow's 32-bit mode "I"
        f.write(b"P5 9 12 65535\n" + pixels.astype(">u2").tobytes())
    read = read_image(str(tmp_path / "in.pgm"))
    assert read.dtype == np.uint16  # divided by 65535, not 2**31 - 1
    np.testing.assert_array_equal(read[0], pixels)
    # a 16-bit RGB PNG: Pillow keeps 8 bits of each sample, so it is refused
    rows = b"".join(b"\x00" + np.repeat(row, 3).astype(">u2").tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 9, 12, 16, 2, 0, 0, 0)
    (tmp_path / "rgb16.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(CLIError, match="16-bit colour or grey\\+alpha PNG"):
        read_image(str(tmp_path / "rgb16.png"))


def test_outputs_refused_before_inference_same_path_long_name_complex(tmp_path, no_inference):
    PIL.Image.new("L", (20, 10)).save(tmp_path / "img.png")
    checkpoint = small_checkpoint(tmp_path)
    before = (tmp_path / "img.png").read_bytes()
    for command in ("segment", "preview"):
        options = ["--checkpoint", str(checkpoint)] if command == "segment" else []
        if command == "preview":
            options = ["--unet-input", "204"]
        result = run_here(
            command, str(tmp_path / "img.png"), *options, "-o", f"{tmp_path}/./img.png"
        )
        assert_one_line_error(result, "is the input image")
    assert (tmp_path / "img.png").read_bytes() == before
    result = segment(tmp_path / "img.png", checkpoint, tmp_path / ("m" * 300 + ".png"))
    assert_one_line_error(result, "bytes a file name may have")
    tifffile.imwrite(tmp_path / "c.tif", np.ones((10, 20), np.complex64))
    result = segment(tmp_path / "c.tif", checkpoint, tmp_path / "c.png")
    assert_one_line_error(result, "image must have a boolean, integer or floating dtype")
    assert no_inference == []


def test_to_gray_for_a_model_that_does_not_say_its_channels(tmp_path):
    from unet_transforms.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1)
    save_checkpoint(
        tmp_path / "c.pt",
        net,
        TileGeometry(8, 8),
        model_config={
            "_target_": "torch.nn.Conv2d",
            "in_channels": 1,
            "out_channels": 2,
            "kernel_size": 1,
        },
    )
    rgb = rgb_image(tmp_path / "rgb.png")
    result = segment(
        tmp_path / "rgb.png",
        tmp_path / "c.pt",
        tmp_path / "m.png",
        "--to-gray",
        "--allow",
        "torch.nn.Conv2d",
    )
    assert result.returncode == 0, result.stderr
    gray = (rgb.astype(np.float32) / 255).mean(0, keepdims=True, dtype=np.float32)
    labels = expected(net.eval(), TileGeometry(8, 8), gray, output="labels")
    with PIL.Image.open(tmp_path / "m.png") as written:
        np.testing.assert_array_equal(np.asarray(written), labels)


def test_a_compiled_model_is_saved_as_the_model_it_wraps(tmp_path):
    from unet_transforms.checkpoint import load_checkpoint, save_checkpoint
    from unet_transforms.models import UNet

    net = UNet(1, 2, depth=1, base_channels=1)
    save_checkpoint(tmp_path / "c.pt", torch.compile(net), net.geometry(input_size=18))
    loaded, _, _ = load_checkpoint(tmp_path / "c.pt")
    for (name, a), (other, b) in zip(
        net.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(a, b)
