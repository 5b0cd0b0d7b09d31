"""SDXL on ONNX Runtime: Atelier's converter and the ONNX engine, against the PyTorch engine, on the tiny model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engines.diffusion.png_meta import read_png_parameters
from engines.diffusion.types import ImageLoadSpec, ImageRequest, PreviewEvent, StepEvent
from engines.errors import EngineError, ErrorKind
from tests.fixtures.tiny_sd import (  # noqa: F401  (fixtures)
    EventLog,
    make_init_png,
    one_torch_thread,
    png_pixels,
    tiny_sd,
    tiny_sd_onnx,
)
from tests.fixtures.tiny_sdxl import tiny_sdxl, tiny_sdxl_onnx  # noqa: F401  (session fixtures)

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("onnxruntime")
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def small(**overrides) -> ImageRequest:
    values = dict(prompt="a lighthouse at dawn", width=64, height=64, steps=4, seed=99)
    values.update(overrides)
    return ImageRequest(**values)


@pytest.fixture(scope="module")
def onnx_engine(tiny_sdxl_onnx):
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    engine = OnnxDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sdxl_onnx)), EventLog())
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def torch_engine(tiny_sdxl):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sdxl), dtype="fp32"), EventLog())
    yield engine
    engine.unload()


def assert_matches_torch(onnx_engine, torch_engine, request) -> None:
    """Same seed, same image on both backends, within the tolerance the SD comparison uses."""
    ours = png_pixels(onnx_engine.generate(request, EventLog()).images[0].png)
    reference = png_pixels(torch_engine.generate(request, EventLog()).images[0].png)
    diff = np.abs(ours - reference)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())


def test_converter_writes_optimums_sdxl_layout(tiny_sdxl_onnx):
    import onnx

    for part in ("text_encoder", "text_encoder_2", "unet", "vae_encoder", "vae_decoder"):
        assert (tiny_sdxl_onnx / part / "model.onnx").is_file()
        assert (tiny_sdxl_onnx / part / "config.json").is_file()
    for part in ("tokenizer", "tokenizer_2"):
        assert (tiny_sdxl_onnx / part / "tokenizer_config.json").is_file()
    assert json.loads((tiny_sdxl_onnx / "tokenizer_2" / "tokenizer_config.json").read_text())["pad_token"] == "!"
    index = json.loads((tiny_sdxl_onnx / "model_index.json").read_text())
    assert index["_class_name"] == "ORTStableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    assert index["text_encoder_2"] == index["unet"] == ["diffusers", "OnnxRuntimeModel"]

    def names(part: str, kind: str) -> list[str]:
        graph = onnx.load(str(tiny_sdxl_onnx / part / "model.onnx"), load_external_data=False).graph
        return [value.name for value in getattr(graph, kind)]

    assert names("unet", "input") == ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
    assert names("text_encoder", "output")[:2] == ["last_hidden_state", "pooler_output"]
    assert names("text_encoder_2", "output") == ["text_embeds", "last_hidden_state"] + [
        f"hidden_states.{i}" for i in range(5)]  # 4 layers + the embeddings


def test_the_onnx_folder_is_recognised_as_sdxl(tiny_sdxl_onnx, onnx_engine):
    from engines.model_folder import inspect_model_folder

    folder = inspect_model_folder(tiny_sdxl_onnx)
    assert (folder.kind, folder.family, folder.native_size, folder.has_vae_encoder) == ("onnx", "sdxl", 64, True)
    info = onnx_engine.info
    assert (info.backend, info.device, info.dtype) == ("onnx", "cpu", "fp32")
    assert info.pipeline_class == "ORTStableDiffusionXLPipeline"


def test_txt2img_is_deterministic_and_matches_torch(onnx_engine, torch_engine):
    events = EventLog()
    first = onnx_engine.generate(small(), events)
    second = onnx_engine.generate(small(), EventLog())
    assert np.array_equal(png_pixels(first.images[0].png), png_pixels(second.images[0].png))
    assert [s.step for s in events.of(StepEvent)] == [1, 2, 3, 4]
    assert [p.step for p in events.of(PreviewEvent)] == [1, 2, 3, 4]
    assert first.backend == "onnx" and first.seconds_per_step > 0
    assert_matches_torch(onnx_engine, torch_engine, small())


@pytest.mark.parametrize(
    "overrides",
    [
        {"negative_prompt": "fog"},  # the negative prompt encoded by both encoders, not zeroed
        {"width": 96, "height": 64, "seed": 5},  # time ids are (height, width): a swap shows here
        {"guidance": 1.0},  # no unconditional pass at all
        {"scheduler": "DPM++ 2M Karras"},
        {"scheduler": "Euler a"},
    ],
    ids=["negative", "non-square", "unguided", "dpmpp", "euler-a"],
)
def test_conditioning_variants_match_torch(onnx_engine, torch_engine, overrides):
    assert_matches_torch(onnx_engine, torch_engine, small(**overrides))


def test_img2img_matches_torch(onnx_engine, torch_engine):
    request = small(init_image=make_init_png(64, 96), strength=0.75, negative_prompt="fog")
    events = EventLog()
    result = onnx_engine.generate(request, events)
    assert [s.total for s in events.of(StepEvent)] == [3, 3, 3]
    again = onnx_engine.generate(request, EventLog())
    assert np.array_equal(png_pixels(result.images[0].png), png_pixels(again.images[0].png))
    assert_matches_torch(onnx_engine, torch_engine, request)


def test_cancel_then_still_works(onnx_engine):
    cancel = threading.Event()

    def emit(event):
        if isinstance(event, StepEvent) and event.step == 2:
            cancel.set()

    result = onnx_engine.generate(small(batch_count=2), emit, cancel)
    assert result.cancelled and result.images == ()
    assert len(onnx_engine.generate(small(), EventLog(), threading.Event()).images) == 1


def test_dispatcher_runs_the_onnx_copy_of_an_sdxl_folder(tiny_sdxl, tiny_sdxl_onnx, tmp_path, monkeypatch):
    from engines.diffusion import auto
    from engines.diffusion.engine import DiffusionEngine

    model = tmp_path / "my-sdxl"
    shutil.copytree(tiny_sdxl, model)
    shutil.copytree(tiny_sdxl_onnx, tmp_path / "my-sdxl-onnx")
    monkeypatch.setattr(auto, "_torch_has_gpu", lambda: False)
    monkeypatch.setattr(auto, "_cpu_bf16", lambda: False)
    monkeypatch.setattr(auto, "_onnx_fits", lambda copy: True)
    assert auto.choose_backend(model, ImageLoadSpec(str(model))) == "onnx"
    engine = DiffusionEngine()
    try:
        info = engine.load(ImageLoadSpec(str(model), backend="onnx"), EventLog())
        assert engine.backend == "onnx" and info.path.endswith("my-sdxl-onnx")
        assert len(engine.generate(small(), EventLog()).images) == 1
    finally:
        engine.unload()


def test_an_incomplete_sdxl_onnx_folder_names_what_is_missing(tiny_sdxl_onnx, tmp_path):
    from engines.model_folder import inspect_model_folder

    broken = tmp_path / "half-sdxl-onnx"
    shutil.copytree(tiny_sdxl_onnx, broken)
    shutil.rmtree(broken / "text_encoder_2")
    shutil.rmtree(broken / "tokenizer_2")
    with pytest.raises(EngineError) as err:
        inspect_model_folder(broken)
    assert err.value.kind == ErrorKind.MODEL_FILE
    assert "text_encoder_2/model.onnx" in err.value.message and "tokenizer_2/" in err.value.message


def test_a_unet_that_does_not_fit_the_family_is_refused_in_words(tiny_sdxl_onnx, tiny_sd_onnx, tmp_path):
    """An SD 1.x UNet in an SDXL folder (no text_embeds/time_ids inputs) is an error at load, not mid-image."""
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    mixed = tmp_path / "mixed-onnx"
    shutil.copytree(tiny_sdxl_onnx, mixed)
    shutil.copy(tiny_sd_onnx / "unet" / "model.onnx", mixed / "unet" / "model.onnx")
    with pytest.raises(EngineError) as err:
        OnnxDiffusionEngine().load(ImageLoadSpec(str(mixed)), EventLog())
    assert err.value.kind == ErrorKind.UNSUPPORTED and "text_embeds, time_ids" in err.value.message


def test_text_encoders_without_hidden_states_are_refused_in_words(tiny_sdxl_onnx, tiny_sd_onnx, tmp_path):
    """SDXL conditions on the penultimate hidden states; an SD-style text encoder export lacks them."""
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    mixed = tmp_path / "no-hidden-states-onnx"
    shutil.copytree(tiny_sdxl_onnx, mixed)
    shutil.copy(tiny_sd_onnx / "text_encoder" / "model.onnx", mixed / "text_encoder" / "model.onnx")
    with pytest.raises(EngineError) as err:
        OnnxDiffusionEngine().load(ImageLoadSpec(str(mixed)), EventLog())
    assert err.value.kind == ErrorKind.MODEL_FILE and "hidden states" in err.value.message


def test_cli_converts_sdxl_and_makes_an_image_with_onnx_runtime(tiny_sdxl, tmp_path):
    def atelier(*args):
        return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)

    dst = tmp_path / "sdxl-onnx"
    run = atelier("convert", "onnx", str(tiny_sdxl), str(dst))
    assert run.returncode == 0, run.stderr
    assert (dst / "unet" / "model.onnx").exists() and (dst / "model_index.json").exists()  # as for SD 1.x
    assert (dst / "text_encoder_2" / "model.onnx").is_file() and (dst / "tokenizer_2").is_dir()
    out = tmp_path / "x.png"
    run = atelier("image", "--model", str(dst), "--prompt", "a red lighthouse", "--steps", "3", "--width", "64",
                  "--height", "64", "--seed", "42", "--backend", "onnx", "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["backend"] == "onnx" and data["model"] == "sdxl-onnx" and data["images"][0]["seed"] == 42
    meta = read_png_parameters(out)
    assert meta["prompt"] == "a red lighthouse" and meta["atelier"]["backend"] == "onnx"
