"""Decode speed through Atelier's engine host against llama-cpp-python called directly.

Same file, threads, context and greedy sampling; the two are interleaved
round by round so that thermal or background noise hits both alike. Time
to first token is measured where the user sees it: in the calling process.
Target: host decode rate ≥ 0.97× direct, TTFT overhead ≤ 30 ms.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

ROUNDS = 5
MAX_TOKENS = 128
CONTEXT = 2048


def _direct(llm, prompt: str) -> tuple[float, float, int]:
    import llama_cpp

    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    sampled = 0

    def count(_ids, _logits) -> bool:
        nonlocal sampled
        sampled += 1
        return False

    t0 = time.perf_counter()
    first = last = None
    for chunk in llm.create_completion(tokens, max_tokens=MAX_TOKENS, temperature=0.0, stream=True,
                                       stopping_criteria=llama_cpp.StoppingCriteriaList([count])):
        if chunk["choices"][0]["text"]:
            now = time.perf_counter()
            first = first or now
            last = now
    return first - t0, (sampled - 1) / (last - first), sampled


def _hosted(host, prompt: str) -> tuple[float, float, int]:
    from engines.api import FinishedEvent, SamplingParams, TextRequest, TokenEvent

    request = TextRequest(raw_prompt=prompt, sampling=SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, repeat_penalty=1.0, min_p=0.05, top_k=40, top_p=0.95))
    t0 = time.perf_counter()
    first = None
    result = None
    for event in host.generate(request):
        if isinstance(event, TokenEvent) and first is None:
            first = time.perf_counter()
        elif isinstance(event, FinishedEvent):
            result = event.result
    return first - t0, result.tokens_per_second, result.completion_tokens


def run() -> dict:
    import llama_cpp

    from engines.api import TextLoadSpec
    from engines.host import EngineHost
    from engines.llama.backends import ensure_backends_loaded
    from engines.llama.engine import default_threads
    from tests.fixtures.gemma import assemble_gemma

    path = assemble_gemma()
    threads = default_threads()
    ensure_backends_loaded()
    llm = llama_cpp.Llama(str(path), n_ctx=CONTEXT, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, verbose=False)
    host = EngineHost(Path(tempfile.mkdtemp()) / "bench-host.log")
    host.load("llama_cpp", TextLoadSpec(str(path), CONTEXT, threads, 0))
    direct, hosted = [], []
    try:
        for i in range(ROUNDS):
            prompt = f"Round {i}. The history of the printing press began"
            direct.append(_direct(llm, prompt))
            hosted.append(_hosted(host, prompt))
    finally:
        host.close()
    d_rate = statistics.median(r[1] for r in direct)
    h_rate = statistics.median(r[1] for r in hosted)
    d_ttft = statistics.median(r[0] for r in direct)
    h_ttft = statistics.median(r[0] for r in hosted)
    return {
        "model": path.name,
        "threads": threads,
        "rounds": ROUNDS,
        "tokens_per_round": [r[2] for r in hosted],
        "direct_tokens_per_second": round(d_rate, 2),
        "host_tokens_per_second": round(h_rate, 2),
        "ratio": round(h_rate / d_rate, 3),
        "direct_ttft_ms": round(d_ttft * 1000, 1),
        "host_ttft_ms": round(h_ttft * 1000, 1),
        "ttft_overhead_ms": round((h_ttft - d_ttft) * 1000, 1),
    }
