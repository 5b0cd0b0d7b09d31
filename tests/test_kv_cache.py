"""The context cache type: its cost table, the estimate and verdicts that follow it, and the settings."""

import json

import pytest

from engines.api import TextLoadSpec
from engines.kv_cache import CACHE_TYPES, element_bytes, smaller_cache_types
from engines.machine.fit import GiB, ModelShape, Resources, estimate_text, judge_text_fit, ram_reserve
from engines.llama.cache_options import cache_refusal, read_cache_report
from engines.settings import LoadPrefs, Settings, load_settings, save_settings


def llama_8b_q4() -> ModelShape:
    # Llama 3.1 8B Q4_K_M: 32 layers, 8 KV heads of 128, ~4.6 GB of weights.
    return ModelShape(
        weights_bytes=4_580_000_000, block_count=32, embedding_length=4096, feed_forward_length=14336,
        head_count=32, kv_heads_per_layer=(8,) * 32, key_length=128, value_length=128, vocab_size=128256,
    )


# ---- the table ------------------------------------------------------------


def test_element_sizes_are_ggml_block_sizes():
    assert element_bytes("f16") == 2
    assert element_bytes("q8_0") == 34 / 32  # 32 int8 values + one f16 scale
    assert element_bytes("q4_0") == 18 / 32  # 32 4-bit values + one f16 scale
    assert list(CACHE_TYPES) == ["f16", "q8_0", "q4_0"]
    assert [CACHE_TYPES[name].quantized for name in CACHE_TYPES] == [False, True, True]


def test_unknown_cache_type_names_the_choices():
    with pytest.raises(ValueError, match="f16, q8_0, q4_0.*'q5_1'"):
        element_bytes("q5_1")


def test_smaller_cache_types_are_listed_largest_first():
    assert smaller_cache_types("f16") == ["q8_0", "q4_0"]
    assert smaller_cache_types("q8_0") == ["q4_0"]
    assert smaller_cache_types("q4_0") == []


def test_load_spec_validates_the_cache_type():
    assert TextLoadSpec("m.gguf", cache_type="q8_0").validate() == []
    assert TextLoadSpec("m.gguf").cache_type == "f16"
    problems = TextLoadSpec("m.gguf", cache_type="q8").validate()
    assert problems == ["the context cache type must be one of f16, q8_0, q4_0, not 'q8'"]
    assert TextLoadSpec("m.gguf", context_length=10, cache_type="bf16").validate()[0].startswith("the context length")


# ---- the estimate and the verdict -------------------------------------------


def test_only_the_cache_shrinks_with_its_type():
    shape = llama_8b_q4()
    f16, q8, q4 = (estimate_text(shape, 8192, t) for t in ("f16", "q8_0", "q4_0"))
    assert f16.kv_cache_bytes == 32 * 8 * (128 + 128) * 2 * 8192  # 1 GiB
    assert q8.kv_cache_bytes == f16.kv_cache_bytes * 34 // 64
    assert q4.kv_cache_bytes == f16.kv_cache_bytes * 18 // 64
    assert f16.buffers_bytes == q8.buffers_bytes == q4.buffers_bytes and f16.weights_bytes == q4.weights_bytes
    assert f16.total_bytes - q8.total_bytes == f16.kv_cache_bytes - q8.kv_cache_bytes


def test_the_sentence_names_the_cache_type():
    need = estimate_text(llama_8b_q4(), 4096, "q8_0")
    assert "0.29 GB context cache (q8_0) at 4,096 tokens" in need.sentence()
    assert "context cache (f16) at 4,096 tokens" in estimate_text(llama_8b_q4(), 4096).sentence()


def test_a_q8_0_cache_is_suggested_when_it_would_make_the_context_fit():
    shape, context = llama_8b_q4(), 32768
    resources = Resources(ram_total=16 * GiB, ram_free=int(8.7 * GiB))
    budget = resources.ram_free - ram_reserve(resources.ram_total)
    assert estimate_text(shape, context, "q8_0").total_bytes <= budget < estimate_text(shape, context).total_bytes
    verdict = judge_text_fit(shape, context, resources)
    assert verdict.verdict == "wont_fit"
    assert "A q8_0 context cache (half the memory) would fit 32,768 tokens." in verdict.suggestions
    assert "(f16)" in verdict.explanation
    # and with that cache the same context does fit
    with_q8 = judge_text_fit(shape, context, resources, "q8_0")
    assert with_q8.verdict == "cpu_only" and "(q8_0)" in with_q8.explanation
    assert with_q8.to_dict()["cache_type"] == "q8_0"


