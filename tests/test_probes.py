"""The probe registry on weight-stripped files: each format recognised, everything else explained.

Every file here is written by tests/fixtures (stripped_models.py, tiny_gguf.py)
in milliseconds; nothing is downloaded and no engine runs.
"""

from __future__ import annotations

import os
import threading

import pytest

from engines.library.probes import PROBES, NotAMatch, Probe, ProbedModel, clean_name, identify, register
from tests.fixtures import stripped_models as stripped
from tests.fixtures.tiny_gguf import truncate_file, write_bad_magic, write_tiny_llama_gguf

# ---- GGUF -----------------------------------------------------------------------------


def test_a_llama_gguf_is_a_chat_model_for_llama_cpp(tiny_gguf):
    found = identify(tiny_gguf)
    assert (found.kind, found.format, found.engine) == ("chat", "gguf", "llama_cpp")
    assert found.name == "Tiny Test Llama F32" and found.architecture == "llama" and found.quantization == "F32"
    assert found.path == str(tiny_gguf) and found.size_bytes == tiny_gguf.stat().st_size
    assert found.context_length == 512 and found.reason == "" and found.runnable
    assert found.gguf_header.block_count == 2  # the header rides along for the fit check


@pytest.mark.parametrize("writer, architecture, pooling", [
    (stripped.write_bert_embedding, "bert", 1),
    (stripped.write_pooled_decoder_embedding, "qwen3", 3),
])
def test_embedding_ggufs_are_told_from_chat_models(tmp_path, writer, architecture, pooling):
    found = identify(writer(tmp_path / "embed.gguf"))
    assert (found.kind, found.engine, found.architecture) == ("embedding", "llama_cpp", architecture)
    assert found.details == {"pooling_type": pooling}
    assert found.description == f"{architecture} embedding model"


def test_a_gguf_lora_adapter_is_a_lora_no_engine_runs(tmp_path):
    found = identify(stripped.write_gguf_lora_adapter(tmp_path / "adapter.gguf"))
    assert (found.kind, found.format, found.engine, found.base) == ("lora", "gguf", None, "llama")
    assert found.details == {"layout": "gguf", "alpha": 16.0} and not found.runnable


def test_a_vision_projector_is_not_a_model_on_its_own(tmp_path):
    found = identify(stripped.write_mmproj(tmp_path / "mmproj-f16.gguf"))
    assert (found.kind, found.format, found.engine) == ("projector", "gguf", None) and not found.runnable
    assert found.description == ("vision projector (mmproj, clip): the image half of a multimodal model, "
                                 "used beside its model")


def test_terminal_escapes_in_general_name_never_reach_the_record(tmp_path):
    evil = "Evil\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mRED\x1b[0m\r\nfake line\u202e"
    found = identify(stripped.write_gguf(tmp_path / "evil.gguf", "llama", name=evil))
    assert found.kind == "chat" and found.name == "Evil RED fake line"
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in found.name)


def test_names_are_cleaned_and_bounded():
    assert clean_name("a\tb\n\nc\x00d") == "a b c d"
    assert clean_name("\x1b[2J\x07", fallback="x.gguf") == "x.gguf"
    long = clean_name("n" * 500)
    assert len(long) == 200 and long.endswith("…")


@pytest.mark.parametrize("damage, reason", [
    (lambda p: truncate_file(p, 100), "tiny.gguf is incomplete."),
    (lambda p: write_bad_magic(p, b"<!DOCTYPE html><html>"), "tiny.gguf: This is not a GGUF model file "
                                                           "(it starts with b'<!DO'). It looks like a web page"),
    (lambda p: p.write_bytes(b""), "tiny.gguf: This is not a GGUF model file: it is empty."),
])
def test_a_damaged_gguf_is_unknown_with_the_pre_flight_sentence(tmp_path, damage, reason):
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    damage(path)
    found = identify(path)
    assert found.kind == "unknown" and found.engine is None and found.format == "gguf"
    assert found.reason.startswith(reason), found.reason


# ---- image folders ---------------------------------------------------------------------


