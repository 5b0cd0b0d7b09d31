"""Everything a user can get wrong gives an EngineError with a clear message, never a traceback."""

from __future__ import annotations

import dataclasses
import json
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from engines.model_folder import PICKLED_MESSAGE, inspect_model_folder, is_distilled
from engines.diffusion.types import ImageLoadSpec, ImageRequest
from engines.errors import EngineError, ErrorKind
from tests.fixtures.tiny_sd import EventLog, one_torch_thread, tiny_sd  # noqa: F401  (fixtures)
from tests.fixtures.bad_images import header_only_png

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def error_of(call, *args, **kwargs) -> EngineError:
    with pytest.raises(EngineError) as err:
        call(*args, **kwargs)
    return err.value


def write_index(folder, class_name="StableDiffusionPipeline"):
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": class_name, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


# ---- model folders --------------------------------------------------------------


def test_missing_and_empty_folders(tmp_path):
    err = error_of(inspect_model_folder, tmp_path / "nowhere")
    assert err.kind == ErrorKind.MODEL_FILE and err.message == f"The model folder {tmp_path / 'nowhere'} does not exist."
    (tmp_path / "empty").mkdir()
    err = error_of(inspect_model_folder, tmp_path / "empty")
    assert err.kind == ErrorKind.MODEL_FILE and err.message == f"The model folder {tmp_path / 'empty'} is empty."


def test_folder_without_model_index(tmp_path):
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "v1-5-pruned.safetensors").write_bytes(b"\0" * 16)
    err = error_of(inspect_model_folder, folder)
    assert "no model_index.json" in err.message and "single-file checkpoint" in err.message


def test_single_files_are_refused_with_a_reason(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"pickle")
    err = error_of(inspect_model_folder, ckpt)
    assert err.kind == ErrorKind.UNSUPPORTED and PICKLED_MESSAGE in err.message
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"\0" * 16)
    assert "choose the folder" in error_of(inspect_model_folder, single).message


def test_folder_without_unet(tmp_path):
    err = error_of(inspect_model_folder, write_index(tmp_path / "no-unet"))
    assert err.kind == ErrorKind.MODEL_FILE and "no UNet" in err.message and "unet/" in err.message


def test_unsupported_pipeline_class_names_it_and_the_supported_ones(tmp_path):
    err = error_of(inspect_model_folder, write_index(tmp_path / "kandinsky", "KandinskyV22Pipeline"))
    assert err.kind == ErrorKind.UNSUPPORTED
    assert "KandinskyV22Pipeline" in err.message
    assert "StableDiffusionPipeline" in err.message and "StableDiffusionXLPipeline" in err.message


def test_pickled_weights_only_are_refused(tmp_path):
    folder = write_index(tmp_path / "pickled")
    for part, name in (("unet", "diffusion_pytorch_model.bin"), ("vae", "diffusion_pytorch_model.bin"),
                       ("text_encoder", "pytorch_model.bin")):
        (folder / part).mkdir()
        (folder / part / name).write_bytes(b"not really a pickle")
    err = error_of(inspect_model_folder, folder)
    assert err.kind == ErrorKind.UNSUPPORTED
    assert ("Atelier never loads pickled weights (.bin/.ckpt) because they can run code; "
            "use a .safetensors version") in err.message


def test_truncated_safetensors_is_caught_before_and_during_load(tiny_sd, tmp_path):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    broken = tmp_path / "truncated"
    shutil.copytree(tiny_sd, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = error_of(TorchDiffusionEngine().load, ImageLoadSpec(str(broken)), EventLog())
    assert err.kind == ErrorKind.MODEL_FILE and err.message == (
        f"{weights} is truncated: it should be 5,742,160 bytes but is 2,871,080. The download probably stopped "
        "early; download the model again.")
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 64)
    err = error_of(inspect_model_folder, broken)
    assert err.kind == ErrorKind.MODEL_FILE and err.message == (
        f"{weights} is corrupt: its safetensors header is not valid. Download the model again.")


