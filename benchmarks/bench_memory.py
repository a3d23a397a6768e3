"""Peak memory of tiled inference on a 16384 x 16384 uint8 memmap.

Each candidate runs in a fresh subprocess; a thread samples RssAnon (anonymous memory)
and RssFile (file-backed pages: the memmap) from /proc/self/status. Reported: the peak
over the baseline measured after imports. The stand-in model centre-crops 572 -> 388
(one float32 channel), so the result alone is 16384^2 * 4 B = 1 GiB. Peers, when
installed: TorchIO's GridSampler + GridAggregator and MONAI's sliding_window_inference
on the same windows.
Also: ``output="labels"`` of a two-class stand-in (a 256 MiB uint8 result), and
Gaussian blending of a same-padding stand-in (572 -> 572, step 388) against MONAI's
``mode="gaussian"`` on the same windows.
Targets: predict_tiled <= result + 64 MiB of anonymous memory (logits and labels);
blending <= half of MONAI's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch

from _common import footer, header, parser

MiB = 1 << 20


def rss() -> tuple[int, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon", "RssFile")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) * 1024
    return values["RssAnon"], values["RssFile"]


class CentreCrop:
    """Stand-in network: the centre 388 x 388 of a 572 x 572 tile, as float32."""

    def __call__(self, x):
        return x[..., 92:-92, 92:-92].float()


class TwoClasses:
    """Stand-in network with two classes: the centre 388 x 388 and its negative."""

    def __call__(self, x):
        y = x[..., 92:-92, 92:-92].float()
        return torch.cat([y, -y], dim=1)


class SamePadding:
    """Stand-in same-padding network: the whole 572 x 572 tile, as float32."""

    def __call__(self, x):
        return x.float()


def child(candidate: str, path: str, n: int) -> None:
    from unet_transforms import TileGeometry, predict_tiled

    torch.set_num_threads(1)
    image = np.memmap(path, dtype=np.uint8, mode="r", shape=(1, n, n))
    base_anon, _ = rss()
    peak = [0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            a, f = rss()
            peak[0], peak[1] = max(peak[0], a), max(peak[1], f)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    model = torch.nn.Module()
    model.forward = CentreCrop()  # type: ignore[method-assign]
    geometry = TileGeometry(572, 388)
    if candidate == "predict_tiled":
        out = predict_tiled(model, image, geometry)
    elif candidate == "predict_tiled labels":
        model.forward = TwoClasses()  # type: ignore[method-assign]
        out = predict_tiled(model, image, geometry, output="labels")
    elif candidate == "predict_tiled gaussian":
        model.forward = SamePadding()  # type: ignore[method-assign]
        blended = TileGeometry(572, 572, step=388)
        out = predict_tiled(model, image, blended, blend="gaussian", batch_size=4)
    elif candidate == "torchio":
        import torchio as tio

        subject = tio.Subject(
            img=tio.ScalarImage(tensor=torch.from_numpy(np.asarray(image))[..., None])
        )
        sampler = tio.inference.GridSampler(
            subject, (572, 572, 1), (184, 184, 0), padding_mode="reflect"
        )
        aggregator = tio.inference.GridAggregator(sampler, overlap_mode="crop")
        loader = torch.utils.data.DataLoader(sampler, batch_size=4)
        for batch in loader:
            y = model(batch["img"][tio.DATA][..., 0])
            aggregator.add_batch(
                torch.nn.functional.pad(y, (92,) * 4)[..., None], batch[tio.LOCATION]
            )
        out = aggregator.get_output_tensor()
    elif candidate in ("monai", "monai gaussian"):
        import warnings

        from monai.inferers import sliding_window_inference

        with warnings.catch_warnings():  # the memmap is read-only; MONAI only reads it
            warnings.simplefilter("ignore", UserWarning)
            view = torch.from_numpy(np.asarray(image))[None]  # a view of the memmap
        # MONAI accumulates in the input's dtype (uint8 fails: "result type Float can't
        # be cast to ... Byte"), so the image has to become float first: a full copy.
        inputs = view.float()
        # windows every 388 pixels, as the other candidates; MONAI blends the 572 x 572
        # outputs of a same-padding network, so the stand-in returns the whole window
        out = sliding_window_inference(
            inputs,
            roi_size=(572, 572),
            sw_batch_size=4,
            predictor=lambda x: x.float(),
            overlap=184 / 572,
            mode="gaussian" if candidate == "monai gaussian" else "constant",
            sigma_scale=0.125,
            padding_mode="reflect",
        )[0]
    else:
        raise SystemExit(f"unknown candidate {candidate}")
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    a, f = rss()
    print(
        json.dumps(
            {
                "candidate": candidate,
                "peak_anon_over_baseline_mib": (max(peak[0], a) - base_anon) / MiB,
                "peak_file_mib": max(peak[1], f) / MiB,
                "result_mib": out.numel() * out.element_size() / MiB,
                "seconds": elapsed,
            }
        )
    )


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--child", nargs=2, metavar=("CANDIDATE", "PATH"))
    args = p.parse_args()
    n = 2048 if args.quick else args.size
    if args.child:
        child(args.child[0], args.child[1], n)
        return
    header(args)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.u8")
        image = np.memmap(path, dtype=np.uint8, mode="w+", shape=(1, n, n))
        for r in range(0, n, 1024):
            image[0, r : r + 1024] = (np.arange(r, min(r + 1024, n))[:, None] + np.arange(n)) % 251
        image.flush()
        del image
        print(f"# {n} x {n} uint8 memmap; result {n * n * 4 / MiB:.0f} MiB float32")
        print(
            f"{'candidate':<22} {'anon peak - baseline (MiB)':>27} {'over result':>12} {'file-backed peak':>17} {'s':>7}"
        )
        for candidate in (
            "predict_tiled",
            "predict_tiled labels",
            "torchio",
            "monai",
            "predict_tiled gaussian",
            "monai gaussian",
        ):
            cmd = [sys.executable, __file__, "--child", candidate, path, "--size", str(n)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{candidate:<22} failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            over = r["peak_anon_over_baseline_mib"] - r["result_mib"]
            print(
                f"{candidate:<22} {r['peak_anon_over_baseline_mib']:>27.0f} {over:>+12.0f} {r['peak_file_mib']:>17.0f} {r['seconds']:>7.1f}"
            )
    footer()


if __name__ == "__main__":
    main()