@pytest.mark.parametrize("base, label, native", [
    ("sd1", "Stable Diffusion 1.x", 512), ("sd2", "Stable Diffusion 2.x", 768), ("sdxl", "SDXL", 1024)])
def test_diffusers_folders_with_their_base_family(tmp_path, base, label, native):
    folder = stripped.write_diffusers_folder(tmp_path / f"my-{base}", base)
    found = identify(folder)
    assert (found.kind, found.format, found.engine, found.base) == ("image", "diffusers", "diffusers", base)
    assert found.description == f"{label} image model (diffusers)" and found.name == f"my-{base}"
    assert found.details["native_size"] == native
    assert found.size_bytes == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("base, label", [("sd1", "Stable Diffusion 1.x"), ("sdxl", "SDXL")])
def test_onnx_folders(tmp_path, base, label):
    found = identify(stripped.write_onnx_folder(tmp_path / "onnx", base))
    assert (found.kind, found.format, found.engine, found.base) == ("image", "onnx", "diffusers", base)
    assert found.description == f"{label} image model (ONNX Runtime)"


def test_an_image_folder_that_is_not_usable_says_why(tmp_path):
    folder = stripped.write_diffusers_folder(tmp_path / "half", "sd1")
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    found = identify(folder)
    assert found.kind == "unknown" and found.format == "folder"
    assert found.reason == f"{folder / 'unet'} has no weights file (*.safetensors). Copy the complete model folder."
    plain = tmp_path / "holiday-photos"
    plain.mkdir()
    (plain / "a.txt").write_text("hi")
    assert identify(plain).reason == f"{plain} is not a diffusers model folder: it has no model_index.json."


# ---- LoRAs and upscalers ------------------------------------------------------------

@pytest.mark.parametrize("writer, layout", [
    (stripped.write_kohya_lora, "kohya"), (stripped.write_peft_lora, "peft"),
    (stripped.write_old_diffusers_lora, "diffusers")])
@pytest.mark.parametrize("base, label", [("sd1", "SD 1.x"), ("sd2", "SD 2.x"), ("sdxl", "SDXL")])
def test_loras_with_their_layout_and_base(tmp_path, writer, layout, base, label):
    found = identify(writer(tmp_path / "style.safetensors", base))
    assert (found.kind, found.format, found.engine, found.base) == ("lora", "safetensors", "diffusers", base)
    assert found.description == f"LoRA for {label} ({layout} layout)"
    assert found.details["layout"] == layout and found.details["rank"] in (4, 8)


def test_a_kohya_lora_takes_its_name_from_its_metadata(tmp_path):
    found = identify(stripped.write_kohya_lora(tmp_path / "x.safetensors", "sd1"))
    assert found.name == "kohya sd1 style"


@pytest.mark.parametrize("layout, scale", [("basicsr", 4), ("basicsr", 2), ("esrgan", 4), ("esrgan", 2)])
def test_esrgan_upscalers_with_their_scale(tmp_path, layout, scale):
    found = identify(stripped.write_esrgan(tmp_path / f"RealESRGAN_x{scale}.safetensors", layout, scale))
    assert (found.kind, found.format, found.engine, found.architecture) == ("upscaler", "safetensors", "esrgan",
                                                                            "RRDBNet")
    assert found.details == {"scale": scale, "layout": layout, "blocks": 3}
    assert found.description == f"ESRGAN {scale}× upscaler (RRDBNet, 3 blocks)"


# ---- everything else ---------------------------------------------------------------------


def test_a_single_file_checkpoint_is_explained(tmp_path):
    found = identify(stripped.write_sd_checkpoint(tmp_path / "v1-5-pruned.safetensors"))
    assert found.kind == "unknown" and found.format == "safetensors"
    assert found.reason.startswith("v1-5-pruned.safetensors is a single-file Stable Diffusion checkpoint.")


