"""SDXL on the PyTorch engine, the dispatcher, the CLI and the fit estimate, on a tiny random-weight pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engines.diffusion.png_meta import read_png_parameters, request_from_metadata
from engines.diffusion.types import ImageLoadSpec, ImageRequest, PreviewEvent, StepEvent
from engines.errors import EngineError, ErrorKind
from tests.fixtures.tiny_sd import EventLog, make_init_png, one_torch_thread, png_pixels  # noqa: F401
from tests.fixtures.tiny_sdxl import tiny_sdxl  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def small(**overrides) -> ImageRequest:
    values = dict(prompt="a lighthouse at dawn", width=64, height=64, steps=4, seed=1234)
    values.update(overrides)
    return ImageRequest(**values)


def psnr(ours, reference) -> float:
    mse = float(((ours - reference) ** 2).mean())
    return 10 * np.log10(255**2 / mse) if mse else 99.0


@pytest.fixture(scope="module")
def engine(tiny_sdxl):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    eng = TorchDiffusionEngine()
    eng.load(ImageLoadSpec(str(tiny_sdxl), backend="torch", dtype="fp32"), EventLog())
    yield eng
    eng.unload()


def test_the_folder_is_a_complete_sdxl_pipeline(tiny_sdxl):
    from engines.model_folder import inspect_model_folder

    index = json.loads((tiny_sdxl / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    unet = json.loads((tiny_sdxl / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time" and unet["cross_attention_dim"] == 32 + 48
    assert unet["projection_class_embeddings_input_dim"] == 6 * unet["addition_time_embed_dim"] + 40
    folder = inspect_model_folder(tiny_sdxl)
    assert (folder.kind, folder.family, folder.vae_scale_factor, folder.native_size) == ("diffusers", "sdxl", 2, 64)


def test_load_info_and_cpu_speedups_on_the_sdxl_unet(engine):
    from engines.diffusion.cpu_speedups import PackedLinear, onednn_packing_available

    info = engine.info
    assert (info.backend, info.device, info.dtype) == ("torch", "cpu", "fp32")
    assert info.pipeline_class == "StableDiffusionXLPipeline" and info.name == "tiny-sdxl" and info.native_size == 64
    if onednn_packing_available():
        # The SDXL-only layers (the pooled-text and size embedding) are packed too.
        assert isinstance(engine.pipeline.unet.add_embedding.linear_1, PackedLinear)


def test_txt2img_same_seed_same_pixels(engine):
    events = EventLog()
    first = engine.generate(small(), events)
    second = engine.generate(small(), EventLog())
    assert not first.cancelled and len(first.images) == 1
    image = first.images[0]
    assert (image.width, image.height, image.seed) == (64, 64, 1234)
    assert np.array_equal(png_pixels(image.png), png_pixels(second.images[0].png))
    assert not np.array_equal(png_pixels(image.png), png_pixels(engine.generate(small(seed=1235), EventLog())
                                                                 .images[0].png))
    assert [s.step for s in events.of(StepEvent)] == [1, 2, 3, 4]
    assert png_pixels(events.of(PreviewEvent)[0].png).shape == (32, 32, 3)  # SDXL's preview factors, latent size


def test_the_negative_prompt_and_the_size_condition_the_image(engine):
    """No negative prompt means zeroed embeddings (force_zeros_for_empty_prompt); the size enters via time ids."""
    plain = png_pixels(engine.generate(small(), EventLog()).images[0].png)
    negative = png_pixels(engine.generate(small(negative_prompt="fog"), EventLog()).images[0].png)
    assert not np.array_equal(plain, negative)
    wide = engine.generate(small(width=96, height=64), EventLog()).images[0]
    assert png_pixels(wide.png).shape == (64, 96, 3)


def test_img2img_is_deterministic_and_runs_strength_steps(engine):
    request = small(init_image=make_init_png(80, 48), strength=0.5)
    events = EventLog()
    result = engine.generate(request, events)
    assert (result.images[0].width, result.images[0].height) == (64, 64)
    assert [s.total for s in events.of(StepEvent)] == [2, 2]  # 4 steps × strength 0.5
    again = engine.generate(request, EventLog())
    assert np.array_equal(png_pixels(result.images[0].png), png_pixels(again.images[0].png))
    txt2img = engine.generate(small(), EventLog())
    assert not np.array_equal(png_pixels(result.images[0].png), png_pixels(txt2img.images[0].png))


def test_png_parameters_round_trip(engine):
    result = engine.generate(small(negative_prompt="blurry", scheduler="DPM++ 2M Karras"), EventLog())
    image = result.images[0]
    meta = read_png_parameters(image.png)
    assert meta["seed"] == 1234 and meta["negative_prompt"] == "blurry" and meta["model"] == "tiny-sdxl"
    assert meta["atelier"]["backend"] == "torch" and meta["atelier"]["dtype"] == "fp32"
    assert image.parameters == meta["parameters"] and "Sampler: DPM++ 2M Karras" in image.parameters
    again = engine.generate(request_from_metadata(meta), EventLog())  # "use these settings again"
    assert np.array_equal(png_pixels(image.png), png_pixels(again.images[0].png))


def test_cancel_mid_run_returns_no_images_and_engine_still_works(engine):
    cancel = threading.Event()
    seen = []

    def emit(event):
        if isinstance(event, StepEvent):
            seen.append(event.step)
            if event.step == 2:
                cancel.set()

    result = engine.generate(small(batch_count=2), emit, cancel)
    assert result.cancelled and result.images == () and seen == [1, 2]
    after = engine.generate(small(), EventLog(), threading.Event())
    assert not after.cancelled and len(after.images) == 1


@pytest.mark.parametrize("img2img", [False, True], ids=["txt2img", "img2img"])
def test_bf16_with_cpu_speedups_matches_fp32(engine, tiny_sdxl, img2img):
    """bf16 weights, packed layers and sliced attention vs fp32: PSNR > 40 dB, as for SD.

    128×128 gives 1,024 tokens at the UNet's attention level, the length at
    which the sliced attention takes over, so it runs on the SDXL UNet here.
    img2img goes through the SDXL VAE's ``force_upcast`` path, which moves
    the VAE to fp32 around the encoder; that path does not depend on the
    size, so it runs at 64×64. bf16 is emulated on a CPU without AVX-512,
    where each UNet step at 128×128 costs tens of seconds, so txt2img
    compares one step (its image is the bf16 UNet's prediction through the
    bf16 VAE: PSNR 51.7 dB here) and img2img two (one runs at strength 0.75).
    """
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    bf16 = TorchDiffusionEngine()
    try:
        assert bf16.load(ImageLoadSpec(str(tiny_sdxl), dtype="bf16"), EventLog()).dtype == "bf16"
        size = 64 if img2img else 128
        request = small(width=size, height=size, steps=2 if img2img else 1,
                        **({"init_image": make_init_png(), "strength": 0.75} if img2img else {}))
        ours = png_pixels(bf16.generate(request, EventLog()).images[0].png)
        reference = png_pixels(engine.generate(request, EventLog()).images[0].png)
        assert psnr(ours, reference) > 40.0 and np.abs(ours - reference).mean() < 2.0
    finally:
        bf16.unload()


def test_dispatcher_runs_sdxl_on_torch(tiny_sdxl, engine):
    from engines.diffusion.engine import DiffusionEngine

    dispatcher = DiffusionEngine()
    try:
        info = dispatcher.load(ImageLoadSpec(str(tiny_sdxl), dtype="fp32"), EventLog())
        assert dispatcher.backend == "torch" and info.pipeline_class == "StableDiffusionXLPipeline"
        ours = dispatcher.generate(small(), EventLog()).images[0]
        assert np.array_equal(png_pixels(ours.png), png_pixels(engine.generate(small(), EventLog()).images[0].png))
    finally:
        dispatcher.unload()


def test_an_sdxl_refiner_is_refused_in_words(tiny_sdxl, tmp_path):
    from engines.model_folder import inspect_model_folder

    refiner = tmp_path / "sdxl-refiner"
    shutil.copytree(tiny_sdxl, refiner)
    index = json.loads((refiner / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True,
                 text_encoder=[None, None], tokenizer=[None, None])
    (refiner / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(EngineError) as err:
        inspect_model_folder(refiner)
    assert err.value.kind == ErrorKind.UNSUPPORTED and err.value.message == (
        "sdxl-refiner is an SDXL refiner: it only finishes images that an SDXL base model started, and Atelier runs "
        "base models only. Choose the base model (for example stable-diffusion-xl-base-1.0) instead.")


def test_cli_image_on_sdxl(tiny_sdxl, tmp_path):
    out = tmp_path / "x.png"
    run = subprocess.run(
        [sys.executable, "-m", "desktop", "image", "--model", str(tiny_sdxl), "--prompt", "a red lighthouse",
         "--negative", "blurry", "--steps", "3", "--width", "64", "--height", "64", "--seed", "42",
         "--backend", "torch", "--precision", "fp32", "--out", str(out), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["backend"] == "torch" and data["model"] == "tiny-sdxl" and data["images"][0]["seed"] == 42
    meta = read_png_parameters(out)
    assert meta["prompt"] == "a red lighthouse" and meta["seed"] == 42 and meta["steps"] == 3


# ---- will it fit? ---------------------------------------------------------------


def test_fit_counts_each_loaded_component_once_both_text_encoders_included(tiny_sdxl, tmp_path):
    from engines.machine.image_fit import PipelineShape, folder_weights

    def size(component: str) -> int:
        return sum(p.stat().st_size for p in (tiny_sdxl / component).glob("*.safetensors"))

    weights, dtype = folder_weights(tiny_sdxl)
    assert size("text_encoder_2") > 0 and dtype == "fp32"
    assert weights == sum(size(c) for c in ("unet", "vae", "text_encoder", "text_encoder_2"))
    shape = PipelineShape.from_folder(tiny_sdxl)
    assert (shape.unet_channels, shape.vae_channels, shape.vae_scale, shape.native_size) == (32, 32, 2, 64)
    # As downloaded, SDXL base also has an .fp16 variant of each weight and a single-file checkpoint.
    full = tmp_path / "full-download"
    shutil.copytree(tiny_sdxl, full)
    for component, name in (("unet", "diffusion_pytorch_model"), ("text_encoder_2", "model")):
        shutil.copy(full / component / f"{name}.safetensors", full / component / f"{name}.fp16.safetensors")
    shutil.copy(full / "unet" / "diffusion_pytorch_model.safetensors", full / "sd_xl_base_1.0.safetensors")
    assert folder_weights(full) == (weights, "fp32")


def test_fit_verdict_for_the_sdxl_folder_at_its_trained_size(tiny_sdxl):
    from engines.machine.image_fit import folder_weights, run_dtype_factor
    from engines.workspace import open_workspace

    library = open_workspace().library()
    verdict = library.verdict_for_file(tiny_sdxl)
    weights, dtype = folder_weights(tiny_sdxl)
    assert verdict.need.weights_bytes == int(weights * run_dtype_factor(dtype, library.hardware()))
    assert verdict.verdict in ("gpu_full", "cpu_only") and "at 64×64" in verdict.explanation
