"""The fit estimate: the arithmetic, the GPU split and the verdict sentences."""

from engines.machine.fit import GiB, ModelShape, Resources, estimate_text, judge_text_fit, longest_context_that_fits


def llama_8b_q4() -> ModelShape:
    # Llama 3.1 8B Q4_K_M: 32 layers, 8 KV heads of 128, ~4.6 GB of weights.
    return ModelShape(
        weights_bytes=4_580_000_000, block_count=32, embedding_length=4096, feed_forward_length=14336,
        head_count=32, kv_heads_per_layer=(8,) * 32, key_length=128, value_length=128, vocab_size=128256,
    )


def test_kv_cache_follows_jans_formula():
    shape = llama_8b_q4()
    need = estimate_text(shape, 8192)
    assert need.kv_cache_bytes == 32 * 8 * (128 + 128) * 2 * 8192  # 1 GiB at f16
    assert need.total_bytes == need.weights_bytes + need.kv_cache_bytes + need.buffers_bytes + need.overhead_bytes


def test_cpu_only_machine_explains_itself():
    verdict = judge_text_fit(llama_8b_q4(), 4096, Resources(ram_total=32 * GiB, ram_free=20 * GiB))
    assert verdict.verdict == "cpu_only" and verdict.label == "CPU only"
    assert "weights +" in verdict.explanation and "context cache (f16) at 4,096 tokens" in verdict.explanation
    assert "no supported GPU" in verdict.explanation


def test_full_gpu_partial_gpu_and_wont_fit():
    shape = llama_8b_q4()
    big = Resources(32 * GiB, 20 * GiB, "RTX 4090", vram_free=22 * GiB)
    assert judge_text_fit(shape, 4096, big).verdict == "gpu_full"
    small = Resources(32 * GiB, 20 * GiB, "RTX 3050", vram_free=3 * GiB)
    partial = judge_text_fit(shape, 4096, small)
    assert partial.verdict == "gpu_partial" and 0 < partial.gpu_layers < 32
    assert f"{partial.gpu_layers} of 32 layers" in partial.label
    tiny = Resources(8 * GiB, 3 * GiB)
    nope = judge_text_fit(shape, 4096, tiny)
    assert nope.verdict == "wont_fit" and not nope.fits and nope.suggestions


def test_a_shorter_context_is_suggested_when_only_the_context_is_too_big():
    shape = llama_8b_q4()
    resources = Resources(16 * GiB, 9 * GiB)
    verdict = judge_text_fit(shape, 131072, resources)
    assert verdict.verdict == "wont_fit"
    shorter = longest_context_that_fits(shape, 9 * GiB - 1.6 * GiB, 131072)
    assert shorter >= 4096
    assert any(f"{shorter:,} tokens" in s for s in verdict.suggestions)


def test_unified_memory_counts_as_gpu():
    verdict = judge_text_fit(llama_8b_q4(), 4096, Resources(16 * GiB, 12 * GiB, "Apple M2", 12 * GiB, unified_memory=True))
    assert verdict.verdict == "gpu_full" and "shares" in verdict.explanation


def test_estimate_is_close_to_what_gemma_really_uses(gemma_path):
    """Measured peak RSS of an engine host with Gemma 3 270M: ~439 MB at 2,048, ~747 MB at 16,384."""
    from engines.gguf import read_gguf_header

    shape = ModelShape.from_header(read_gguf_header(gemma_path))
    for context, measured in ((2048, 439e6), (16384, 747e6)):
        total = estimate_text(shape, context).total_bytes
        assert abs(total - measured) / measured < 0.20