def test_unrecognised_safetensors_and_pickles(tmp_path):
    other = identify(stripped.write_safetensors(tmp_path / "bert.safetensors", {"encoder.layer.0.weight": (1,)}))
    assert other.reason.startswith("bert.safetensors holds weights Atelier does not recognise (not a LoRA or an "
                                   "upscaler).")
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"PK\x03\x04 zip")
    assert identify(pickle).reason.startswith("model.ckpt is a pickled checkpoint. Atelier never loads pickled weights")


def test_a_truncated_safetensors_is_recognised_as_damaged(tmp_path):
    path = stripped.write_kohya_lora(tmp_path / "cut.safetensors", "sd1")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    found = identify(path)
    assert found.kind == "unknown" and found.reason.startswith("cut.safetensors is truncated: it should be ")


def test_a_text_file_and_a_web_page(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello world")
    assert identify(notes).reason == ("notes.txt is not a GGUF file or a diffusers/ONNX model folder "
                                      "(it starts with b'hell').")
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    assert identify(empty).reason == "empty.dat is not a GGUF file or a diffusers/ONNX model folder: it is empty."
    page = tmp_path / "model"
    page.write_text("<html><body>404</body></html>")
    assert "It looks like a web page or XML, not a model: the download probably failed." in identify(page).reason


def test_missing_paths_and_symlink_loops_are_unknown_not_errors(tmp_path):
    assert identify(tmp_path / "nope.gguf").reason == f"{tmp_path / 'nope.gguf'} does not exist."
    (tmp_path / "a.gguf").symlink_to(tmp_path / "b.gguf")
    (tmp_path / "b.gguf").symlink_to(tmp_path / "a.gguf")
    loop = identify(tmp_path / "a.gguf")
    assert loop.kind == "unknown" and loop.reason == "a.gguf is a symbolic link loop (it points back to itself)."
    (tmp_path / "dangling.gguf").symlink_to(tmp_path / "gone.gguf")
    assert identify(tmp_path / "dangling.gguf").reason == "dangling.gguf is a symbolic link to something that does not exist."


def test_a_fifo_named_gguf_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)
    result: list[ProbedModel] = []
    worker = threading.Thread(target=lambda: result.append(identify(fifo)), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a safety net for the test run only: a blocked open() would hang for ever
    if not result:  # unblock the reader so the test process can exit, then fail
        with open(fifo, "wb"):
            pass
    assert result and result[0].kind == "unknown"
    assert result[0].reason == "x.gguf is not a regular file (it is a FIFO (named pipe))."


def test_a_fifo_inside_a_model_folder_is_never_opened(tmp_path):
    folder = stripped.write_diffusers_folder(tmp_path / "sd", "sd1")
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.unlink()
    os.mkfifo(weights)
    found = identify(folder)
    assert found.kind == "unknown"
    assert found.reason == f"sd holds files that are not regular files: unet/{weights.name} (a FIFO (named pipe))."


# ---- the registry itself -------------------------------------------------------------


def test_one_probe_per_kind_and_format():
    assert [(p.kind, p.format) for p in PROBES] == [
        ("chat", "gguf"), ("embedding", "gguf"), ("lora", "gguf"), ("vae", "diffusers"), ("image", "diffusers"),
        ("image", "onnx"), ("lora", "safetensors"), ("upscaler", "safetensors"), ("projector", "gguf")]

    class Twice(Probe):
        kind, format = "chat", "gguf"

    with pytest.raises(ValueError, match="a probe for chat/gguf is already registered: GGUFChatProbe"):
        register(Twice)


def test_a_probe_that_crashes_is_not_a_match_and_the_rest_still_run(tmp_path, monkeypatch, caplog):
    class Broken(Probe):
        kind, format = "broken", "any"

        @classmethod
        def probe(cls, candidate):
            raise ZeroDivisionError("a bug")

    monkeypatch.setattr("engines.library.probes.registry.PROBES", [Broken, *PROBES])
    found = identify(stripped.write_kohya_lora(tmp_path / "l.safetensors", "sd1"))
    assert found.kind == "lora"
    assert "probe Broken failed on" in caplog.text


def test_not_a_match_carries_whether_the_format_was_recognised():
    assert NotAMatch("x").recognised is False and NotAMatch("y", recognised=True).recognised is True
