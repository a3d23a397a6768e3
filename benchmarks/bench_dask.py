"""predict_dask (threads, processes, distributed) against predict_tiled on one large image.

The same tiny valid-convolution network (two 3x3 convolutions, 8 channels, 2 classes,
tiles of 260 -> 256 pixels) segments the same 8192 x 8192 uint8 image, stored once as a
``.npy`` file (read whole by ``predict_tiled``) and as a zarr store with 2048-pixel
chunks (read block by block by ``predict_dask``). Every configuration runs in a fresh
Python process, so its peak resident memory is its own; on Linux the peak is reset
after the imports (``/proc/self/clear_refs``), so the table shows both the peak of the
run and the level it started from. Worker processes are reported by the largest peak
among them (imports included). The time is the best of ``--repeats`` runs of the
computation (graph building included; imports, loading the ``.npy`` file, starting the
process pool or the cluster excluded: the first repeat pays for the workers importing
torch). Every configuration computes the float32 logits ``(2, H, W)``:
``predict_tiled`` and ``dask -> RAM`` keep them in memory, ``-> zarr`` streams them to
a zarr store block by block.

Run ``python benchmarks/bench_dask.py`` (a few minutes on 2 cores); ``--append FILE``
adds the table, the date and ``--machine`` to a markdown file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import torch
import zarr

from unet_transforms import TileGeometry, predict_tiled
from unet_transforms.dask import predict_dask

CONFIGS = {
    "tiled-1": "predict_tiled, 1 torch thread",
    "tiled-1-zarr": "predict_tiled, 1 torch thread, reading the zarr store (read ahead)",
    "tiled-n": "predict_tiled, {n} torch threads",
    "tiled-workers": "predict_tiled, workers={n} (1 torch thread each)",
    "dask-threads-ram": "predict_dask, threads ({n}x1), -> RAM",
    "dask-threads-zarr": "predict_dask, threads ({n}x1), -> zarr",
    "dask-processes-zarr": "predict_dask, processes ({n}x1), -> zarr",
    "dask-distributed-zarr": "predict_dask, distributed LocalCluster ({n}x1), -> zarr",
    "dask-distributed-notrim-zarr": (
        "predict_dask, distributed LocalCluster ({n}x1), MALLOC_TRIM_THRESHOLD_ unset, -> zarr"
    ),
}


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 2, 1),
    )
    return net.eval()


def write_data(folder: Path, size: int, chunk: int) -> None:
    """The image as ``image.npy`` and ``image.zarr``: smooth texture plus noise."""
    rng = np.random.default_rng(0)
    y = np.arange(size, dtype=np.float32)[:, None]
    image = np.empty((1, size, size), dtype=np.uint8)
    for start in range(0, size, chunk):
        x = np.arange(start, min(start + chunk, size), dtype=np.float32)[None, :]
        texture = 120 + 60 * np.sin(x / 37 + np.sin(y / 53)) * np.cos(y / 29)
        noise = rng.normal(0, 10, texture.shape)
        image[0, :, start : start + chunk] = np.clip(texture + noise, 0, 255)
    np.save(folder / "image.npy", image)
    z = zarr.create_array(
        store=str(folder / "image.zarr"),
        shape=image.shape,
        chunks=(1, chunk, chunk),
        dtype="uint8",
    )
    z[:] = image


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    ``VmHWM`` from ``/proc`` on Linux: ``resource.getrusage`` in a process started by
    another one also counts the parent's peak before the exec (here: the launcher's
    copy of the image). Elsewhere ``getrusage``.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def worker_peak_rss(_: object = None) -> tuple[int, float]:
    """``(pid, peak RSS in MiB)`` of a worker process."""
    time.sleep(0.2)  # lets a pool hand these calls to every worker
    return os.getpid(), peak_rss_mib()


def reset_peak_rss() -> None:
    """Resets this process's peak RSS to its current RSS (Linux; elsewhere a no-op)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run_one(config: str, folder: Path, repeats: int, workers: int) -> dict[str, float]:
    """Runs one configuration in this process; returns its best time and peak memory."""
    torch.set_num_threads(workers if config in ("tiled-n", "tiled-workers") else 1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for the processes scheduler's workers
    model = make_model()
    geometry = TileGeometry(260, 256)
    reset_peak_rss()
    base = peak_rss_mib()
    times = []
    worker_peaks: list[float] = []
    if config.startswith("tiled"):
        image = (
            zarr.open_array(str(folder / "image.zarr"), mode="r")
            if config.endswith("zarr")
            else np.load(folder / "image.npy")
        )
        for _ in range(repeats):
            t0 = time.perf_counter()
            threads = workers if config == "tiled-workers" else 1
            out = predict_tiled(model, image, geometry, workers=threads)
            times.append(time.perf_counter() - t0)
            del out
        pixels = image.shape[1] * image.shape[2]
    else:
        source = zarr.open_array(str(folder / "image.zarr"), mode="r")
        pixels = source.shape[1] * source.shape[2]
        client = pool = None
        if config.startswith("dask-distributed"):
            from distributed import Client, LocalCluster

            environ = {}
            if "notrim" in config:
                environ = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
            with dask.config.set(environ):
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
            client = Client(cluster)
        elif config == "dask-processes-zarr":
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        for i in range(repeats):
            t0 = time.perf_counter()
            lazy = predict_dask(model, da.from_zarr(source), geometry, align="start")
            if config == "dask-threads-ram":
                out = lazy.compute(scheduler="threads", num_workers=workers)
                del out
            else:
                target = str(folder / f"logits-{config}-{i}.zarr")
                store = lazy.to_zarr(target, compute=False, overwrite=True)
                if client is not None:
                    dask.compute(store)
                elif pool is not None:
                    dask.compute(store, scheduler="processes", pool=pool)
                else:
                    dask.compute(store, scheduler="threads", num_workers=workers)
            times.append(time.perf_counter() - t0)
        if client is not None:
            worker_peaks = [peak for _, peak in client.run(worker_peak_rss).values()]
            client.close()
            cluster.close()
        if pool is not None:
            worker_peaks = list(dict(pool.map(worker_peak_rss, range(4 * workers))).values())
            pool.shutdown()
    return {
        "seconds": min(times),
        "mp_per_s": pixels / 1e6 / min(times),
        "rss_base_mib": base,
        "rss_peak_mib": peak_rss_mib(),
        "rss_worker_mib": max(worker_peaks, default=0.0),
    }


def table(results: dict[str, dict[str, float]], workers: int, size: int) -> str:
    lines = [
        f"Image {size}x{size} uint8 ({size**2 / 1e6:.0f} MP), tiles 260 -> 256, "
        "2-conv 8-channel network, float32 logits.",
        "",
        "| configuration | time (s) | MP/s | peak RSS, main (MiB) | RSS after imports (MiB) "
        "| peak RSS, largest worker (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for config, r in results.items():
        name = CONFIGS[config].format(n=workers)
        child = f"{r['rss_worker_mib']:.0f}" if r["rss_worker_mib"] else "-"
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['mp_per_s']:.1f} | {r['rss_peak_mib']:.0f} "
            f"| {r['rss_base_mib']:.0f} | {child} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--quick", action="store_true", help="a 2048 x 2048 image, 1 repeat")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--append", type=Path, default=None, help="markdown file to append to")
    parser.add_argument("--machine", default="", help="machine description for --append")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats, args.chunk = 2048, 1, min(args.chunk, 1024)

    if args.one is not None:  # a child process: one configuration
        result = run_one(args.one, args.data, args.repeats, args.workers)
        print(json.dumps(result))
        return

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmp:
        folder = Path(tmp)
        write_data(folder, args.size, args.chunk)
        for config in args.configs:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                config,
                "--data",
                str(folder),
                "--repeats",
                str(args.repeats),
                "--workers",
                str(args.workers),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[config] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{config}: {results[config]['mp_per_s']:.1f} MP/s", file=sys.stderr)
    text = table(results, args.workers, args.size)
    print(text)
    if args.append is not None:
        header = f"\n## predict_dask, {date.today().isoformat()}"
        if args.machine:
            header += f", {args.machine}"
        with args.append.open("a") as f:
            f.write(f"{header}\n\n{text}\n")


if __name__ == "__main__":
    main()
