"""Image generation speed and memory: Atelier's engines against diffusers called directly.

The model is the SD 1.5 architecture (UNet 860M parameters, CLIP ViT-L/14
text encoder, 4-level VAE) with RANDOM weights, built from the published
configs and cached under ``~/.cache/atelier-bench/`` (about 4.3 GB, plus
3.9 GB for its ONNX copy), so nothing is downloaded. Speed does not depend
on the weights' values, only on the architecture and the resolution.

Every case runs in its own process, so ``peak_rss_mb`` is that case's
alone: load, one warm-up image (1 step), then the measured image
(512×512, guidance 7, so the UNet sees a batch of 2, ``STEPS`` steps).
Seconds per step are the median time between step callbacks after the
first, i.e. pure UNet + scheduler time. Targets: Atelier's PyTorch engine
at ≥ 0.97× the speed of diffusers called directly.

torch.compile is not measured: compiling the SD UNet with inductor takes
minutes on 2 cores and needs a C++ compiler at run time, which a packaged
desktop app cannot count on; it cannot pay off inside this benchmark.

Run: ``python -m benchmarks.bench_diffusion`` (all cases), ``--prepare`` (only
build the cached model and its ONNX copy), ``--case NAME`` (one case).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path.home() / ".cache" / "atelier-bench"
MODEL = CACHE / "sd15-random"
ONNX_MODEL = CACHE / "sd15-random-onnx"
STEPS = 3
SIZE = 512
GUIDANCE = 7.0
PROMPT = "a watercolour painting of a lighthouse at dawn"
# name → (engine, dtype, channels_last, extra environment)
CASES = {
    "diffusers_direct_fp32": ("direct", "fp32", False, {}),
    "atelier_torch_fp32": ("torch", "fp32", False, {}),
    "atelier_torch_fp32_channels_last": ("torch", "fp32", True, {}),
    "atelier_torch_bf16": ("torch", "bf16", False, {}),
    "atelier_torch_bf16_channels_last": ("torch", "bf16", True, {}),
    # OpenMP threads sleep instead of spinning at barriers: robust on a busy machine, maybe slower on an idle one.
    "atelier_torch_bf16_channels_last_passive": ("torch", "bf16", True, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "atelier_onnx_fp32": ("onnx", "fp32", False, {}),
}


def build_sd15_random(folder: Path = MODEL) -> Path:
    """Write (once) an SD 1.5-architecture diffusers folder with random weights."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.tiny_sd import write_byte_level_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=512,
        eos_token_id=513, pad_token_id=513,
    )).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(write_byte_level_clip_tokenizer(CACHE / ".tokenizer")),
                                              model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    tmp = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    os.replace(tmp, folder)
    return folder


def prepare() -> dict:
    """Build the cached model and its ONNX copy (made by Atelier's converter); report how long each took."""
    timings = {}
    t0 = time.perf_counter()
    build_sd15_random()
    timings["build_seconds"] = round(time.perf_counter() - t0, 1)
    if not (ONNX_MODEL / "model_index.json").is_file():
        from engines.diffusion.convert import convert_to_onnx

        t0 = time.perf_counter()
        convert_to_onnx(MODEL, ONNX_MODEL, emit=lambda e: print(f"  {e.message}", file=sys.stderr, flush=True))
        timings["onnx_export_seconds"] = round(time.perf_counter() - t0, 1)
    timings["onnx_bytes"] = sum(p.stat().st_size for p in ONNX_MODEL.rglob("*") if p.is_file())
    return timings


def _step_seconds(stamps: list[float]) -> float:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps) if gaps else float("nan")


