"""The Turbo path: one 512² image in one step, guidance off, against diffusers called directly.

The model is the SD-Turbo architecture (SD 2.1: 866M UNet, a 1024-wide
23-layer text encoder, the SD VAE) with RANDOM weights, built from the
published configs and cached under ``~/.cache/atelier-bench/sd-turbo-random``
(about 4.7 GB, 45 s on a quiet machine), with a random TAESD beside it
(``diffusers.AutoencoderTiny()``'s default config is TAESD's layout).
Speed does not depend on the weights' values.

Everything runs in one process, warm, the variants interleaved round by
round so background load hits each alike, best round each:

* ``diffusers_fp32`` / ``diffusers_bf16``: a stock pipeline from the same
  folder, called plainly;
* ``atelier_full``: Atelier's engine with the model's own VAE;
* ``atelier_tiny``: Atelier's engine with the tiny VAE (``--vae tiny``).

The parts are timed apart on the engine's own modules (text encoder, one
UNet call, the full decoder, the tiny decoder, a TAESD preview and the
latent-projection preview), and the best fp32 and bf16 kernel rates are
measured in the same run (:mod:`benchmarks.kernel_rates`, shared with
bench_diffusion), since absolute rates differ between machines of one kind.

Run: ``python -m benchmarks.bench_turbo`` (only when ``uptime`` shows a
load below 1.5: it is a 2-core machine shared with others), ``--prepare``
to build the cached model only. Figures go to
``benchmarks/results/turbo.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.kernel_rates import best_seconds, kernel_rates

CACHE = Path.home() / ".cache" / "atelier-bench"
MODEL = CACHE / "sd-turbo-random"
TAESD = CACHE / "taesd-random"
SIZE = 512
ROUNDS = 3
PROMPT = "a watercolour painting of a lighthouse at dawn"
RESULTS = Path(__file__).resolve().parent / "results" / "turbo.json"


def build_sd_turbo_random(folder: Path = MODEL) -> Path:
    """Write (once) an SD-Turbo-architecture diffusers folder with random weights."""
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
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=768,
        block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=512, bos_token_id=512,
        eos_token_id=513, pad_token_id=513,
    )).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(write_byte_level_clip_tokenizer(CACHE / ".tokenizer")),
                                              model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    tmp = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    os.replace(tmp, folder)
    return folder


def build_taesd_random(folder: Path = TAESD) -> Path:
    """Write (once) a TAESD-layout AutoencoderTiny with random weights."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    tmp = folder.with_name(folder.name + ".partial")
    AutoencoderTiny().save_pretrained(str(tmp), safe_serialization=True)
    os.replace(tmp, folder)
    return folder


def prepare() -> dict:
    t0 = time.perf_counter()
    build_sd_turbo_random()
    build_taesd_random()
    return {"build_seconds": round(time.perf_counter() - t0, 1)}


ONE_IMAGE_TFLOP = 0.045 + 0.68 + 2.48  # SD-Turbo at 512², one step: text encoder, UNet, full decoder


def parts(engine, tiny_path: str) -> dict:
    """Each part of a one-step image on the engine's own modules, best of 3, in seconds."""
    import torch

    from engines.diffusion.preview import preview_png
    from engines.diffusion.taesd import TinyVae

    pipe = engine.pipeline
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, dtype=pipe.unet.dtype)
    embeds = engine._text.pipeline_kwargs(engine._text.embeds(PROMPT, "", guided=False))["prompt_embeds"]
    tiny = TinyVae(tiny_path)
    timestep = torch.tensor([999])
    with torch.inference_mode():
        figures = {
            "text_encoder": best_seconds(lambda: engine._text.embeds(PROMPT, "", guided=False), warm_up=False),
            "unet": best_seconds(lambda: pipe.unet(latents, timestep, encoder_hidden_states=embeds), warm_up=False),
            "full_decoder": best_seconds(lambda: pipe.vae.decode(latents / pipe.vae.config.scaling_factor), 2,
                                         warm_up=False),
            "tiny_decoder": best_seconds(lambda: tiny.decode(latents), warm_up=False),
            "tiny_preview_png": best_seconds(lambda: tiny.preview_png(latents), warm_up=False),
            "projection_preview_png": best_seconds(lambda: preview_png(latents), warm_up=False),
        }
    return {name: round(seconds, 3) for name, seconds in figures.items()}


