"""Upscaling ×4 a 512×512 image with a Real-ESRGAN x4plus-sized network: time and peak memory.

The network is RRDBNet as Real-ESRGAN x4plus has it (23 blocks, 64
features, 32 growth channels: 16.7 M parameters, 67 MB in fp32) with
RANDOM weights, written in the real key layout by tests/fixtures/esrgan.py,
so nothing is downloaded; speed and memory depend on the architecture and
the sizes, not on the weights' values. The engine is Atelier's own
(:class:`engines.diffusion.upscale.UpscaleEngine`), in this process: load,
a warm-up on a 64×64 image, then the measured 512×512 → 2048×2048 run with
the tile it picks from the free memory (and, for comparison, 128-pixel
tiles). ``peak_rss_mb`` is this process's peak resident set over the whole
run (Linux ``ru_maxrss``); ``rss_after_load_mb`` is what it held before
the measured run, so the difference is what the upscale itself took.

Run: ``python -m benchmarks.bench_upscale`` (only when the machine is
quiet: ``uptime`` load below 1.5 on this 2-core box).
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def _image(size: int) -> bytes:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1).astype(np.uint8)
    rgb = np.clip(rgb + np.random.default_rng(0).integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


def run(size: int = 512) -> dict:
    from engines.diffusion.upscale import UpscaleEngine
    from engines.diffusion.upscale_types import UpscaleLoadSpec, UpscaleRequest
    from tests.fixtures.esrgan import write_upscaler

    folder = Path(tempfile.mkdtemp(prefix="atelier-bench-upscale-"))
    model = write_upscaler(folder / "RealESRGAN_x4plus-random.safetensors", blocks=23, feat=64, grow=32)
    engine = UpscaleEngine()
    started = time.perf_counter()
    info = engine.load(UpscaleLoadSpec(str(model), dtype="fp32"), lambda event: None)
    load_s = time.perf_counter() - started
    engine.generate(UpscaleRequest(_image(64)), lambda event: None)  # warm-up
    results = {"model": "RRDBNet 23 blocks, 64 features (Real-ESRGAN x4plus), random weights", "device": info.device,
               "dtype": info.dtype, "threads": int(__import__("torch").get_num_threads()), "load_s": round(load_s, 2),
               "source": f"{size}x{size}", "load_average": os.getloadavg()[0]}
    source = _image(size)
    for label, tile in (("auto_tile", 0), ("tile_128", 128)):
        rss_before = _rss_mb()
        started = time.perf_counter()
        result = engine.generate(UpscaleRequest(source, tile=tile), lambda event: None)
        seconds = time.perf_counter() - started
        results[label] = {"seconds": round(seconds, 1), "tile": result.tile, "tiles": result.tiles,
                          "output": f"{result.width}x{result.height}",
                          "output_megapixels_per_s": round(result.width * result.height / 1e6 / seconds, 3),
                          "rss_before_mb": round(rss_before)}
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["load_average_after"] = os.getloadavg()[0]
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
