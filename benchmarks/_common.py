"""Shared benchmark helpers: round-robin timing, medians, machine and load report."""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=15, help="round-robin repeats")
    p.add_argument("--quick", action="store_true", help="few repeats, smaller sizes")
    return p


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}, {os.cpu_count()} cores")
    print(
        f"# torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
        f"load average before {os.getloadavg()[0]:.2f}"
    )


def footer() -> None:
    print(f"# load average after {os.getloadavg()[0]:.2f} (other processes on the machine)")


def round_robin(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each candidate, interleaving them every repeat.

    Each repeat runs the candidates in a new order (shuffled, seeded): a call leaves
    the caches and the allocator in a state that helps or hurts the next call, and in a
    fixed order one candidate would always follow the same one (in bench_mirror.py the
    candidate right after the floor's np.copy took 10-25 % longer than the same call
    after another candidate).
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates.items())
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)
        for name, fn in order:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(results: dict[str, float], baseline: str, unit: float = 1e-3, label: str = "ms") -> None:
    base = results[baseline]
    width = max(len(n) for n in results)
    print(f"{'candidate':<{width}}  {label:>10}  {'x ' + baseline:>14}")
    for name, t in results.items():
        print(f"{name:<{width}}  {t / unit:>10.3f}  {t / base:>14.2f}")


def paired_sample(quick: bool) -> tuple[int, Any, Any, Any]:
    """The crop benchmarks' sample: ``(n, TileGeometry(572, 388), n² Image, n² Mask)``,
    4096² (1024² with ``--quick``)."""
    from torchvision import tv_tensors

    from unet_transforms import TileGeometry

    n = 1024 if quick else 4096
    image = tv_tensors.Image(torch.rand(1, n, n))
    mask = tv_tensors.Mask(torch.randint(0, 3, (n, n)))
    return n, TileGeometry(572, 388), image, mask