def test_damaged_config_is_a_model_file_error_not_a_traceback(tiny_sd, tmp_path):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    broken = tmp_path / "bad-config"
    shutil.copytree(tiny_sd, broken)
    (broken / "unet" / "config.json").write_text('{"block_out_channels": [32, 64], "sample_size": "x"')
    err = error_of(TorchDiffusionEngine().load, ImageLoadSpec(str(broken)), EventLog())
    assert err.kind == ErrorKind.MODEL_FILE and err.message == (
        f"The UNet config {broken / 'unet' / 'config.json'} could not be read (Expecting ',' delimiter: line 1 "
        "column 52 (char 51)). The model folder is damaged; copy it again.")


def test_onnx_folders_incomplete_sd_or_sdxl(tmp_path):
    folder = write_index(tmp_path / "half-onnx", "OnnxStableDiffusionPipeline")
    (folder / "unet").mkdir()
    (folder / "unet" / "model.onnx").write_bytes(b"x")
    err = error_of(inspect_model_folder, folder)
    assert err.message == (f"The ONNX model in {folder} is incomplete: text_encoder/model.onnx, "
                           "vae_decoder/model.onnx, tokenizer/, scheduler/ missing. Convert or copy the model again.")
    xl = write_index(tmp_path / "xl-onnx", "ORTStableDiffusionXLPipeline")
    (xl / "unet").mkdir()
    (xl / "unet" / "model.onnx").write_bytes(b"x")
    err = error_of(inspect_model_folder, xl)
    assert err.kind == ErrorKind.MODEL_FILE and err.message == (
        f"The ONNX model in {xl} is incomplete: text_encoder/model.onnx, vae_decoder/model.onnx, "
        "text_encoder_2/model.onnx, tokenizer/, tokenizer_2/, scheduler/ missing. Convert or copy the model again.")


def test_the_tiny_folder_is_recognised(tiny_sd):
    folder = inspect_model_folder(tiny_sd)
    assert (folder.kind, folder.family, folder.vae_scale_factor, folder.native_size) == ("diffusers", "sd", 2, 64)
    assert not folder.distilled and folder.variant is None
    assert is_distilled("sd-turbo", {}, {}) and is_distilled("x", {"_class_name": "LCMScheduler"}, {})
    assert is_distilled("x", {}, {"time_cond_proj_dim": 256}) and not is_distilled("sd15", {}, {})


# ---- requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"width": 100}, "multiple of 8"),
        ({"height": 4096}, "between 64 and 2048"),
        ({"seed": 2**32}, "seed must be between 0 and 4294967295"),
        ({"seed": -1}, "seed must be between"),
        ({"steps": 0}, "steps must be between 1 and 150"),
        ({"guidance": 31.0}, "guidance"),
        ({"scheduler": "Heun"}, "unknown sampler 'Heun'"),
        ({"prompt": "  "}, "the prompt is empty"),
        ({"batch_count": 17}, "batch count"),
        ({"init_image": b"x", "strength": 0.0}, "strength must be above 0"),
        ({"init_image": b"x", "strength": 0.1, "steps": 5}, "no denoising step would run"),
        ({"init_image": b""}, "the init image is empty (0 bytes)"),
    ],
)
def test_request_validation(overrides, expected):
    values = dict(prompt="a cat", width=64, height=64, steps=4)
    values.update(overrides)
    problems = ImageRequest(**values).validate()
    assert any(expected in p for p in problems), problems


def test_valid_request_and_spec_have_no_problems():
    assert ImageRequest("a cat").validate() == []
    assert ImageLoadSpec("/m").validate() == []
    assert "backend" in ImageLoadSpec("/m", backend="tensorrt").validate()[0]