def test_q4_0_is_suggested_only_when_q8_0_is_not_enough():
    shape, context = llama_8b_q4(), 32768
    resources = Resources(ram_total=16 * GiB, ram_free=int(7.7 * GiB))
    budget = resources.ram_free - ram_reserve(resources.ram_total)
    assert estimate_text(shape, context, "q4_0").total_bytes <= budget < estimate_text(shape, context, "q8_0").total_bytes
    suggestions = judge_text_fit(shape, context, resources).suggestions
    assert any("q4_0 context cache (a quarter of the memory)" in s for s in suggestions)
    assert not any("q8_0" in s for s in suggestions)
    # nothing smaller than q4_0 exists to suggest
    assert not any("context cache" in s for s in judge_text_fit(shape, 262144, resources, "q4_0").suggestions)


# ---- reading llama.cpp's log -------------------------------------------------

# Lines as llama.cpp logs them when it loads Gemma 3 (a model with sliding-window layers: two caches).
GEMMA_Q8_LOG = """llama_context: flash_attn            = enabled
llama_kv_cache_iswa: creating non-SWA KV cache, size = 1024 cells
llama_kv_cache:        CPU KV buffer size =     0.80 MiB
llama_kv_cache: size =    0.80 MiB (  1024 cells,   3 layers,  1/1 seqs), K (q8_0):    0.40 MiB, V (q8_0):    0.40 MiB
llama_kv_cache_iswa: creating     SWA KV cache, size = 1024 cells
llama_kv_cache: size =    3.98 MiB (  1024 cells,  15 layers,  1/1 seqs), K (q8_0):    1.99 MiB, V (q8_0):    1.99 MiB"""


def test_the_cache_report_sums_every_cache_llama_cpp_logged():
    report = read_cache_report(GEMMA_Q8_LOG)
    assert report.types == {"q8_0"} and report.total_bytes == int((0.80 + 3.98) * 2**20)
    assert read_cache_report("llama_context: n_ctx = 1024") is None


def test_a_refused_cache_type_is_found_in_the_log():
    log = ("llama_model_loader: loaded meta data\n"
           "llama_init_from_model: K cache type q8_0 with block size 32 does not divide n_embd_head_k=16\n")
    assert cache_refusal(log) == "K cache type q8_0 with block size 32 does not divide n_embd_head_k=16"
    flash = "llama_init_from_model: failed to initialize the context: quantized V cache was requested, but this requires Flash Attention"
    assert cache_refusal(flash) == "quantized V cache was requested, but this requires Flash Attention"
    assert cache_refusal("llama_model_load: error loading model: unknown model architecture: 'x'") is None
    assert cache_refusal("llama_kv_cache: failed to allocate buffer for kv cache") is None  # out of memory, not a refusal


def test_llama_kwargs_select_the_ggml_types_and_flash_attention():
    llama_cpp = pytest.importorskip("llama_cpp")
    from engines.llama.cache_options import llama_cache_kwargs

    assert llama_cache_kwargs("f16") == {}  # llama-cpp-python's own defaults, as before
    assert llama_cache_kwargs("q8_0") == {"type_k": llama_cpp.GGML_TYPE_Q8_0, "type_v": llama_cpp.GGML_TYPE_Q8_0, "flash_attn": True}
    assert llama_cache_kwargs("q4_0")["type_v"] == llama_cpp.GGML_TYPE_Q4_0 == 2


# ---- settings ---------------------------------------------------------------


def test_settings_written_before_the_cache_type_still_load(tmp_path):
    path = tmp_path / "settings.json"
    old = {"schema_version": 1, "theme": "dark", "last_model_id": "m",
           "load_prefs": {"m": {"context_length": 8192, "threads": 3, "gpu_layers": None}}}
    path.write_text(json.dumps(old))
    settings = load_settings(path)
    assert settings.theme == "dark" and settings.prefs_for("m") == LoadPrefs(context_length=8192, threads=3)
    assert settings.prefs_for("m").cache_type == "f16"
    assert path.exists() and not list(tmp_path.glob("settings.unreadable-*"))  # not set aside


def test_the_cache_type_is_saved_per_model(tmp_path):
    path = tmp_path / "settings.json"
    settings = Settings()
    settings.load_prefs["m"] = LoadPrefs(context_length=32768, cache_type="q8_0")
    save_settings(path, settings)
    assert json.loads(path.read_text())["load_prefs"]["m"]["cache_type"] == "q8_0"
    again = load_settings(path)
    assert again.prefs_for("m").cache_type == "q8_0" and again.prefs_for("other").cache_type == "f16"


def test_an_unknown_cache_type_in_the_file_falls_back_without_losing_the_rest(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"schema_version": 1, "theme": "light",
                                "load_prefs": {"m": {"context_length": 2048, "cache_type": "q5_1"}}}))
    settings = load_settings(path)
    assert settings.theme == "light" and settings.prefs_for("m") == LoadPrefs(context_length=2048, cache_type="f16")
