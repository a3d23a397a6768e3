"""Segment a 20000 x 20000 "whole slide" with bounded memory: zarr in, dask, zarr out.

A synthetic uint8 image (round "cells" on a textured background, 400 megapixels by
default) is written chunk by chunk to ``<out>/slide.zarr``. ``predict_dask`` turns a
tiny valid-convolution network (a stand-in for a trained U-Net) into a lazy
prediction over it; its ``argmax`` is streamed into ``<out>/labels.zarr`` block by
block, so only a few blocks are ever in memory, whatever ``--size``. The script prints
the throughput (megapixels per second) and the peak resident memory (from
``resource.getrusage``), then checks itself: for a few random windows and the
bottom-right corner it compares the stored labels and the lazy prediction with
``predict_tiled`` run on the same region, read back from the input zarr with the
network's context around it.

``align="start"`` puts every chunk boundary of the prediction on a multiple of the
block size, the regular chunking zarr needs; with ``align="center"`` (the default of
``predict_dask``), rechunk before ``to_zarr``.

Run ``python examples/whole_slide.py`` (about a minute on 2 CPU cores), or
``--size 4096`` for a quick look; ``--scheduler processes`` or ``distributed`` to use
worker processes instead of threads.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import torch
import zarr

from unet_transforms import TileGeometry, predict_tiled
from unet_transforms.dask import predict_dask


def make_model() -> torch.nn.Module:
    """A tiny valid-convolution network: two 3x3 convolutions (2 px margin), 2 classes.

    A stand-in for a trained network, with hand-set weights that find bright cells: 8
    channels of 3x3 means above thresholds 60, 70, ..., 130, smoothed once more, and a
    foreground logit that grows with how many thresholds a pixel passes.
    """
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 2, 1),
    )
    with torch.no_grad():
        net[0].weight.fill_(1 / 9)
        net[0].bias.copy_(-torch.arange(60.0, 140.0, 10.0))
        net[2].weight.zero_()
        for c in range(8):
            net[2].weight[c, c] = 1 / 9
        net[2].bias.zero_()
        net[4].weight.zero_()
        net[4].weight[1, :, 0, 0] = 1 / 8
        net[4].bias.copy_(torch.tensor([0.0, -5.0]))
    return net.eval()


def slide_chunk(y0: int, x0: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The synthetic image on rows ``y0:y0+h``, columns ``x0:x0+w``: seamless across chunks.

    Cells are discs on a 64-pixel lattice, jittered and sized by a hash of their lattice
    cell; the background is a smooth texture plus noise.
    """
    h, w = shape
    y = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    x = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    background = 40 + 15 * np.sin(x / 97 + np.sin(y / 131)) * np.cos(y / 71)
    cy, cx = np.floor(y / 64), np.floor(x / 64)
    hashed = np.sin(cy * 12.9898 + cx * 78.233) * 43758.5453
    frac = hashed - np.floor(hashed)  # pseudo-random in [0, 1) per lattice cell
    dy = y - (cy * 64 + 32 + 12 * (frac - 0.5))
    dx = x - (cx * 64 + 32 + 12 * (0.5 - frac))
    radius = 10 + 14 * frac
    cells = np.where(dy**2 + dx**2 < radius**2, 110 + 60 * frac, 0)
    noise = np.random.default_rng([seed, y0, x0]).normal(0, 8, shape)
    return np.clip(background + cells + noise, 0, 255).astype(np.uint8)


def write_slide(path: Path, size: int, chunk: int) -> zarr.Array:
    """Writes the ``(1, size, size)`` uint8 slide chunk by chunk (one chunk in memory)."""
    z = zarr.create_array(  # overwrite: a kept or interrupted earlier run may have left one
        store=str(path),
        shape=(1, size, size),
        chunks=(1, chunk, chunk),
        dtype="uint8",
        overwrite=True,
    )
    for y0 in range(0, size, chunk):
        for x0 in range(0, size, chunk):
            h, w = min(chunk, size - y0), min(chunk, size - x0)
            z[0, y0 : y0 + h, x0 : x0 + w] = slide_chunk(y0, x0, (h, w))
    return z


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``resource.getrusage``)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # KiB on Linux, B on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS to its current RSS (Linux only); True if it did."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def worker_peak_rss(_: object = None) -> tuple[int, float]:
    """``(pid, peak RSS in MiB)`` of a worker process, from ``/proc`` (Linux; else 0).

    A spawned process's ``getrusage`` also counts its parent's peak before the exec,
    so workers read their own high-water mark instead.
    """
    time.sleep(0.2)  # lets a pool hand these calls to every worker
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        kib = 0
    return os.getpid(), kib / 1024


