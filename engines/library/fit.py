"""How much memory a GGUF model needs at a given context, and whether it fits.

One estimate, used both before a download and before a load:
weights + KV cache at the chosen context + compute buffers + runtime
overhead, checked against memory that is *free* now, keeping a reserve.
The breakdown is kept so the verdict can be explained in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3
RUNTIME_OVERHEAD = 96 * 1024**2  # llama.cpp + Python host process, measured order of magnitude
RAM_RESERVE = int(1.0 * GiB)  # kept free for the OS and the app itself
F16 = 2


@dataclass(frozen=True)
class TextMemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    buffers_bytes: int
    overhead_bytes: int
    context_length: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.buffers_bytes + self.overhead_bytes


def kv_cache_bytes(header, context_length: int, bytes_per_element: int = F16) -> int:
    """KV cache = Σ layers × kv heads × (key + value length) × element size × context."""
    heads = header.head_count_kv_per_layer or []
    per_token = sum(h * ((header.key_length or 0) + (header.value_length or 0)) for h in heads)
    return per_token * bytes_per_element * context_length


def compute_buffer_bytes(header, context_length: int, n_ubatch: int = 512) -> int:
    """llama.cpp reserves its graph for a full micro-batch of logits and activations."""
    batch = min(n_ubatch, context_length)
    vocab = header.vocab_size or 32000
    embd = header.embedding_length or 4096
    return vocab * batch * 4 + embd * batch * 4 * 8


def estimate_text_memory(header, context_length: int) -> TextMemoryEstimate:
    return TextMemoryEstimate(
        weights_bytes=int(header.tensor_data_bytes),
        kv_cache_bytes=kv_cache_bytes(header, context_length),
        buffers_bytes=compute_buffer_bytes(header, context_length),
        overhead_bytes=RUNTIME_OVERHEAD,
        context_length=context_length,
    )


def largest_context_that_fits(header, available_bytes: int, start: int) -> int:
    """The longest power-of-two context (≥ 512) whose estimate fits, or 0."""
    context = start
    while context >= 512:
        if estimate_text_memory(header, context).total_bytes <= available_bytes:
            return context
        context //= 2
    return 0


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"
