"""The model library service: verdicts, pull rules, registration and removal."""

import json
import os

import pytest

from engines.errors import EngineError
from engines.library.catalog import load_catalog
from engines.machine.hardware import CpuInfo, HardwareReport, MemoryInfo
from engines.workspace import open_workspace
from tests.fixtures.http_server import sha256
from tests.fixtures.waits import wait_until


def tiny_catalog(tmp_path, gguf_bytes: bytes, size: int | None = None) -> object:
    entry = {
        "id": "tiny-llama-test", "name": "Tiny Llama (test)", "family": "Tiny", "kind": "chat",
        "engine": "llama_cpp", "format": "gguf", "repo": "atelier-test/tiny-llama-GGUF",
        "files": [{"path": "tiny-llama.gguf", "size": size or len(gguf_bytes)}],
        "license": "apache-2.0", "gated": False, "parameters": 100000, "quantization": "F32",
        "context_length": 512, "description": "A random-weight model for tests.",
        "arch": {"architecture": "llama", "block_count": 2, "embedding_length": 64, "head_count": 4,
                 "head_count_kv": 2, "key_length": 16, "value_length": 16, "vocab_size": 300},
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    return load_catalog(path)


def wait_done(library, job):
    wait_until(lambda: library.queue().get(job.id).finished, f"the download {job.id} finished")
    return library.queue().get(job.id)


def test_every_shipped_catalog_entry_gets_a_verdict():
    library = open_workspace().library()
    assert library.catalog.error is None and len(library.catalog.entries) >= 20
    for entry in library.catalog.entries:
        verdict = library.verdict_for_entry(entry)
        assert verdict.label and "=" in verdict.explanation


def test_pull_from_the_hub_installs_registers_and_removes(tmp_path, http_server, monkeypatch, tiny_gguf):
    data = tiny_gguf.read_bytes()
    http_server.add("/atelier-test/tiny-llama-GGUF/resolve/main/tiny-llama.gguf", data, linked=True)
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    library = open_workspace().library(catalog=tiny_catalog(tmp_path, data))
    try:
        job = wait_done(library, library.pull("tiny-llama-test"))
        assert job.state == "completed", job.error
        model = library.models.get("tiny-llama-test")
        assert model is not None and model.source == "download"
        assert sha256(open(model.path, "rb").read()) == sha256(data)
        assert library.verdict_for_installed(model).verdict == "cpu_only"
        assert "deleted" in library.remove("tiny-llama-test")
        assert not (library.paths.models / "tiny-llama.gguf").exists()
    finally:
        library.shutdown()


def test_a_model_that_wont_fit_needs_anyway(tmp_path, monkeypatch, tiny_gguf):
    data = tiny_gguf.read_bytes()
    library = open_workspace().library(catalog=tiny_catalog(tmp_path, data, size=50 * 10**9))
    small = HardwareReport("Linux", "3.11", CpuInfo("cpu", "x86_64", 2, 2, []), MemoryInfo(8 * 2**30, 4 * 2**30), [], None)
    monkeypatch.setattr(library, "hardware", lambda refresh=False: small)
    monkeypatch.setattr("engines.library.service.check_disk_space", lambda *a, **k: None)
    with pytest.raises(EngineError) as info:
        library.pull("tiny-llama-test")
    assert info.value.kind == "wont_fit" and info.value.message == (
        "Tiny Llama (test) won't fit on this machine: 50.0 GB weights + 0.00 GB context cache (f16) at 512 tokens + "
        "0.08 GB buffers = 50.1 GB; you have 4.3 GB free memory and no supported GPU, and 0.86 GB is kept free for "
        "the system. A smaller quantization or a smaller model would need less memory. Download it anyway if you "
        "know better.")
    library.shutdown()


def test_a_download_bigger_than_the_disk_is_refused_up_front(tmp_path, tiny_gguf):
    library = open_workspace().library(catalog=tiny_catalog(tmp_path, tiny_gguf.read_bytes(), size=10**15))
    with pytest.raises(EngineError) as info:
        library.pull("tiny-llama-test", anyway=True)
    assert info.value.kind == "disk_full"
    assert library.queue().jobs() == []
    library.shutdown()


def test_hand_dropped_files_are_found_or_explained(tiny_gguf):
    workspace = open_workspace()
    (workspace.paths.models / "dropped.gguf").write_bytes(tiny_gguf.read_bytes())
    (workspace.paths.models / "notes.txt").write_text("hello")
    library = workspace.library()
    unknown = library.scan_models_folder()
    assert any(m.path.endswith("dropped.gguf") and m.source == "folder" for m in library.models.all())
    assert [u.reason for u in unknown if u.path.endswith("notes.txt")]


def test_removing_an_imported_model_keeps_the_users_file(tiny_gguf):
    from engines.library.importer import import_model

    library = open_workspace().library()
    model = import_model(tiny_gguf, library.models)
    message = library.remove(model.id)
    assert "stays where it is" in message and tiny_gguf.exists()


# ---- every way in goes through the probe registry ------------------------------------------


def test_the_models_folder_scan_registers_by_kind_and_explains_the_rest(tmp_path):
    from tests.fixtures import stripped_models as stripped

    workspace = open_workspace()
    models = workspace.paths.models
    stripped.write_diffusers_folder(models / "my-sdxl", "sdxl")
    stripped.write_bert_embedding(models / "minilm.gguf")
    stripped.write_kohya_lora(models / "style.safetensors", "sdxl")
    (models / "a.gguf").symlink_to(models / "b.gguf")  # D24: a symbolic-link loop must not break the scan
    (models / "b.gguf").symlink_to(models / "a.gguf")
    library = workspace.library()
    unknown = {os.path.basename(u.path): u.reason for u in library.scan_models_folder()}
    assert unknown == {
        "a.gguf": "a.gguf is a symbolic link loop (it points back to itself).",
        "b.gguf": "b.gguf is a symbolic link loop (it points back to itself).",
    }
    image = library.models.get("folder/my-sdxl")
    assert (image.kind, image.format, image.engine, image.base, image.source) == (
        "image", "diffusers", "diffusers", "sdxl", "folder")
    assert image.description == "SDXL image model (diffusers), found in the models folder"
    embedding = library.models.get("folder/minilm")
    assert (embedding.kind, embedding.engine, embedding.name) == ("embedding", "llama_cpp", "all-MiniLM-L6-v2")
    lora = library.models.get("folder/style.safetensors")
    assert (lora.kind, lora.engine, lora.base) == ("lora", "diffusers", "sdxl")
    assert lora.description.startswith("LoRA for SDXL (kohya layout), found in the models folder")
    assert library.scan_models_folder() and len(library.models.all()) == 4  # the demo, plus three; nothing twice
    assert [m.id for m in library.models.runnable("image")] == ["folder/my-sdxl"]
    assert "folder/minilm" not in [m.id for m in library.models.runnable("chat")]


def test_import_takes_a_gguf_or_an_image_folder_and_refuses_the_rest(tmp_path, tiny_gguf):
    from engines.library.importer import import_model
    from tests.fixtures import stripped_models as stripped

    store = open_workspace().models
    chat = import_model(tiny_gguf, store)
    assert (chat.id, chat.kind, chat.source, chat.name) == ("local/tiny-llama", "chat", "import", "Tiny Test Llama F32")
    assert chat.description == f"Llama chat model, added from {tiny_gguf.parent}"
    assert import_model(str(tiny_gguf), store) == chat  # the same file twice keeps one record
    onnx = import_model(stripped.write_onnx_folder(tmp_path / "turbo-onnx", "sd1"), store)
    assert (onnx.id, onnx.kind, onnx.format, onnx.engine) == ("local/turbo-onnx", "image", "onnx", "diffusers")
    lora = import_model(stripped.write_peft_lora(tmp_path / "x.safetensors", "sd1"), store)
    assert (lora.id, lora.kind, lora.engine, lora.base) == ("local/x.safetensors", "lora", "diffusers", "sd1")
    assert lora.description == f"LoRA for SD 1.x (peft layout), added from {tmp_path}"
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    with pytest.raises(EngineError) as pipe:
        import_model(fifo, store)
    assert pipe.value.message == "pipe.gguf is not a regular file (it is a FIFO (named pipe))."
    assert {m.id for m in store.runnable("chat")} >= {"local/tiny-llama"}
    assert [m.id for m in store.runnable("image")] == ["local/turbo-onnx"]


def test_register_path_is_what_a_finished_download_uses(tmp_path):
    from tests.fixtures import stripped_models as stripped

    library = open_workspace().library()
    folder = stripped.write_diffusers_folder(library.paths.models / "sd-x", "sd2")
    model = library.register_path(folder, "download", "hf/sd-x", "SD X")
    assert (model.id, model.name, model.kind, model.base, model.source) == ("hf/sd-x", "SD X", "image", "sd2", "download")
    page = library.paths.models / "model.gguf"
    page.write_text("<!DOCTYPE html><html>Not found</html>")
    with pytest.raises(EngineError) as info:
        library.register_path(page, "download", "url/model.gguf")
    assert info.value.message.startswith("model.gguf: This is not a GGUF model file (it starts with b'<!DO'). "
                                         "It looks like a web page")
    assert library.models.get("url/model.gguf") is None


def test_verdict_for_a_path_follows_what_the_probe_found(tmp_path, tiny_gguf):
    from tests.fixtures import stripped_models as stripped

    library = open_workspace().library()
    assert library.verdict_for_file(tiny_gguf).verdict == "cpu_only"
    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)
    with pytest.raises(EngineError, match=r"^x.gguf is not a regular file \(it is a FIFO \(named pipe\)\).$"):
        library.verdict_for_file(fifo)
    upscaler = library.verdict_for_file(stripped.write_esrgan(tmp_path / "up.safetensors"))
    assert upscaler.verdict in ("cpu_only", "gpu_full")  # an upscaler's verdict: a 1024-pixel image at its scale
    assert "for the 4096×4096 result" in upscaler.explanation
    assert upscaler.explanation.split("; ")[0].endswith(" to upscale a 1024×1024 image")


