"""Fit accuracy: the estimate against the peak RSS the engine host really reached.

Loads the real Gemma 3 270M file in an engine host at several contexts,
fills a good part of the context with a prompt, generates, then reads the
host's VmHWM (the kernel's peak resident set) and compares it with
``estimate_text``. Target: within 20%.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

CONTEXTS = (2048, 16384)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def run() -> dict:
    from engines.api import ChatMessage, SamplingParams, TextLoadSpec, TextRequest
    from engines.gguf import read_gguf_header
    from engines.host import EngineHost
    from engines.machine.fit import ModelShape, estimate_text
    from tests.fixtures.gemma import assemble_gemma

    path = assemble_gemma()
    shape = ModelShape.from_header(read_gguf_header(path))
    rows = []
    for context in CONTEXTS:
        host = EngineHost(Path(tempfile.mkdtemp()) / "fit.log")
        try:
            host.load("llama_cpp", TextLoadSpec(str(path), context, 2, 0))
            words = "Tell me about the sea and the sky. " * (min(context, 4096) // 10)
            request = TextRequest((ChatMessage("user", words),), SamplingParams(max_tokens=32, seed=1), overflow="drop_oldest")
            list(host.generate(request))
            measured = peak_rss(host.pid)
        finally:
            host.close()
        estimate = estimate_text(shape, context).total_bytes
        rows.append({
            "context": context,
            "estimate_mb": round(estimate / 1e6, 1),
            "measured_peak_rss_mb": round(measured / 1e6, 1),
            "error_pct": round(100 * (estimate - measured) / measured, 1),
        })
    rows.append(_tiny_diffusion_row())
    return {"model": path.name, "rows": rows}


def _tiny_diffusion_row() -> dict:
    """The image estimate against an engine host running the tiny random-weight pipeline."""
    from engines.api import FinishedEvent
    from engines.diffusion.types import ImageLoadSpec, ImageRequest
    from engines.host import EngineHost
    from engines.machine.hardware import probe
    from engines.machine.image_fit import PipelineShape, estimate_image
    from tests.fixtures.tiny_sd import build_tiny_sd

    folder = build_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd")
    size = 256
    host = EngineHost(Path(tempfile.mkdtemp()) / "fit-image.log", role="image")
    try:
        host.load("diffusers", ImageLoadSpec(str(folder), backend="torch", dtype="fp32"))
        request = ImageRequest(prompt="a lighthouse", width=size, height=size, steps=4, seed=1, preview_every=0)
        next(e for e in host.generate(request) if isinstance(e, FinishedEvent))
        measured = peak_rss(host.pid)
    finally:
        host.close()
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    estimate = estimate_image(weights, size, probe(), file_dtype="fp32", shape=PipelineShape.from_folder(folder)).total_bytes
    return {
        "context": f"tiny SD pipeline, {size}x{size}, torch fp32",
        "estimate_mb": round(estimate / 1e6, 1),
        "measured_peak_rss_mb": round(measured / 1e6, 1),
        "error_pct": round(100 * (estimate - measured) / measured, 1),
    }
