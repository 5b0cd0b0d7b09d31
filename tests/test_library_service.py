"""The model library service: verdicts, pull rules, registration and removal."""

import json

import pytest

from engines.errors import EngineError
from engines.library.catalog import load_catalog
from engines.library.hardware import CpuInfo, HardwareReport, MemoryInfo
from engines.library.service import ModelLibrary
from engines.workspace import open_workspace
from tests.fixtures.http_server import sha256


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


def wait_done(library, job, timeout=30):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = library.queue().get(job.id)
        if current.finished:
            return current
        time.sleep(0.05)
    raise AssertionError("download did not finish")


def test_every_shipped_catalog_entry_gets_a_verdict():
    library = ModelLibrary(open_workspace())
    assert library.catalog.error is None and len(library.catalog.entries) >= 20
    for entry in library.catalog.entries:
        verdict = library.verdict_for_entry(entry)
        assert verdict.label and "=" in verdict.explanation


def test_pull_from_the_hub_installs_registers_and_removes(tmp_path, http_server, monkeypatch, tiny_gguf):
    data = tiny_gguf.read_bytes()
    http_server.add("/atelier-test/tiny-llama-GGUF/resolve/main/tiny-llama.gguf", data, linked=True)
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    library = ModelLibrary(open_workspace(), catalog=tiny_catalog(tmp_path, data))
    try:
        job = wait_done(library, library.pull("tiny-llama-test"))
        assert job.state == "completed", job.error
        model = library.models.get("tiny-llama-test")
        assert model is not None and model.source == "download"
        assert sha256(open(model.path, "rb").read()) == sha256(data)
        assert library.verdict_for_installed(model).verdict == "cpu_only"
        assert "deleted" in library.remove("tiny-llama-test")
        assert not (library.workspace.paths.models / "tiny-llama.gguf").exists()
    finally:
        library.shutdown()


def test_a_model_that_wont_fit_needs_anyway(tmp_path, monkeypatch, tiny_gguf):
    data = tiny_gguf.read_bytes()
    library = ModelLibrary(open_workspace(), catalog=tiny_catalog(tmp_path, data, size=50 * 10**9))
    small = HardwareReport("Linux", "3.11", CpuInfo("cpu", "x86_64", 2, 2, []), MemoryInfo(8 * 2**30, 4 * 2**30), [], None)
    monkeypatch.setattr(library, "hardware", lambda refresh=False: small)
    monkeypatch.setattr("engines.library.service.check_disk_space", lambda *a, **k: None)
    with pytest.raises(EngineError) as info:
        library.pull("tiny-llama-test")
    assert info.value.kind == "wont_fit" and "anyway" in info.value.message
    library.shutdown()


def test_a_download_bigger_than_the_disk_is_refused_up_front(tmp_path, tiny_gguf):
    library = ModelLibrary(open_workspace(), catalog=tiny_catalog(tmp_path, tiny_gguf.read_bytes(), size=10**15))
    with pytest.raises(EngineError) as info:
        library.pull("tiny-llama-test", anyway=True)
    assert info.value.kind == "disk_full"
    assert library.queue().jobs() == []
    library.shutdown()


def test_hand_dropped_files_are_found_or_explained(tiny_gguf):
    workspace = open_workspace()
    (workspace.paths.models / "dropped.gguf").write_bytes(tiny_gguf.read_bytes())
    (workspace.paths.models / "notes.txt").write_text("hello")
    library = ModelLibrary(workspace)
    unknown = library.scan_models_folder()
    assert any(m.path.endswith("dropped.gguf") and m.source == "folder" for m in library.models.all())
    assert [u.reason for u in unknown if u.path.endswith("notes.txt")]


def test_removing_an_imported_model_keeps_the_users_file(tiny_gguf):
    from engines.library.importer import import_gguf

    library = ModelLibrary(open_workspace())
    model = import_gguf(tiny_gguf, library.models)
    message = library.remove(model.id)
    assert "stays where it is" in message and tiny_gguf.exists()
