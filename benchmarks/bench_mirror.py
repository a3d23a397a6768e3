"""mirror_pad vs the copy floor, OpenCV and numpy.pad on images, masks and small canvases.

The floor is the cost of producing the output at all: ``np.copy`` of an output-sized
array of real pixels (numpy's allocator, which asks for huge pages, and one read and one
write of every output byte). Every case runs its candidates round-robin in one process,
with one torch thread and one OpenCV thread, and prints each candidate's ratio to the
floor twice: by wall clock, and by the CPU time of the calling thread (page faults
included), which a busy machine disturbs much less. The summary compares mirror_pad's
CPU-time ratio with OpenCV's (the target: at or below it).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from unet_transforms import mirror_pad

from _common import footer, header, parser, round_robin, table

FLOOR = "floor: np.copy (output size)"

# (name, shape, padding per spatial axis, dtype); 512 -> 960 is the canvas of
# TileGrid(512, TileGeometry(572, 388)), the README's example
CASES = [
    ("3 x 2048^2 float32 + 92 px", (3, 2048, 2048), (92, 92), torch.float32),
    ("3 x 2048^2 uint8 + 92 px", (3, 2048, 2048), (92, 92), torch.uint8),
    ("4096^2 uint8 mask + 92 px", (4096, 4096), (92, 92), torch.uint8),
    ("512^2 -> 960^2 float32", (512, 512), (224, 224), torch.float32),
    ("3 x 512^2 -> 960^2 float32", (3, 512, 512), (224, 224), torch.float32),
]
QUICK_SIZES = {2048: 512, 4096: 1024}


def opencv_candidate(array: np.ndarray, pad: tuple[int, int]) -> Callable[[], object] | None:
    """cv2.copyMakeBorder (BORDER_REFLECT_101 is numpy's reflect), per channel if any."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    before, after = pad
    if array.ndim == 2:
        return lambda: cv2.copyMakeBorder(
            array, before, after, before, after, cv2.BORDER_REFLECT_101
        )
    return lambda: [
        cv2.copyMakeBorder(c, before, after, before, after, cv2.BORDER_REFLECT_101) for c in array
    ]


def run_case(
    name: str, shape: tuple[int, ...], pad: tuple[int, int], dtype: torch.dtype, repeats: int
) -> dict[str, float]:
    image = (torch.rand(shape) * 255).to(dtype)
    array = image.numpy()
    before, after = pad
    lead = [(0, 0)] * (image.ndim - 2)
    out_shape = (*shape[:-2], *(n + before + after for n in shape[-2:]))
    # real pixels: np.copy of np.zeros reads the kernel's shared zero page, not memory
    output_sized = np.pad(array, [*lead, pad, pad], mode="reflect")
    candidates: dict[str, Callable[[], object]] = {
        FLOOR: lambda: np.copy(output_sized),
        "mirror_pad": lambda: mirror_pad(image, [pad, pad]),
        "numpy.pad reflect": lambda: np.pad(array, [*lead, pad, pad], mode="reflect"),
    }
    opencv = opencv_candidate(array, pad)
    if opencv is not None:
        candidates["cv2.copyMakeBorder"] = opencv
    if dtype.is_floating_point and image.ndim == 3:
        candidates["F.pad reflect"] = lambda: F.pad(
            image[None], (before, after, before, after), mode="reflect"
        )
        candidates["v2.Pad reflect"] = lambda: v2.Pad(
            [before, before, after, after], padding_mode="reflect"
        )(image)
    cpu: dict[str, list[float]] = {key: [] for key in candidates}

    def on_cpu_clock(key: str, fn: Callable[[], object]) -> Callable[[], object]:
        def timed() -> object:
            start = time.thread_time()
            result = fn()
            cpu[key].append(time.thread_time() - start)
            return result

        return timed

    print(f"\n## {name}: {tuple(shape)} -> {out_shape}")
    wall = round_robin({k: on_cpu_clock(k, fn) for k, fn in candidates.items()}, repeats)
    table(wall, FLOOR, label="wall ms")
    # the first calls of each candidate are round_robin's warm-up
    on_cpu = {k: statistics.median(ts[len(ts) - repeats :]) for k, ts in cpu.items()}
    table(on_cpu, FLOOR, label="cpu ms")
    return {k: v / on_cpu[FLOOR] for k, v in on_cpu.items()}


def main() -> None:
    args = parser(__doc__.split("\n")[0]).parse_args()
    header(args)
    try:
        import cv2

        cv2.setNumThreads(1)
        print(f"# opencv {cv2.__version__}, threads {cv2.getNumThreads()}")
    except ImportError:
        print("# opencv not installed (pip install opencv-python-headless): skipped")
    repeats = 5 if args.quick else args.repeats
    summary = []
    for name, shape, pad, dtype in CASES:
        if args.quick:
            shape = tuple(QUICK_SIZES.get(n, n) for n in shape)
        summary.append((name, run_case(name, shape, pad, dtype, repeats)))
    print("\n## CPU-time ratios to the floor (mirror_pad at or below OpenCV is the target)")
    print(f"{'case':<30}  {'mirror_pad':>10}  {'cv2':>6}  {'numpy.pad':>9}  target")
    for name, ratios in summary:
        cv = ratios.get("cv2.copyMakeBorder")
        ours = ratios["mirror_pad"]
        verdict = "-" if cv is None else ("met" if ours <= cv else "MISSED")
        cv_text = "-" if cv is None else f"{cv:.2f}"
        print(
            f"{name:<30}  {ours:>10.2f}  {cv_text:>6}  {ratios['numpy.pad reflect']:>9.2f}  "
            f"{verdict}"
        )
    footer()


if __name__ == "__main__":
    main()
