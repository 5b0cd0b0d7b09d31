"""A vision model in the library: the catalog's projector, downloaded with its model, and counted by the fit."""

import json

import pytest

from engines.library.catalog import load_catalog
from engines.library.probes.projector import find_projector
from engines.machine.fit import ProjectorShape, estimate_text
from engines.workspace import open_workspace
from tests.fixtures.tiny_vlm import tiny_vlm  # noqa: F401  (session fixture)
from tests.fixtures.waits import wait_until


def vlm_entry(model_size: int, projector_size: int, **changes) -> dict:
    entry = {
        "id": "tiny-vlm-test", "name": "Tiny VLM (test)", "family": "Tiny", "kind": "chat",
        "engine": "llama_cpp", "format": "gguf", "repo": "atelier-test/tiny-vlm-GGUF",
        "files": [{"path": "tiny-vlm-f32.gguf", "size": model_size},
                  {"path": "mmproj-tiny-vlm-f32.gguf", "size": projector_size}],
        "projector": "mmproj-tiny-vlm-f32.gguf",
        "license": "apache-2.0", "gated": False, "parameters": 100000, "quantization": "F32",
        "context_length": 4096, "description": "A random-weight vision model for tests.",
        "arch": {"architecture": "gemma3", "block_count": 2, "embedding_length": 64, "head_count": 4,
                 "head_count_kv": 2, "key_length": 16, "value_length": 16, "vocab_size": 500},
    }
    entry.update(changes)
    return entry


def write_catalog(tmp_path, *entries):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "entries": list(entries)}))
    return load_catalog(path)


def test_the_shipped_vision_entries_bring_their_projector():
    catalog = load_catalog()
    vision = [e for e in catalog.entries if e.projector]
    assert {e.id for e in vision} >= {"gemma-3-4b-it-q4_k_m", "gemma-3-4b-it-q8_0"}
    for entry in vision:
        assert entry.projector_file.path == "mmproj-model-f16.gguf" and entry.main_file.path.startswith("gemma-3-4b")
        assert entry.model_size + entry.projector_file.size == entry.total_size
        assert "vision" in entry.tags


def test_a_projector_must_be_one_of_the_entrys_files(tmp_path):
    catalog = write_catalog(tmp_path, vlm_entry(10, 5, projector="mmproj-elsewhere.gguf"))
    assert catalog.error.endswith("entry 1 ('tiny-vlm-test'), entry: 'projector' must name one of the files, "
                                  "after the model's own.")


def test_the_catalog_verdict_counts_the_projector():
    library = open_workspace().library()
    entry = library.catalog.get("gemma-3-4b-it-q4_k_m")
    verdict = library.verdict_for_entry(entry, context_length=4096)
    projector = ProjectorShape.from_file_size(851_000_000)
    assert verdict.need.projector_bytes == projector.weights_bytes + projector.encode_bytes
    assert verdict.need.weights_bytes == entry.total_size
    assert "GB weights (with 1.7 GB for the vision projector)" in verdict.explanation


def test_a_vision_files_verdict_counts_its_projector_and_the_image_encode(tiny_vlm, tmp_path):  # noqa: F811
    import shutil

    from engines.gguf.model_file import check_model_file

    folder = tmp_path / "vlm"
    folder.mkdir()
    model = shutil.copy(tiny_vlm.model, folder / "tiny-vlm-f32.gguf")
    library = open_workspace().library()
    alone = library.verdict_for_file(model, context_length=512)
    assert alone.need.projector_bytes == 0
    shutil.copy(tiny_vlm.projector, folder / "mmproj-tiny-vlm-f32.gguf")
    paired = library.verdict_for_file(model, context_length=512)
    header = check_model_file(folder / "mmproj-tiny-vlm-f32.gguf")
    patches = (224 // 14) ** 2  # the tiny SigLIP: 224 px images in 14 px patches, 2 heads, 32 wide
    encode = patches * patches * 2 * 4 + patches * 32 * 4 * 8
    assert paired.need.projector_bytes == header.tensor_data_bytes + encode
    assert paired.need.total_bytes == alone.need.total_bytes + header.tensor_data_bytes + encode


def test_estimate_without_a_projector_is_unchanged():
    from engines.machine.fit import ModelShape

    shape = ModelShape(1000, 2, 64, 256, 4, (2, 2), 16, 16, 500)
    assert estimate_text(shape, 512).projector_bytes == 0
    assert "vision projector" not in estimate_text(shape, 512).sentence()


@pytest.mark.slow
def test_pulling_a_vision_model_downloads_its_projector_beside_it(tmp_path, http_server, monkeypatch, tiny_vlm):  # noqa: F811
    model_bytes, projector_bytes = tiny_vlm.model.read_bytes(), tiny_vlm.projector.read_bytes()
    base = "/atelier-test/tiny-vlm-GGUF/resolve/main/"
    http_server.add(base + "tiny-vlm-f32.gguf", model_bytes, linked=True)
    http_server.add(base + "mmproj-tiny-vlm-f32.gguf", projector_bytes, linked=True)
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    catalog = write_catalog(tmp_path, vlm_entry(len(model_bytes), len(projector_bytes)))
    library = open_workspace().library(catalog=catalog)
    try:
        job = library.pull("tiny-vlm-test")
        wait_until(lambda: library.queue().get(job.id).finished, "the download finished")
        assert library.queue().get(job.id).state == "completed", library.queue().get(job.id).error
        model = library.models.get("tiny-vlm-test")
        assert model is not None and model.kind == "chat"
        assert model.path == str(library.paths.models / "tiny-vlm-test" / "tiny-vlm-f32.gguf")
        assert find_projector(model.path) == library.paths.models / "tiny-vlm-test" / "mmproj-tiny-vlm-f32.gguf"
        assert library.verdict_for_installed(model).need.projector_bytes > 0
    finally:
        library.shutdown()


@pytest.mark.slow
def test_a_projector_that_is_no_projector_installs_nothing(tmp_path, http_server, monkeypatch, tiny_vlm):  # noqa: F811
    model_bytes, page = tiny_vlm.model.read_bytes(), b"<!doctype html><html><body>Sign in</body></html>"
    base = "/atelier-test/tiny-vlm-GGUF/resolve/main/"
    http_server.add(base + "tiny-vlm-f32.gguf", model_bytes, linked=True)
    http_server.add(base + "mmproj-tiny-vlm-f32.gguf", page, linked=True)
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    catalog = write_catalog(tmp_path, vlm_entry(len(model_bytes), len(page)))
    library = open_workspace().library(catalog=catalog)
    try:
        job = library.pull("tiny-vlm-test")
        wait_until(lambda: library.queue().get(job.id).finished, "the download finished")
        done = library.queue().get(job.id)
        assert done.state == "failed"
        assert done.error.startswith("The download of Tiny VLM (test) brought mmproj-tiny-vlm-f32.gguf, which is not "
                                     "a vision projector: ")
        assert done.error.endswith(". Nothing was installed.")
        assert library.models.get("tiny-vlm-test") is None
    finally:
        library.shutdown()
