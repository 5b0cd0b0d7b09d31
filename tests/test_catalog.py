"""The curated catalog: the shipped file is sound, a broken file never crashes."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from engines.library.catalog import (
    ERROR_PREFIX,
    Catalog,
    CatalogEntry,
    default_catalog_path,
    load_catalog,
)


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return load_catalog()


@pytest.fixture
def raw() -> dict:
    return json.loads(default_catalog_path().read_text(encoding="utf-8"))


def write(tmp_path, document, name="catalog.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the shipped file


def test_shipped_catalog_loads_with_enough_models(shipped):
    assert shipped.error is None
    assert len(shipped.entries) >= 20
    assert len(shipped.chat()) >= 14
    images = shipped.images()
    assert len(images) >= 4
    assert any(e.format == "onnx" and e.engine == "onnx" for e in images)
    assert {e.image.base for e in images} >= {"sd15", "sd-turbo", "sdxl-turbo"}


def test_ids_unique_and_lookup(shipped):
    ids = [e.id for e in shipped.entries]
    assert len(ids) == len(set(ids))
    assert shipped.get("qwen2.5-1.5b-instruct-q4_k_m").repo == "Qwen/Qwen2.5-1.5B-Instruct-GGUF"
    assert shipped.get("no-such-model") is None


def test_gguf_entries_have_plausible_architecture(shipped):
    for entry in shipped.chat():
        a = entry.arch
        assert entry.format == "gguf" and entry.engine == "llama_cpp", entry.id
        assert all(f.path.endswith(".gguf") for f in entry.files), entry.id
        per_token = a.kv_bytes_per_token()  # f16 K and V, all layers
        assert 4 * 1024 <= per_token <= 1024 * 1024, (entry.id, per_token)
        assert a.head_count % a.head_count_kv == 0, entry.id
        assert 32 <= a.key_length <= 256 and a.key_length == a.value_length, entry.id
        # most families have head_count * head_dim == hidden size; Gemma 3 is the known exception
        if a.architecture != "gemma3":
            assert a.head_count * a.key_length == a.embedding_length, entry.id
        assert a.vocab_size >= 32000, entry.id
        # bits per parameter of the file: ~4.5 for Q4_K_M, ~8.5 for Q8_0, up to ~11 when a
        # small model keeps its large embedding table in f16 (Qwen's official 0.5B files)
        bits = entry.total_size * 8 / entry.parameters
        assert 3.5 < bits < 12, (entry.id, bits)


def test_known_architecture_numbers(shipped):
    qwen = shipped.get("qwen2.5-1.5b-instruct-q4_k_m").arch
    assert (qwen.block_count, qwen.head_count, qwen.head_count_kv, qwen.key_length, qwen.embedding_length) == (
        28, 12, 2, 128, 1536)
    llama = shipped.get("llama-3.2-1b-instruct-q4_k_m").arch
    assert (llama.block_count, llama.head_count, llama.head_count_kv, llama.key_length, llama.embedding_length) == (
        16, 32, 8, 64, 2048)
    gemma = shipped.get("gemma-3-1b-it-q4_k_m").arch
    assert (gemma.block_count, gemma.head_count, gemma.head_count_kv, gemma.key_length) == (26, 4, 1, 256)
    assert (gemma.sliding_window, gemma.sliding_window_pattern) == (512, 6)


def test_sliding_window_bounds_the_kv_cache(shipped):
    gemma = shipped.get("gemma-3-1b-it-q4_k_m").arch
    per_layer_token = 1 * (256 + 256) * 2
    assert gemma.global_layers == 4  # 26 layers, one global every 6
    assert gemma.kv_cache_bytes(32768) == per_layer_token * (4 * 32768 + 22 * 512)
    assert gemma.kv_cache_bytes(256) == gemma.kv_bytes_per_token() * 256  # within the window: all layers
    llama = shipped.get("llama-3.1-8b-instruct-q4_k_m").arch
    assert llama.kv_cache_bytes(8192) == llama.kv_bytes_per_token() * 8192 == 1024 ** 3


def test_gating_and_licences(shipped):
    llama = shipped.get("llama-3.2-3b-instruct-q4_k_m")
    assert llama.license == "llama3.2" and llama.gated is False  # community GGUF mirror
    assert shipped.get("llama-3.1-8b-instruct-q4_k_m").license == "llama3.1"
    assert shipped.get("gemma-3-4b-it-q4_k_m").license == "gemma"
    assert shipped.get("stable-diffusion-1.5-fp16").license == "creativeml-openrail-m"


def test_image_entries_list_safe_complete_pipelines(shipped):
    for entry in shipped.images():
        paths = [f.path for f in entry.files]
        assert "model_index.json" in paths
        assert not any(p.endswith((".bin", ".ckpt", ".pt", ".pth")) for p in paths), entry.id
        assert any(p.startswith("tokenizer/") for p in paths), entry.id
        if entry.format == "diffusers":
            assert any(p.startswith("unet/") and p.endswith(".safetensors") for p in paths), entry.id
            assert any(p.startswith("vae/") for p in paths), entry.id
        else:
            assert {"text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"} <= set(paths)
    sd15 = shipped.get("stable-diffusion-1.5-fp16")
    assert sd15.repo == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in [f.path for f in sd15.files]


def test_total_size_url_and_main_file(shipped, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example/")
    entry = shipped.get("qwen2.5-0.5b-instruct-q4_k_m")
    assert entry.total_size == sum(f.size for f in entry.files)
    assert entry.main_file.path == "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert entry.url(entry.main_file) == (
        "https://hub.example/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf")
    sd = shipped.get("sd-turbo-fp16")
    assert sd.url("unet/config.json") == "https://hub.example/stabilityai/sd-turbo/resolve/main/unet/config.json"
    assert sd.main_file.path == "model_index.json"
    with pytest.raises(KeyError):
        sd.url("unet/not-in-the-entry.json")


def test_siblings_offer_other_quantizations_smallest_first(shipped):
    q8 = shipped.get("qwen2.5-1.5b-instruct-q8_0")
    assert [e.id for e in shipped.siblings(q8)] == ["qwen2.5-1.5b-instruct-q4_k_m"]
    gemma = shipped.get("gemma-3-4b-it-q8_0")
    siblings = shipped.siblings(gemma)
    assert [e.quantization for e in siblings] == ["Q4_K_M"]
    assert all(s.total_size < gemma.total_size for s in siblings)
    assert shipped.siblings(shipped.get("mistral-7b-instruct-v0.3-q4_k_m")) == []
    sizes = [e.total_size for e in shipped.siblings(shipped.get("llama-3.2-1b-instruct-q4_k_m"))]
    assert sizes == sorted(sizes)


# --------------------------------------------------------------------------- malformed files


def assert_failed(catalog: Catalog, *fragments: str) -> None:
    assert catalog.entries == []
    assert catalog.error is not None and catalog.error.startswith(ERROR_PREFIX)
    for fragment in fragments:
        assert fragment in catalog.error, catalog.error


def test_bad_json_reports_line_and_column(tmp_path, caplog):
    path = write(tmp_path, '{"schema_version": 1,\n "entries": [ }')
    with caplog.at_level(logging.ERROR, logger="engines.library.catalog"):
        catalog = load_catalog(path)
    assert_failed(catalog, "not valid JSON", "line 2")
    assert any(ERROR_PREFIX in r.getMessage() for r in caplog.records)


def test_missing_file(tmp_path):
    assert_failed(load_catalog(tmp_path / "nope.json"), "does not exist")


def test_missing_field_names_entry_and_field(tmp_path, raw):
    del raw["entries"][2]["license"]
    catalog = load_catalog(write(tmp_path, raw))
    assert_failed(catalog, "entry 3", repr(raw["entries"][2]["id"]), "license", "missing")


def test_unknown_key_is_an_error(tmp_path, raw):
    raw["entries"][0]["arch"]["n_heads"] = 4
    catalog = load_catalog(write(tmp_path, raw))
    assert_failed(catalog, "entry 1", "arch.n_heads", "unknown key")


def test_unknown_top_level_key_and_schema_version(tmp_path, raw):
    bad = dict(raw, comment="x")
    assert_failed(load_catalog(write(tmp_path, bad)), "top level", "comment")
    newer = dict(raw, schema_version=99)
    assert_failed(load_catalog(write(tmp_path, newer, "v99.json")), "schema_version 99 is not supported")


def test_duplicate_id(tmp_path, raw):
    raw["entries"].append(copy.deepcopy(raw["entries"][0]))
    catalog = load_catalog(write(tmp_path, raw))
    assert_failed(catalog, f"entry {len(raw['entries'])}", "repeats the id", "entry 1")


@pytest.mark.parametrize(
    "bad_path", ["../evil.gguf", "unet/../../evil.json", "/etc/passwd", "C:/Windows/x.gguf", "a//b.gguf", "a\\b.gguf"]
)
def test_path_escaping_the_model_folder_is_rejected(tmp_path, raw, bad_path):
    entry = next(e for e in raw["entries"] if e["kind"] == "image")
    entry["files"][1]["path"] = bad_path
    catalog = load_catalog(write(tmp_path, raw))
    assert_failed(catalog, repr(entry["id"]), "files[1].path")


def test_inconsistent_entries_are_rejected(tmp_path, raw):
    chat = raw["entries"][0]
    chat["files"][0]["path"] = "model.bin"
    assert_failed(load_catalog(write(tmp_path, raw)), "only list .gguf files")
    raw2 = json.loads(default_catalog_path().read_text(encoding="utf-8"))
    image = next(e for e in raw2["entries"] if e["format"] == "diffusers")
    image["files"].append({"path": "unet/diffusion_pytorch_model.bin", "size": 10, "sha256": None})
    assert_failed(load_catalog(write(tmp_path, raw2, "b.json")), "pickle checkpoints are not allowed")
    raw3 = json.loads(default_catalog_path().read_text(encoding="utf-8"))
    raw3["entries"][0]["files"][0]["sha256"] = "XYZ"
    assert_failed(load_catalog(write(tmp_path, raw3, "c.json")), "sha256")


def test_entry_model_is_strict():
    with pytest.raises(Exception):
        CatalogEntry.model_validate({"id": "x"})
