"""The context cache type, translated for llama.cpp and read back from its log.

llama.cpp takes the cache's element type as ggml type ids (``type_k`` and
``type_v``) and needs flash attention for a quantized V cache: without it,
context creation fails. So a quantized choice always turns flash attention
on. f16 passes nothing and keeps llama-cpp-python's defaults, so loads that
do not ask for a quantized cache behave exactly as before.

llama.cpp reports what it allocated ("llama_kv_cache: size = 18.00 MiB
(... cells, 18 layers, ...), K (q8_0): 9.00 MiB, V (q8_0): 9.00 MiB"); we
read that line from the captured native log so the user sees the real
figure, not only our estimate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engines.kv_cache import cache_type_info

_SIZE_LINE = re.compile(
    r"llama_kv_cache\w*: size =\s*([\d.]+) MiB.*?K \((\w+)\):\s*[\d.]+ MiB, V \((\w+)\)",
)
# How llama.cpp words a refused cache type (llama_init_from_model and llama_context in
# llama-context.cpp): the subject, then a refusal. "\bV cache" leaves out "KV cache",
# whose failures are allocation failures, not refusals.
_REFUSAL = re.compile(
    r"(\bcache type\b|\bV cache\b|flash.?attention|\bflash_attn\b).*(requires?|does not|not supported)",
    re.IGNORECASE,
)


def llama_cache_kwargs(cache_type: str) -> dict:
    """Keyword arguments for ``llama_cpp.Llama`` that select ``cache_type``."""
    info = cache_type_info(cache_type)
    if not info.quantized:
        return {}
    import llama_cpp

    ggml_type = getattr(llama_cpp, f"GGML_TYPE_{info.name.upper()}")
    return {"type_k": ggml_type, "type_v": ggml_type, "flash_attn": True}


@dataclass(frozen=True)
class CacheReport:
    """What llama.cpp said it allocated for the context cache."""

    total_bytes: int
    types: frozenset[str]  # the K and V element types it used, e.g. {"q8_0"}


def read_cache_report(log_text: str) -> CacheReport | None:
    """Sum the cache sizes llama.cpp logged (models with sliding-window layers log two caches)."""
    matches = _SIZE_LINE.findall(log_text)
    if not matches:
        return None
    total = sum(float(mib) for mib, _k, _v in matches)
    types = frozenset(t for _mib, k, v in matches for t in (k, v))
    return CacheReport(int(total * 1024 * 1024), types)


def cache_refusal(log_text: str) -> str | None:
    """llama.cpp's own words when it refused the cache type, without the function-name prefixes."""
    for line in reversed(log_text.splitlines()):
        if _REFUSAL.search(line):
            return line.rsplit(": ", 1)[-1].strip()
    return None
