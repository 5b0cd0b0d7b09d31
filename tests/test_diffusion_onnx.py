"""The ONNX Runtime image engine and the converter, on the tiny random-weight pipeline."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

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

pytest.importorskip("onnxruntime")
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def small(**overrides) -> ImageRequest:
    values = dict(prompt="a lighthouse at dawn", negative_prompt="fog", width=64, height=64, steps=4, seed=99)
    values.update(overrides)
    return ImageRequest(**values)


@pytest.fixture(scope="module")
def onnx_engine(tiny_sd_onnx):
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    engine = OnnxDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd_onnx)), EventLog())
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def torch_engine(tiny_sd):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd), dtype="fp32"), EventLog())
    yield engine
    engine.unload()


def test_converter_writes_the_optimum_layout(tiny_sd_onnx):
    for part in ("text_encoder", "unet", "vae_encoder", "vae_decoder"):
        assert (tiny_sd_onnx / part / "model.onnx").is_file()
        assert (tiny_sd_onnx / part / "config.json").is_file()
    assert (tiny_sd_onnx / "tokenizer" / "tokenizer_config.json").is_file()
    assert (tiny_sd_onnx / "scheduler" / "scheduler_config.json").is_file()
    index = json.loads((tiny_sd_onnx / "model_index.json").read_text())
    assert index["_class_name"] == "OnnxStableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "OnnxRuntimeModel"]
    assert not list(tiny_sd_onnx.parent.glob("*.tmp-*"))  # renamed into place, nothing left behind


def test_converter_refuses_an_existing_folder_and_cleans_up_on_failure(tiny_sd, tiny_sd_onnx, tmp_path,
                                                                      monkeypatch):
    from engines.diffusion import convert

    with pytest.raises(EngineError, match="already exists"):
        convert.convert_to_onnx(tiny_sd, tiny_sd_onnx)

    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(convert, "_export", broken_export)
    with pytest.raises(EngineError) as err:
        convert.convert_to_onnx(tiny_sd, tmp_path / "out")
    assert err.value.kind == ErrorKind.INTERNAL and "exporter exploded" in err.value.message
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary folder


def test_load_info(onnx_engine):
    info = onnx_engine.info
    assert (info.backend, info.device, info.dtype) == ("onnx", "cpu", "fp32")
    assert info.native_size == 64 and "Euler" in info.schedulers


def test_txt2img_is_deterministic_and_matches_torch(onnx_engine, torch_engine):
    """Same seed, same image on both backends: measured mean |diff| ≈ 0.0001/255, max 1/255 here."""
    events = EventLog()
    first = onnx_engine.generate(small(), events)
    second = onnx_engine.generate(small(), EventLog())
    ours = png_pixels(first.images[0].png)
    assert np.array_equal(ours, png_pixels(second.images[0].png))
    reference = png_pixels(torch_engine.generate(small(), EventLog()).images[0].png)
    assert np.abs(ours - reference).mean() < 0.5 and np.abs(ours - reference).max() <= 4
    assert [s.step for s in events.of(StepEvent)] == [1, 2, 3, 4]
    assert [p.step for p in events.of(PreviewEvent)] == [1, 2, 3, 4]
    assert first.backend == "onnx" and first.seconds_per_step > 0


def test_img2img_matches_torch(onnx_engine, torch_engine):
    request = small(init_image=make_init_png(64, 96), strength=0.75)
    events = EventLog()
    ours = onnx_engine.generate(request, events)
    assert [s.total for s in events.of(StepEvent)] == [3, 3, 3]
    reference = torch_engine.generate(request, EventLog())
    diff = np.abs(png_pixels(ours.images[0].png) - png_pixels(reference.images[0].png))
    assert diff.mean() < 0.5 and diff.max() <= 4


@pytest.mark.parametrize("scheduler", ["Euler a", "DPM++ 2M Karras", "DDIM"])
def test_other_schedulers_match_torch(onnx_engine, torch_engine, scheduler):
    ours = png_pixels(onnx_engine.generate(small(scheduler=scheduler), EventLog()).images[0].png)
    reference = png_pixels(torch_engine.generate(small(scheduler=scheduler), EventLog()).images[0].png)
    assert np.abs(ours - reference).mean() < 0.5


def test_non_square_size_and_batch(onnx_engine):
    result = onnx_engine.generate(small(width=96, height=64, batch_count=2, seed=7), EventLog())
    assert result.seeds == (7, 8)
    assert png_pixels(result.images[0].png).shape == (64, 96, 3)


def test_cancel_then_still_works(onnx_engine):
    cancel = threading.Event()

    def emit(event):
        if isinstance(event, StepEvent) and event.step == 2:
            cancel.set()

    result = onnx_engine.generate(small(), emit, cancel)
    assert result.cancelled and result.images == ()
    assert len(onnx_engine.generate(small(), EventLog(), threading.Event()).images) == 1


def test_provider_choice():
    from engines.diffusion.onnx_engine import choose_provider

    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_provider("auto", both) == ("CUDAExecutionProvider", "cuda")
    assert choose_provider("auto", ["DmlExecutionProvider", "CPUExecutionProvider"])[1] == "dml"
    assert choose_provider("auto", ["CPUExecutionProvider"]) == ("CPUExecutionProvider", "cpu")
    assert choose_provider("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"])[1] == "cpu"
    with pytest.raises(EngineError) as err:
        choose_provider("cuda", ["CPUExecutionProvider"])
    assert err.value.kind == ErrorKind.UNSUPPORTED and "CPUExecutionProvider" in err.value.message


def test_onnx_model_refuses_other_precisions_and_torch(tiny_sd_onnx):
    from engines.diffusion.auto import choose_backend
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    with pytest.raises(EngineError, match="stored in fp32"):
        OnnxDiffusionEngine().load(ImageLoadSpec(str(tiny_sd_onnx), dtype="bf16"), EventLog())
    with pytest.raises(EngineError) as err:
        choose_backend(tiny_sd_onnx, ImageLoadSpec(str(tiny_sd_onnx), backend="torch"))
    assert err.value.kind == ErrorKind.UNSUPPORTED and "PyTorch cannot run it" in err.value.message


def test_truncated_onnx_file_is_a_model_file_error(tiny_sd_onnx, tmp_path):
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    broken = tmp_path / "broken-onnx"
    shutil.copytree(tiny_sd_onnx, broken)
    unet = broken / "unet" / "model.onnx"
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 3])
    with pytest.raises(EngineError) as err:
        OnnxDiffusionEngine().load(ImageLoadSpec(str(broken)), EventLog())
    # ONNX Runtime's own words, in the parentheses, change between its versions
    assert err.value.kind == ErrorKind.MODEL_FILE
    assert err.value.message.startswith(f"{unet} could not be opened by ONNX Runtime (")
    assert err.value.message.endswith("). The file may be damaged or incomplete; convert or copy the model again.")


def test_auto_backend_uses_an_onnx_copy_beside_the_model(tiny_sd, tiny_sd_onnx, tmp_path, monkeypatch):
    from engines.diffusion import auto
    from engines.diffusion.engine import DiffusionEngine

    model = tmp_path / "my-model"
    shutil.copytree(tiny_sd, model)
    spec = ImageLoadSpec(str(model))
    assert auto.choose_backend(model, spec) == "torch"  # no copy yet
    with pytest.raises(EngineError, match="Convert it to ONNX first"):
        auto.choose_backend(model, ImageLoadSpec(str(model), backend="onnx"))
    shutil.copytree(tiny_sd_onnx, tmp_path / "my-model-onnx")
    monkeypatch.setattr(auto, "_torch_has_gpu", lambda: False)
    monkeypatch.setattr(auto, "_cpu_bf16", lambda: False)
    assert auto.choose_backend(model, spec) == "onnx"
    assert auto.choose_backend(model, ImageLoadSpec(str(model), dtype="bf16")) == "torch"
    monkeypatch.setattr(auto, "_cpu_bf16", lambda: True)
    assert auto.choose_backend(model, spec) == "torch"  # bf16 PyTorch measured faster than ONNX Runtime
    monkeypatch.setattr(auto, "_cpu_bf16", lambda: False)
    monkeypatch.setattr(auto, "_onnx_fits", lambda copy: False)
    assert auto.choose_backend(model, spec) == "torch"  # ONNX Runtime needs ~2.6× the model in RAM
    monkeypatch.setattr(auto, "_onnx_fits", lambda copy: True)
    monkeypatch.setattr(auto, "_torch_has_gpu", lambda: True)
    assert auto.choose_backend(model, spec) == "torch"
    monkeypatch.setattr(auto, "_torch_has_gpu", lambda: False)
    engine = DiffusionEngine()
    info = engine.load(ImageLoadSpec(str(model), backend="onnx"), EventLog())
    assert engine.backend == "onnx" and info.path.endswith("my-model-onnx")
    assert len(engine.generate(small(), EventLog()).images) == 1
    engine.unload()