def _direct(dtype: str) -> tuple[float, float, float]:
    import torch
    from diffusers import StableDiffusionPipeline

    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL), local_files_only=True, use_safetensors=True,
                                                   dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0
    stamps: list[float] = []

    def on_step(p, i, t, kw):
        stamps.append(time.perf_counter())
        return kw

    def once(steps: int) -> float:
        stamps.clear()
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(PROMPT, width=SIZE, height=SIZE, num_inference_steps=steps, guidance_scale=GUIDANCE,
                 generator=torch.Generator().manual_seed(1), callback_on_step_end=on_step)
        return time.perf_counter() - start

    once(1)
    total = once(STEPS)
    return load, _step_seconds(stamps), total


def _atelier(engine_kind: str, dtype: str, channels_last: bool) -> tuple[float, float, float]:
    from engines.diffusion.types import ImageLoadSpec, ImageRequest

    if engine_kind == "onnx":
        from engines.diffusion.onnx_engine import OnnxDiffusionEngine

        engine, path = OnnxDiffusionEngine(), ONNX_MODEL
    else:
        from engines.diffusion import torch_engine

        torch_engine.CHANNELS_LAST_ON_CPU[dtype] = channels_last
        engine, path = torch_engine.TorchDiffusionEngine(), MODEL
    t0 = time.perf_counter()
    engine.load(ImageLoadSpec(str(path), backend=engine_kind, device="cpu", dtype=dtype), lambda e: None)
    load = time.perf_counter() - t0

    def once(steps: int):
        request = ImageRequest(PROMPT, width=SIZE, height=SIZE, steps=steps, guidance=GUIDANCE, seed=1)
        return engine.generate(request, lambda e: None, None)

    once(1)
    result = once(STEPS)
    return load, result.seconds_per_step, result.seconds


def run_case(name: str) -> dict:
    engine_kind, dtype, channels_last, _env = CASES[name]
    load_before = os.getloadavg()[0]
    if engine_kind == "direct":
        load, per_step, total = _direct(dtype)
    else:
        load, per_step, total = _atelier(engine_kind, dtype, channels_last)
    return {
        "seconds_per_step": round(per_step, 3),
        "image_seconds": round(total, 2),
        "load_seconds": round(load, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "loadavg_before": round(load_before, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }


def _in_subprocess(name: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, **CASES[name][3])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_diffusion", "--case", name], cwd=root,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> dict:
    import torch

    from engines.library.hardware import probe_cpu

    report: dict = {"model": "SD 1.5 architecture, random weights", "size": f"{SIZE}x{SIZE}", "steps": STEPS,
                    "guidance": GUIDANCE, "cpu": probe_cpu().name, "threads": torch.get_num_threads(),
                    "cpu_bf16": [f for f in probe_cpu().features if "BF16" in f or "AMX" in f]}
    report["prepare"] = prepare()
    cases = {}
    for name in CASES:
        print(f"== {name}", file=sys.stderr, flush=True)
        cases[name] = _in_subprocess(name)
        print(json.dumps(cases[name]), file=sys.stderr, flush=True)
    report["cases"] = cases

    def step(name):
        return cases.get(name, {}).get("seconds_per_step")

    direct, fp32, bf16, onnx = (step("diffusers_direct_fp32"), step("atelier_torch_fp32"),
                                step("atelier_torch_bf16_channels_last"), step("atelier_onnx_fp32"))
    if direct and fp32:
        report["atelier_fp32_speed_vs_direct"] = round(direct / fp32, 3)
    if fp32 and bf16:
        report["bf16_speedup_over_fp32"] = round(fp32 / bf16, 2)
    if fp32 and onnx:
        report["onnx_speedup_over_torch_fp32"] = round(fp32 / onnx, 2)
    if bf16 and onnx:
        report["onnx_speedup_over_torch_bf16"] = round(bf16 / onnx, 2)
    report["torch_compile"] = "not measured: minutes of inductor compile on 2 cores, needs a C++ compiler at run time"
    return report


def main(argv: list[str]) -> int:
    if argv[:1] == ["--case"]:
        print(json.dumps(run_case(argv[1])))
    elif argv[:1] == ["--prepare"]:
        print(json.dumps(prepare()))
    else:
        report = run()
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "results.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
