"""Checks before llama.cpp loads a model, so failures become sentences.

llama.cpp answers a missing, foreign, truncated or oversized model with a
bare "Failed to load model" (or, for some damage, a crash). The file itself is
checked by :func:`engines.gguf.model_file.check_model_file`, with the format;
this checks that the context asked for fits in the memory free now, with the
same arithmetic as the model library's verdicts (:mod:`engines.machine.fit`).
"""

from __future__ import annotations

from engines.errors import EngineError, ErrorKind
from engines.kv_cache import DEFAULT_CACHE_TYPE
from engines.machine.fit import ModelShape, Resources, judge_text_fit


def check_memory_for_context(header, context_length: int, gpu_offload: bool = False, cache_type: str = DEFAULT_CACHE_TYPE):
    """Refuse a context that cannot fit in free memory, saying why and what would fit.

    ``cache_type`` is the context cache the model will be loaded with, so a
    q8_0 cache that makes a long context fit is let through.
    """
    from engines.machine.hardware import probe

    resources = Resources.from_report(probe(), gpu_offload)
    verdict = judge_text_fit(ModelShape.from_header(header), context_length, resources, cache_type)
    if not verdict.fits:
        hint = " ".join(verdict.suggestions)
        raise EngineError(
            ErrorKind.MEMORY,
            f"Not enough memory for a context of {context_length:,} tokens: {verdict.explanation} {hint}".strip(),
        )
    return verdict
