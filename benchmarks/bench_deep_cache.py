"""Step caching (DeepCache): time per image and similarity to the full result, per caching interval.

``--model sd15`` uses the SD 1.5-architecture random-weight folder that
``benchmarks.bench_diffusion`` builds and caches (4.3 GB; 512², 20 steps,
guidance 7); ``--model tiny`` (the default on a busy machine) the tiny
test pipeline at 256², which runs in seconds but whose "images" are
random-weight noise, so its similarity figures only show the mechanism.
Speed does not depend on the weights' values; similarity does, which is
why the figure that matters is the sd15 one on a quiet machine.

For each interval N (1 = every step in full) the same request and seed
run ``ROUNDS`` times (``--rounds N``: 1 fits a short quiet window),
interleaved; the best time counts, and PSNR and SSIM (8×8 windows, on the
luma) compare the image with N=1's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

INTERVALS = (1, 2, 3, 5)
ROUNDS = 2
RESULTS = Path(__file__).resolve().parent / "results" / "deep_cache.json"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 8) -> float:
    """Mean SSIM over non-overlapping windows of the luma (Wang et al. 2004 constants)."""
    def luma(x):
        return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    x, y = luma(a), luma(b)
    h, w = (x.shape[0] // window) * window, (x.shape[1] // window) * window
    x = x[:h, :w].reshape(h // window, window, w // window, window).transpose(0, 2, 1, 3).reshape(-1, window**2)
    y = y[:h, :w].reshape(h // window, window, w // window, window).transpose(0, 2, 1, 3).reshape(-1, window**2)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = x.mean(1), y.mean(1)
    vx, vy = x.var(1), y.var(1)
    cov = ((x - mx[:, None]) * (y - my[:, None])).mean(1)
    return float(np.mean(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def _model(kind: str) -> tuple[Path, dict]:
    if kind == "sd15":
        from benchmarks.bench_diffusion import build_sd15_random

        return build_sd15_random(), dict(width=512, height=512, steps=20, guidance=7.0)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.tiny_sd import build_tiny_sd

    return build_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd"), dict(width=256, height=256, steps=20, guidance=7.0)


def run(kind: str, rounds: int = ROUNDS) -> dict:
    import io

    from PIL import Image

    from engines.diffusion.torch_engine import TorchDiffusionEngine
    from engines.diffusion.types import ImageLoadSpec, ImageRequest

    folder, settings = _model(kind)
    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(folder), backend="torch", device="cpu", dtype="auto"), lambda e: None)
    report: dict = {"model": kind, **settings, "dtype": engine.info.dtype, "rounds": rounds,
                    "loadavg_before": round(os.getloadavg()[0], 2)}
    images, times = {}, {n: [] for n in INTERVALS}
    engine.generate(ImageRequest("warm-up", seed=0, preview_every=0, **{**settings, "steps": 1}), lambda e: None)
    for _ in range(rounds):
        for n in INTERVALS:
            request = ImageRequest("a watercolour painting of a lighthouse at dawn", seed=1, deep_cache=n,
                                   preview_every=0, **settings)
            start = time.perf_counter()
            result = engine.generate(request, lambda e: None)
            times[n].append(round(time.perf_counter() - start, 3))
            images[n] = np.asarray(Image.open(io.BytesIO(result.images[0].png)).convert("RGB"))
    report["cases"] = {
        str(n): {"best_seconds": min(times[n]), "rounds_seconds": times[n],
                 "speedup": round(min(times[1]) / min(times[n]), 2),
                 # None: identical to the full result (N = 1 itself)
                 "psnr_db": None if n == 1 else round(psnr(images[n], images[1]), 2),
                 "ssim": round(ssim(images[n], images[1]), 4)}
        for n in INTERVALS
    }
    report["loadavg_after"] = round(os.getloadavg()[0], 2)
    return report


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rounds, 1 or more, not {text!r}")
    return int(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_deep_cache")
    parser.add_argument("--model", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--rounds", type=_positive, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})")
    args = parser.parse_args(argv)
    report = run(args.model, args.rounds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