# ---- one resolver for --model and ids ---------------------------------------------------


def test_the_resolver_takes_ids_prefixes_paths_and_catalog_ids(tmp_path, tiny_gguf):
    from engines.library.importer import import_model
    from engines.library.resolve import resolve_model
    from tests.fixtures import stripped_models as stripped

    workspace = open_workspace()
    store = workspace.models
    chat = import_model(tiny_gguf, store)
    image = import_model(stripped.write_diffusers_folder(tmp_path / "tiny-dream", "sd1"), store)
    catalog = load_catalog()
    assert resolve_model("local/tiny-llama", store, catalog).installed == chat
    assert resolve_model("demo", store, catalog).installed.id == "demo/gemma-3-270m-q4_k_m"
    assert resolve_model("tiny-d", store, catalog).installed == image  # a prefix of the id's last part
    assert resolve_model(str(tiny_gguf), store, catalog).installed == chat  # an installed model's path
    other = write_tiny_llama_gguf_copy(tiny_gguf, tmp_path / "other.gguf")
    assert resolve_model(str(other), store, catalog).path == other and resolve_model(str(other), store).installed is None
    entry = resolve_model("qwen2.5-1.5b-instruct-q4_k_m", store, catalog)
    assert entry.entry.id == "qwen2.5-1.5b-instruct-q4_k_m" and entry.installed is None
    with pytest.raises(EngineError) as not_downloaded:
        entry.local_path()
    assert not_downloaded.value.message == (
        f"{entry.entry.name} is in the catalog but not downloaded yet. "
        "Get it with 'atelier models pull qwen2.5-1.5b-instruct-q4_k_m'.")
    with pytest.raises(EngineError) as ambiguous:
        resolve_model("local", store, catalog)
    assert ambiguous.value.message == ("'local' matches 2 installed models: local/tiny-llama, local/tiny-dream. "
                                       "Give more of the id.")
    assert resolve_model("local", store, catalog, kind="image").installed == image  # the command's kind decides
    with pytest.raises(EngineError) as unknown:
        resolve_model("tiny-lama", store, catalog)
    assert unknown.value.message == "No installed model, catalog model or file is called 'tiny-lama'. " \
                                    "Did you mean local/tiny-llama, local/tiny-dream?"
    with pytest.raises(EngineError) as wrong_kind:
        resolve_model("local/tiny-dream", store, catalog, kind="chat")
    assert wrong_kind.value.message == "'local/tiny-dream' is an image model, but this needs a chat model."
    with pytest.raises(EngineError) as missing:
        resolve_model("/nonexistent/model.gguf", store, catalog)
    assert missing.value.message == "The model file or folder does not exist: /nonexistent/model.gguf."


def write_tiny_llama_gguf_copy(source, target):
    target.write_bytes(source.read_bytes())
    return target
