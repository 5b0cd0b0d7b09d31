"""LoRAs on the PyTorch image engine: both file layouts, weights, several at once, refusals, the PNG record.

The LoRAs are made by the tests with ``peft`` on the tiny SD UNet
(tests/fixtures/tiny_lora.py); the engine runs in this process on the
tiny pipeline (tests/fixtures/tiny_sd.py), 2 steps at 64×64.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engines.diffusion.types import ImageLoadSpec, ImageRequest, LoraSpec
from engines.errors import EngineError, ErrorKind
from tests.fixtures.tiny_sd import tiny_sd, tiny_sd_onnx  # noqa: F401  (session fixtures)

pytestmark = pytest.mark.slow  # each test loads the tiny pipeline (and often loads it again with LoRAs)


@pytest.fixture(scope="module")
def loras(tiny_sd, tmp_path_factory):  # noqa: F811
    from tests.fixtures.tiny_lora import write_kohya_lora, write_peft_lora

    folder = tmp_path_factory.mktemp("loras")
    return {"peft": write_peft_lora(tiny_sd, folder / "ink-peft.safetensors"),
            "kohya": write_kohya_lora(tiny_sd, folder / "ink-kohya.safetensors"),
            "other": write_peft_lora(tiny_sd, folder / "glow.safetensors", seed=1)}


@pytest.fixture(scope="module")
def engine(tiny_sd):  # noqa: F811
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    made = TorchDiffusionEngine()
    made.load(ImageLoadSpec(str(tiny_sd), backend="torch", dtype="fp32"), lambda event: None)
    yield made
    made.unload()


def make(engine, *loras: LoraSpec, events: list | None = None):
    request = ImageRequest("a lighthouse", width=64, height=64, steps=2, seed=5, preview_every=0, loras=loras)
    result = engine.generate(request, (events.append if events is not None else lambda event: None))
    return result.images[0]


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png))).astype(int)


def test_a_lora_changes_the_image_the_same_way_in_both_file_layouts(engine, loras):
    base = pixels(make(engine))
    events = []
    peft = pixels(make(engine, LoraSpec(str(loras["peft"]), 1.0), events=events))
    kohya = pixels(make(engine, LoraSpec(str(loras["kohya"]), 1.0)))
    assert np.abs(peft - base).mean() > 1  # the LoRA did something
    assert np.abs(peft - kohya).max() <= 1  # the same LoRA, whichever layout it came in
    messages = [getattr(e, "message", "") for e in events]
    assert "Applying the LoRA ink-peft (weight 1)…" in messages
    assert (pixels(make(engine)) == base).all()  # without LoRAs again: the base weights are back


def test_weight_zero_is_the_base_image_and_the_weight_scales_the_change(engine, loras):
    base = pixels(make(engine))
    assert (pixels(make(engine, LoraSpec(str(loras["peft"]), 0.0))) == base).all()
    half = np.abs(pixels(make(engine, LoraSpec(str(loras["peft"]), 0.5))) - base).mean()
    full = np.abs(pixels(make(engine, LoraSpec(str(loras["peft"]), 1.0))) - base).mean()
    assert 0 < half < full


def test_two_loras_at_once(engine, loras):
    one = pixels(make(engine, LoraSpec(str(loras["peft"]), 1.0)))
    other = pixels(make(engine, LoraSpec(str(loras["other"]), 1.0)))
    image = make(engine, LoraSpec(str(loras["peft"]), 1.0), LoraSpec(str(loras["other"]), 0.7, "glow"))
    both = pixels(image)
    assert np.abs(both - one).mean() > 0.5 and np.abs(both - other).mean() > 0.5
    assert image.parameters.splitlines()[0] == "a lighthouse <lora:ink-peft:1> <lora:glow:0.7>"


def test_the_png_records_the_loras_and_they_come_back(engine, loras):
    from engines.diffusion.png_meta import read_png_parameters, request_from_metadata

    lora = LoraSpec(str(loras["kohya"]), 0.8)
    meta = read_png_parameters(make(engine, lora).png)
    assert meta["parameters"].splitlines()[0] == "a lighthouse <lora:ink-kohya:0.8>"
    assert (meta["prompt"], meta["loras"]) == ("a lighthouse", [{"name": "ink-kohya", "weight": 0.8}])
    assert request_from_metadata(meta).loras == (lora,)  # Atelier's own record: the file itself
    foreign = dict(meta, atelier=None)  # another tool's PNG names LoRAs only
    assert request_from_metadata(foreign).loras == (LoraSpec("", 0.8, "ink-kohya"),)
    assert request_from_metadata(foreign).validate() == [
        "the LoRA 'ink-kohya' has no file (add it to the library, or give its path)"]


def test_a_lora_for_another_family_is_refused_before_anything_is_loaded_again(engine, tmp_path):
    from tests.fixtures.stripped_models import write_kohya_lora

    base = pixels(make(engine))
    for base_family, words in (("sdxl", "SDXL"), ("sd1", "SD 1.x")):
        path = write_kohya_lora(tmp_path / f"{base_family}-style.safetensors", base_family)
        with pytest.raises(EngineError) as caught:
            make(engine, LoraSpec(str(path), 1.0))
        assert caught.value.kind == ErrorKind.BAD_INPUT
        assert caught.value.message == (f"{base_family}-style.safetensors is a LoRA for {words}, but tiny-sd is an SD "
                                        "model with 32-wide text embeddings: a LoRA works only with the model family "
                                        "it was trained for.")
    assert (pixels(make(engine)) == base).all()


def test_pickles_damaged_files_and_other_weights_are_refused(engine, tmp_path):
    from tests.fixtures.esrgan import write_upscaler

    pickled = tmp_path / "style.pt"
    pickled.write_bytes(b"\x80\x04not to be unpickled")
    damaged = tmp_path / "cut.safetensors"
    damaged.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"lora_unet_x.lora_down")
    upscaler = write_upscaler(tmp_path / "x4.safetensors")
    cases = [
        (pickled, ErrorKind.UNSUPPORTED, "style.pt is a pickled checkpoint. Atelier never loads pickled weights "
                                         "(.bin/.ckpt) because they can run code; use a .safetensors version."),
        (upscaler, ErrorKind.UNSUPPORTED, "x4.safetensors is not a LoRA: it holds no LoRA tensors (kohya, diffusers "
                                          "or PEFT layout)."),
        (tmp_path / "gone.safetensors", ErrorKind.BAD_INPUT, f"The LoRA {tmp_path / 'gone.safetensors'} does not exist."),
    ]
    for path, kind, message in cases:
        with pytest.raises(EngineError) as caught:
            make(engine, LoraSpec(str(path), 1.0))
        assert (caught.value.kind, caught.value.message) == (kind, message)
    with pytest.raises(EngineError) as caught:
        make(engine, LoraSpec(str(damaged), 1.0))
    assert caught.value.kind == ErrorKind.MODEL_FILE
    assert caught.value.message.startswith("The LoRA cut.safetensors could not be read as a .safetensors file (")


def test_fused_loras_are_packed_by_the_cpu_speedups_with_the_same_image(tiny_sd, loras):  # noqa: F811
    from engines.diffusion.cpu_speedups import PackedLinear, onednn_packing_available_for
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    if not onednn_packing_available_for("fp32"):
        pytest.skip("this PyTorch build cannot pack weights for oneDNN")
    images = {}
    for speedups in (False, True):
        made = TorchDiffusionEngine()
        made.load(ImageLoadSpec(str(tiny_sd), backend="torch", dtype="fp32", cpu_speedups=speedups), lambda e: None)
        images[speedups] = pixels(make(made, LoraSpec(str(loras["peft"]), 1.0)))
        to_k = made.pipeline.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_k
        assert isinstance(to_k, PackedLinear) is speedups  # the LoRA-touched layer is packed like the others
        made.unload()
    assert np.abs(images[True] - images[False]).max() <= 2


def test_onnx_runtime_refuses_loras_in_words_and_still_runs_without_them(tiny_sd_onnx, loras):  # noqa: F811
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    made = OnnxDiffusionEngine()
    made.load(ImageLoadSpec(str(tiny_sd_onnx), backend="onnx"), lambda event: None)
    with pytest.raises(EngineError) as caught:
        make(made, LoraSpec(str(loras["peft"]), 1.0))
    assert (caught.value.kind, caught.value.message) == (
        ErrorKind.UNSUPPORTED, "LoRAs run on the PyTorch backend only; choose the 'torch' (or 'auto') backend for "
                               "this model, or leave the LoRAs out.")
    assert make(made, LoraSpec(str(loras["peft"]), 0.0)).width == 64  # weight 0 changes nothing: it runs
    made.unload()


def test_auto_moves_a_model_from_onnx_runtime_to_pytorch_for_loras(tiny_sd, tiny_sd_onnx, loras, monkeypatch):  # noqa: F811
    """Where "auto" picks the ONNX copy beside a diffusers folder (a CPU without native bf16), LoRAs still run."""
    from engines.api import NoticeEvent
    from engines.diffusion import engine as module

    monkeypatch.setattr(module, "choose_backend", lambda folder, spec: "onnx" if spec.backend == "auto" else "torch")
    monkeypatch.setattr(module, "onnx_copy_of", lambda path: tiny_sd_onnx)
    made = module.DiffusionEngine()
    made.load(ImageLoadSpec(str(tiny_sd)), lambda event: None)
    assert made.backend == "onnx"
    events = []
    request = ImageRequest("a lighthouse", width=64, height=64, steps=2, seed=5, preview_every=0,
                           loras=(LoraSpec(str(loras["peft"]), 1.0),))
    result = made.generate(request, events.append)
    assert (made.backend, result.backend) == ("torch", "torch")
    assert [e.message for e in events if isinstance(e, NoticeEvent)][0] == (
        "LoRAs run on PyTorch only, so the model moved from ONNX Runtime to PyTorch for them.")
    assert result.images[0].parameters.splitlines()[0] == "a lighthouse <lora:ink-peft:1>"
    made.unload()
