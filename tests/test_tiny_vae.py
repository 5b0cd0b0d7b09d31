"""The tiny VAE (TAESD): real previews at every step and a fast final decode, on both engines.

The reference for the final decode is diffusers' own way of using TAESD
(the pipeline's ``vae`` swapped for the AutoencoderTiny, as its docs show),
run on the same latents and prompt embeddings; the ONNX engine, whose UNet
is an ONNX session, must give the same picture as the PyTorch engine.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from engines.diffusion.types import ImageLoadSpec, ImageRequest, PreviewEvent
from engines.errors import EngineError
from tests.fixtures.tiny_sd import (  # noqa: F401  (fixtures)
    EventLog,
    one_torch_thread,
    png_pixels,
    tiny_sd,
    tiny_sd_onnx,
)
from tests.fixtures.tiny_taesd import build_tiny_taesd, tiny_taesd  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

BASE = dict(prompt="a red lighthouse", width=64, height=64, steps=3, seed=11, guidance=5.0)


# ---- the folder check (no torch) ----------------------------------------------

def test_a_usable_tiny_vae_folder_has_no_problem(tiny_taesd):
    from engines.diffusion.taesd import tiny_vae_problem

    assert tiny_vae_problem(tiny_taesd) == ""
    assert ImageRequest(**BASE, vae=str(tiny_taesd), preview_vae=str(tiny_taesd)).validate() == []


def test_each_unusable_tiny_vae_folder_is_named_in_a_sentence(tiny_sd, tiny_taesd, tmp_path):
    from engines.diffusion.taesd import tiny_vae_problem

    missing = tmp_path / "nowhere"
    assert tiny_vae_problem(missing) == f"The tiny VAE {missing} does not exist."
    a_file = tiny_taesd / "config.json"
    assert tiny_vae_problem(a_file) == (
        f"The tiny VAE {a_file} is a file; give the folder that holds its config.json and "
        "diffusion_pytorch_model.safetensors (as madebyollin/taesd publishes it).")
    assert tiny_vae_problem(tmp_path) == f"{tmp_path} is not a tiny VAE folder: it has no config.json."
    full_vae = tiny_sd / "vae"
    assert tiny_vae_problem(full_vae) == (
        f"{full_vae} is not a tiny VAE: its config.json describes AutoencoderKL, not an AutoencoderTiny "
        "(TAESD, TAESDXL).")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}), encoding="utf-8")
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    assert tiny_vae_problem(pickled) == (
        f"The tiny VAE {pickled} has no diffusion_pytorch_model.safetensors. Atelier loads safetensors weights "
        "only, never pickled .bin or .pth files.")
    assert ImageRequest(**BASE, vae=str(pickled)).validate() == [
        f"The tiny VAE {pickled} has no diffusion_pytorch_model.safetensors. Atelier loads safetensors weights "
        "only, never pickled .bin or .pth files"]
    assert ImageRequest(**BASE, preview_vae=str(missing)).validate() == [f"The tiny VAE {missing} does not exist"]


def test_the_png_parameters_name_the_tiny_vae_as_a1111_names_a_vae(tiny_taesd):
    from engines.diffusion.png_meta import format_parameters, parse_parameters

    text = format_parameters(ImageRequest(**BASE, vae=str(tiny_taesd)), {"seed": 11, "model": "tiny-sd"})
    assert text.splitlines()[-1] == ("Steps: 3, Sampler: Euler, CFG scale: 5, Seed: 11, Size: 64x64, Model: tiny-sd, "
                                     "VAE: tiny-taesd")
    assert parse_parameters(text)["settings"]["VAE"] == "tiny-taesd"
    assert "VAE" not in format_parameters(ImageRequest(**BASE), {"seed": 11})


# ---- loading --------------------------------------------------------------------

def test_a_tiny_vae_of_another_family_is_refused_in_words(tmp_path):
    from engines.diffusion.taesd import TinyVae

    wide = build_tiny_taesd(tmp_path / "sixteen", latent_channels=16)
    with pytest.raises(EngineError) as caught:
        TinyVae(wide, latent_channels=4, scale=2)
    assert caught.value.message == (
        f"The tiny VAE {wide} reads 16-channel latents, but this model makes 4-channel ones: choose the tiny VAE "
        "of the model's family (TAESD for SD 1.x/2.x, TAESDXL for SDXL).")
    deep = build_tiny_taesd(tmp_path / "deep", levels=4)
    with pytest.raises(EngineError) as caught:
        TinyVae(deep, latent_channels=4, scale=2)
    assert caught.value.message == (
        f"The tiny VAE {deep} enlarges latents 8×, but this model's VAE enlarges them 2×: it was made for another "
        "kind of model.")


def test_a_truncated_tiny_vae_is_a_model_file_error(tiny_taesd, tmp_path):
    import shutil

    from engines.diffusion.taesd import TinyVae
    from engines.errors import ErrorKind

    broken = tmp_path / "broken"
    shutil.copytree(tiny_taesd, broken)
    weights = broken / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(EngineError) as caught:
        TinyVae(broken, latent_channels=4, scale=2)
    assert caught.value.kind == ErrorKind.MODEL_FILE
    assert caught.value.message.startswith(f"The tiny VAE {broken} could not be loaded: ")


# ---- the engines ------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_engine(tiny_sd):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd), backend="torch", dtype="fp32"), EventLog())
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def onnx_engine(tiny_sd_onnx):
    pytest.importorskip("onnxruntime")
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    engine = OnnxDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd_onnx)), EventLog())
    yield engine
    engine.unload()


def diffusers_with_tiny_vae(engine, tiny_taesd, request: ImageRequest) -> np.ndarray:
    """The same image made the way diffusers' docs use TAESD: the pipeline's vae swapped for it."""
    import torch
    from diffusers import AutoencoderTiny

    from engines.diffusion.common import cpu_generator, initial_latents
    from engines.diffusion.schedulers import make_scheduler

    pipe = engine.pipeline
    full_vae = pipe.vae
    generator = cpu_generator(request.seed)
    latents = initial_latents(generator, (1, 4, request.height // 2, request.width // 2))
    embeds = engine._text.pipeline_kwargs(engine._text.embeds(request.prompt, request.negative_prompt, True))
    pipe.scheduler = make_scheduler(request.scheduler, dict(pipe.scheduler.config))
    try:
        pipe.vae = AutoencoderTiny.from_pretrained(str(tiny_taesd)).eval()
        with torch.inference_mode():
            image = pipe(**embeds, num_inference_steps=request.steps, guidance_scale=request.guidance,
                         generator=generator, latents=latents, width=request.width, height=request.height,
                         output_type="pil").images[0]
    finally:
        pipe.vae = full_vae
    return np.asarray(image, dtype=np.float64)


@pytest.mark.slow
def test_the_tiny_vae_decodes_the_final_image_as_diffusers_does_with_taesd(torch_engine, tiny_taesd):
    request = ImageRequest(**BASE, vae=str(tiny_taesd))
    ours = png_pixels(torch_engine.generate(request, EventLog()).images[0].png)
    reference = diffusers_with_tiny_vae(torch_engine, tiny_taesd, request)
    assert ours.shape == (64, 64, 3)
    assert np.abs(ours - reference).max() <= 1  # the same decode; at most rounding
    full = png_pixels(torch_engine.generate(ImageRequest(**BASE), EventLog()).images[0].png)
    assert np.abs(full - ours).mean() > 5  # a random tiny VAE decodes nothing like the random full one


@pytest.mark.slow
def test_both_backends_decode_with_the_tiny_vae_alike(torch_engine, onnx_engine, tiny_taesd):
    request = ImageRequest(**BASE, vae=str(tiny_taesd))
    reference = png_pixels(torch_engine.generate(request, EventLog()).images[0].png)
    ours = png_pixels(onnx_engine.generate(request, EventLog()).images[0].png)
    assert np.abs(ours - reference).mean() < 0.5 and np.abs(ours - reference).max() <= 4


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_every_step_previews_a_real_tiny_vae_decode(backend, torch_engine, onnx_engine, tiny_taesd):
    from engines.diffusion.taesd import TinyVae

    engine = torch_engine if backend == "torch" else onnx_engine
    # 128²: latents of 64 per side, pooled to 32 for the preview, which the 2× tiny VAE decodes to 64².
    request = ImageRequest(**{**BASE, "width": 128, "height": 128}, preview_vae=str(tiny_taesd))
    events = EventLog()
    captured = []
    original = TinyVae.preview_rgb

    def spy(self, latents):
        captured.append(latents.detach().float().clone())
        return original(self, latents)

    TinyVae.preview_rgb = spy
    try:
        engine.generate(request, events)
    finally:
        TinyVae.preview_rgb = original
    previews = events.of(PreviewEvent)
    assert [p.step for p in previews] == [1, 2, 3] and len(captured) == 3
    tiny = TinyVae(tiny_taesd, latent_channels=4, scale=2)
    for preview, latents in zip(previews, captured):
        pixels = np.asarray(Image.open(io.BytesIO(preview.png)).convert("RGB"))
        assert pixels.shape == (64, 64, 3)
        assert np.array_equal(pixels, tiny.preview_rgb(latents))
        assert latents.shape[-2:] == (64, 64)
    # the final image still comes from the full VAE: the preview VAE only previews
    assert png_pixels(engine.generate(ImageRequest(**{**BASE, "width": 128, "height": 128}), EventLog())
                      .images[0].png).shape == (128, 128, 3)


def test_without_a_preview_vae_previews_stay_the_latent_projection(torch_engine):
    events = EventLog()
    torch_engine.generate(ImageRequest(**BASE), events)
    previews = events.of(PreviewEvent)
    assert len(previews) == 3
    assert Image.open(io.BytesIO(previews[0].png)).size == (32, 32)  # latent resolution: the projection
