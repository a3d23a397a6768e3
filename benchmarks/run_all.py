"""Runs every benchmark in sequence (``make bench``); pass --quick for a fast smoke run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_crop.py",
    "bench_mirror.py",
    "bench_inference.py",
    "bench_memory.py",
    "bench_weightmap.py",
    "bench_sampling.py",
    "bench_dataset.py",
    "bench_deform.py",
    "bench_blend.py",
]
DASK = "bench_dask.py"  # takes only --quick of the common options


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n===== {script} =====", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]]).returncode:
            failed.append(script)
    print(f"\n===== {DASK} =====", flush=True)
    quick = ["--quick"] if "--quick" in sys.argv[1:] else []
    if subprocess.run([sys.executable, str(HERE / DASK), *quick]).returncode:
        failed.append(DASK)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
