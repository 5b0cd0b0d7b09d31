"""The context (KV) cache types a chat model can be loaded with, and what they cost.

llama.cpp keeps the keys and values of every token in the context in a
cache whose element type the user may choose: f16 (full precision, the
default) or a quantized ggml type that stores blocks of 32 values with one
f16 scale. The byte sizes below are ggml's block sizes divided by the block
length, so the fit estimate, the preflight memory check, the CLI and the
GUI all agree on what a choice costs. Keeping the table here, and nowhere
else, is what keeps them in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CacheType = Literal["f16", "q8_0", "q4_0"]
DEFAULT_CACHE_TYPE: CacheType = "f16"


@dataclass(frozen=True)
class CacheTypeInfo:
    name: str
    element_bytes: float  # bytes per cached key or value element
    description: str  # what it means for memory, in a few words a user understands

    @property
    def quantized(self) -> bool:
        return self.name != "f16"


CACHE_TYPES: dict[str, CacheTypeInfo] = {
    "f16": CacheTypeInfo("f16", 2.0, "full precision"),
    "q8_0": CacheTypeInfo("q8_0", 34 / 32, "half the memory"),  # 32 int8 + one f16 scale per block
    "q4_0": CacheTypeInfo("q4_0", 18 / 32, "a quarter of the memory"),  # 32 nibbles + one f16 scale
}


def cache_type_problem(cache_type: object) -> str | None:
    """A sentence saying why ``cache_type`` is not a choice, or None when it is."""
    if cache_type in CACHE_TYPES:
        return None
    return f"the context cache type must be one of {', '.join(CACHE_TYPES)}, not {cache_type!r}"


def cache_type_info(cache_type: str) -> CacheTypeInfo:
    """The table row for ``cache_type``; ValueError (with the allowed names) otherwise."""
    problem = cache_type_problem(cache_type)
    if problem:
        raise ValueError(problem[0].upper() + problem[1:] + ".")
    return CACHE_TYPES[cache_type]


def element_bytes(cache_type: str) -> float:
    """Bytes per cached element: 2 for f16, 34/32 for q8_0, 18/32 for q4_0."""
    return cache_type_info(cache_type).element_bytes


def smaller_cache_types(cache_type: str) -> list[str]:
    """The choices that need less memory than ``cache_type``, largest first."""
    size = element_bytes(cache_type)
    cheaper = [info for info in CACHE_TYPES.values() if info.element_bytes < size]
    return [info.name for info in sorted(cheaper, key=lambda info: -info.element_bytes)]
