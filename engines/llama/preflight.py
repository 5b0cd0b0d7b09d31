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
from dataclasses import replace
from pathlib import Path

from engines.machine.fit import ModelShape, ProjectorShape, Resources, judge_text_fit


def check_memory_for_context(header, context_length: int, gpu_offload: bool = False, cache_type: str = DEFAULT_CACHE_TYPE,
                             projector: ProjectorShape | None = None):
    """Refuse a context that cannot fit in free memory, saying why and what would fit.

    ``cache_type`` is the context cache the model will be loaded with, so a
    q8_0 cache that makes a long context fit is let through; ``projector``
    is the vision projector loaded with it.
    """
    from engines.machine.hardware import probe

    resources = Resources.from_report(probe(), gpu_offload)
    shape = replace(ModelShape.from_header(header), projector=projector)
    verdict = judge_text_fit(shape, context_length, resources, cache_type)
    if not verdict.fits:
        hint = " ".join(verdict.suggestions)
        raise EngineError(
            ErrorKind.MEMORY,
            f"Not enough memory for a context of {context_length:,} tokens: {verdict.explanation} {hint}".strip(),
        )
    return verdict


def projector_shape(path: Path) -> ProjectorShape:
    """What a vision projector file adds to a model's memory need; MODEL_FILE in words when it is unusable."""
    from engines.gguf.model_file import check_model_file

    if not path.is_file():
        raise EngineError(ErrorKind.MODEL_FILE, f"The vision projector {path} does not exist.")
    return ProjectorShape.from_header(check_model_file(path), path.stat().st_size)