def segment(
    image: da.Array, labels_path: Path, geometry: TileGeometry, scheduler: str, workers: int
) -> tuple[da.Array, list[float]]:
    """Streams the argmax of the lazy prediction into ``labels_path``.

    Returns the lazy logits and the peak RSS of each worker process (none for threads).
    """
    model = make_model()
    logits = predict_dask(model, image, geometry, align="start", meta_channels=2)
    labels = logits.argmax(axis=0).astype(np.uint8)
    store = labels.to_zarr(str(labels_path), compute=False, overwrite=True)
    if scheduler == "distributed":
        from distributed import Client, LocalCluster

        # distributed's default MALLOC_TRIM_THRESHOLD_ for workers halves CPU throughput
        # (glibc then maps and unmaps every tile's buffers): let glibc tune itself.
        unset = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        with (
            dask.config.set(unset),
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            dask.compute(store)
            peaks = [peak for _, peak in client.run(worker_peak_rss).values()]
    elif scheduler == "processes":
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            dask.compute(store, scheduler="processes", pool=pool)
            peaks = list(dict(pool.map(worker_peak_rss, range(4 * workers))).values())
    else:
        dask.compute(store, scheduler="threads", num_workers=workers)
        peaks = []
    return logits, peaks


def self_check(
    logits: da.Array,
    image: zarr.Array,
    labels: zarr.Array,
    geometry: TileGeometry,
    windows: int,
    seed: int = 0,
) -> None:
    """Compares stored labels and lazy logits with predict_tiled on a few windows."""
    model = make_model()
    size = image.shape[1:]
    side = min(256, *size)
    rng = np.random.default_rng(seed)
    starts = [tuple(int(rng.integers(0, n - side + 1)) for n in size) for _ in range(windows)]
    starts.append(tuple(n - side for n in size))  # the corner: mirroring at two borders
    margin = geometry.margin
    for start in starts:
        window = tuple(slice(s, s + side) for s in start)
        # the window with the network's context around it, clipped to the image
        context = tuple(
            slice(max(s - m, 0), min(s + side + m, n))
            for s, m, n in zip(start, margin, size, strict=True)
        )
        region = image[(slice(None), *context)]
        tiled = predict_tiled(model, region, geometry).numpy()
        inner = tuple(
            slice(w.start - c.start, w.stop - c.start)
            for w, c in zip(window, context, strict=True)
        )
        tiled = tiled[(slice(None), *inner)]
        lazy = logits[(slice(None), *window)].compute(scheduler="threads")
        stored = labels[window]
        if not np.array_equal(stored, lazy.argmax(axis=0)):
            raise SystemExit(f"self-check failed: stored labels differ at window {start}")
        np.testing.assert_allclose(lazy, tiled, rtol=1e-5, atol=1e-4)
        differ = stored != tiled.argmax(axis=0)
        gap = np.abs(tiled[0] - tiled[1])
        if np.any(differ & (gap > 1e-4)):  # a different label only where the logits tie
            raise SystemExit(f"self-check failed: labels differ from predict_tiled at {start}")
        print(f"  window at {start}: {side}x{side} labels and logits match predict_tiled")


def positive(text: str) -> int:
    """An argparse type: a positive int."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=positive, default=20000, help="image side in pixels")
    parser.add_argument("--chunk", type=positive, default=2048, help="zarr chunk side in pixels")
    parser.add_argument(
        "--scheduler", choices=["threads", "processes", "distributed"], default="threads"
    )
    parser.add_argument("--workers", type=positive, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("out/whole_slide"))
    parser.add_argument("--windows", type=int, default=3, help="random windows to check")
    parser.add_argument("--keep", action="store_true", help="keep the zarr stores")
    args = parser.parse_args()
    if args.windows < 0:
        parser.error(f"--windows must be >= 0, got {args.windows}")

    # One torch thread per dask worker: more threads only compete for the same cores.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for worker processes started from here

    args.out.mkdir(parents=True, exist_ok=True)
    slide_path, labels_path = args.out / "slide.zarr", args.out / "labels.zarr"
    megapixels = args.size**2 / 1e6
    t0 = time.perf_counter()
    image = write_slide(slide_path, args.size, args.chunk)
    t_write = time.perf_counter() - t0
    print(f"wrote a {args.size}x{args.size} uint8 slide ({megapixels:.0f} MP) in {t_write:.1f} s")

    model = make_model()
    geometry = TileGeometry.from_model(model, 260)  # 260 -> 256: tiles of 256 pixels
    # Importing torch and writing the slide briefly took more memory than they keep:
    # measure the segmentation's peak from here on.
    rss_start = peak_rss_mib()
    if reset_peak_rss():
        rss_start = peak_rss_mib()
    t0 = time.perf_counter()
    logits, worker_peaks = segment(
        da.from_zarr(image), labels_path, geometry, args.scheduler, args.workers
    )
    t_seg = time.perf_counter() - t0
    own = peak_rss_mib()
    print(
        f"segmented with predict_dask ({args.scheduler}, {args.workers} workers, "
        f"{geometry}): {t_seg:.1f} s, {megapixels / t_seg:.1f} MP/s"
    )
    print(f"peak RSS: {own:.0f} MiB in this process ({rss_start:.0f} MiB before segmenting)")
    if worker_peaks:
        print(
            f"          {max(worker_peaks):.0f} MiB in the largest of {len(worker_peaks)} workers"
        )

    labels = zarr.open_array(str(labels_path), mode="r")
    print(f"self-check on {args.windows + 1} windows:")
    self_check(logits, image, labels, geometry, args.windows)
    print(f"foreground fraction: {float(da.from_zarr(labels).mean().compute()):.3f}")
    if not args.keep:
        shutil.rmtree(slide_path)
        shutil.rmtree(labels_path)
    print("ok")


if __name__ == "__main__":
    main()