def run() -> dict:
    import torch

    from engines.diffusion.torch_engine import TorchDiffusionEngine, load_pipeline
    from engines.diffusion.types import ImageLoadSpec, ImageRequest
    from engines.machine.hardware import probe_cpu

    report: dict = {"model": "SD-Turbo architecture (SD 2.1), random weights", "size": f"{SIZE}x{SIZE}",
                    "steps": 1, "guidance": 0.0, "cpu": probe_cpu().name, "threads": torch.get_num_threads(),
                    "loadavg_before": round(os.getloadavg()[0], 2)}
    report["prepare"] = prepare()
    report["kernel_tflops"] = rates = kernel_rates()
    # Where bf16 is emulated (no AVX-512 BF16) one diffusers bf16 image would take most of an hour: it is then
    # estimated from its arithmetic at the bf16 rate measured above instead of run, and the report says so.
    bf16_usable = rates["conv3x3_bf16"] >= 0.2 * rates["conv3x3_fp32"]
    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(MODEL), backend="torch", device="cpu", dtype="auto"), lambda e: None)
    report["atelier_dtype"] = engine.info.dtype
    stock = {name: load_pipeline(engine._folder, dtype) for name, dtype in
             (("diffusers_fp32", torch.float32), ("diffusers_bf16", torch.bfloat16))
             if name == "diffusers_fp32" or bf16_usable}
    if not bf16_usable:
        seconds = ONE_IMAGE_TFLOP / max(rates["conv3x3_bf16"], 1e-6)
        report["diffusers_bf16_not_run"] = (
            f"bf16 is emulated on this CPU ({rates['conv3x3_bf16']} TFLOP/s against {rates['conv3x3_fp32']} in "
            f"fp32): one image ({ONE_IMAGE_TFLOP:.2f} TFLOP) would take about {seconds:.0f} s")
        report["diffusers_bf16_estimated_seconds"] = round(seconds)
    for pipe in stock.values():
        pipe.set_progress_bar_config(disable=True)

    def plain(pipe):
        def call() -> None:
            with torch.inference_mode():
                pipe(PROMPT, width=SIZE, height=SIZE, num_inference_steps=1, guidance_scale=0.0,
                     generator=torch.Generator().manual_seed(1))
        return call

    def atelier(vae: str):
        request = ImageRequest(PROMPT, width=SIZE, height=SIZE, steps=1, guidance=0.0, seed=1, vae=vae,
                               preview_every=0)
        return lambda: engine.generate(request, lambda e: None, None)

    variants = {**{name: plain(pipe) for name, pipe in stock.items()},
                "atelier_full": atelier("full"), "atelier_tiny": atelier(str(TAESD))}
    for fn in variants.values():  # warm-up: oneDNN builds its kernels (and packs weights) once
        fn()
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            rounds[name].append(round(time.perf_counter() - start, 3))
    best = {name: min(times) for name, times in rounds.items()}
    report["rounds_seconds"] = rounds
    report["best_seconds"] = best
    report["median_seconds"] = {name: round(statistics.median(times), 3) for name, times in rounds.items()}
    bf16 = best.get("diffusers_bf16", report.get("diffusers_bf16_estimated_seconds"))
    report["atelier_tiny_vs_diffusers_bf16"] = round(bf16 / best["atelier_tiny"], 2)
    report["atelier_tiny_vs_diffusers_fp32"] = round(best["diffusers_fp32"] / best["atelier_tiny"], 2)
    report["parts_seconds"] = parts(engine, str(TAESD))
    report["loadavg_after"] = round(os.getloadavg()[0], 2)
    return report


def main(argv: list[str]) -> int:
    if argv[:1] == ["--prepare"]:
        print(json.dumps(prepare()))
        return 0
    report = run()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