@pytest.fixture(scope="module")
def engine(tiny_sd):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    eng = TorchDiffusionEngine()
    eng.load(ImageLoadSpec(str(tiny_sd), dtype="fp32"), EventLog())
    yield eng
    eng.unload()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"width": 100}, "width must be a multiple of 8 (got 100; try 96)"),
        ({"seed": 2**32}, "seed must be between 0 and 4294967295"),
        ({"init_image": b"this is not an image"}, "The init image could not be read"),
        ({"scheduler": "LCM"}, "only works with LCM or Turbo models"),
        # b"" is an (empty) init image, never "no init image": refused, not run as txt2img
        ({"init_image": b""}, "Cannot make this image: the init image is empty (0 bytes)."),
        ({"init_image": header_only_png(9000, 8000)},
         "The init image is 9000×8000 pixels (72 megapixels); Atelier takes at most 64 megapixels."),
    ],
)
def test_bad_requests_are_refused_by_the_engine(engine, overrides, expected):
    values = dict(prompt="a cat", width=64, height=64, steps=4, seed=1)
    values.update(overrides)
    err = error_of(engine.generate, ImageRequest(**values), EventLog())
    assert err.kind == ErrorKind.BAD_INPUT and expected in err.message


def test_onnx_size_multiple_is_explained(tiny_sd):
    from engines.diffusion.common import validate_request

    folder = dataclasses.replace(inspect_model_folder(tiny_sd), size_multiple=64)
    err = error_of(validate_request, ImageRequest("a cat", width=520, height=512), folder, folder.size_multiple)
    assert "multiple of 64" in err.message and "try 512" in err.message


def test_bad_load_specs(tiny_sd):
    from engines.diffusion.engine import DiffusionEngine

    assert "does not exist" in error_of(DiffusionEngine().load, ImageLoadSpec("/no/such/model"), EventLog()).message
    assert error_of(DiffusionEngine().load, ImageLoadSpec(str(tiny_sd), device="tpu"), EventLog()).message == (
        "Cannot load the model: device must be auto, cpu, cuda or mps, not 'tpu'.")
    err = error_of(DiffusionEngine().load, ImageLoadSpec(str(tiny_sd), dtype="fp16", device="cpu"), EventLog())
    assert err.kind == ErrorKind.UNSUPPORTED and "only on a GPU" in err.message


# ---- schedulers and previews ---------------------------------------------------------


def test_scheduler_table(tiny_sd):
    from engines.diffusion.schedulers import make_scheduler, usable_schedulers

    config = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    expected = {"Euler": "EulerDiscreteScheduler", "Euler a": "EulerAncestralDiscreteScheduler",
                "DPM++ 2M Karras": "DPMSolverMultistepScheduler", "DDIM": "DDIMScheduler", "LCM": "LCMScheduler"}
    for name, class_name in expected.items():
        scheduler = make_scheduler(name, config)
        assert type(scheduler).__name__ == class_name
        assert scheduler.config.beta_schedule == "scaled_linear"  # the model's betas carry over
    assert make_scheduler("DPM++ 2M Karras", config).config.use_karras_sigmas is True
    assert usable_schedulers(False) == ("Euler", "Euler a", "DPM++ 2M Karras", "DDIM")
    assert usable_schedulers(True)[-1] == "LCM"


def test_preview_is_a_png_of_the_latents_and_sane():
    """Its cost per step is measured by benchmarks/bench_diffusion.py (_callback_ms), not here."""
    from engines.diffusion.preview import latents_to_rgb, preview_png

    latents = np.random.default_rng(0).normal(size=(1, 4, 64, 64)).astype(np.float32)
    png = preview_png(latents)
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    grey = latents_to_rgb(np.zeros((4, 8, 8), np.float32))
    assert grey.shape == (8, 8, 3) and np.all(grey == 127)
    assert latents_to_rgb(np.zeros((4, 8, 8), np.float32), "sdxl")[0, 0, 0] > 127  # SDXL has a bias
