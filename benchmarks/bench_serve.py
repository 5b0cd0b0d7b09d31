"""``atelier serve`` against llama-cpp-python called directly, and under eight concurrent clients.

What another app sees: the official ``openai`` client streams a completion
from a real ApiServer on 127.0.0.1 (the same server ``atelier serve``
starts, over the same scheduler and engine host), on Gemma 3 270M. The
direct side is ``llama_cpp.Llama.create_completion(stream=True)`` in this
process, on the same file, threads and context, with the same sampling
(greedy). The two alternate round by round, so background load lands on
both alike.

- decode rate: text chunks after the first over the time between the
  first and the last, counted where the client reads them (the server's
  token count, from ``usage``; the direct side counts sampled tokens);
- time to first token: from the call to the first text, in the caller;
- eight clients at once: each streams short chat replies back to back;
  requests per second over the whole run, and the p50/p99 latency of a
  request from call to last chunk (one model, so the scheduler serves them
  in turn, fairly: the latency is mostly waiting for a turn).

Targets (issue 12): decode ≥ 0.95× direct, TTFT overhead ≤ 30 ms.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

ROUNDS = 5
MAX_TOKENS = 128
CONTEXT = 2048
CLIENTS = 8
REQUESTS_PER_CLIENT = 3
CONCURRENT_MAX_TOKENS = 32
RATIO_TARGET = 0.95
TTFT_OVERHEAD_TARGET_MS = 30
SAMPLING = dict(temperature=0.0, top_p=0.95)
EXTRA = dict(top_k=40, min_p=0.05, repeat_penalty=1.0)  # llama-cpp-python's own defaults, for the same sampler


def _direct(llm, prompt: str) -> tuple[float, float, int]:
    import llama_cpp

    sampled = 0

    def count(_ids, _logits) -> bool:
        nonlocal sampled
        sampled += 1
        return False

    t0 = time.perf_counter()
    first = last = None
    for chunk in llm.create_completion(prompt, max_tokens=MAX_TOKENS, stream=True, **SAMPLING, **EXTRA,
                                       stopping_criteria=llama_cpp.StoppingCriteriaList([count])):
        if chunk["choices"][0]["text"]:
            last = time.perf_counter()
            first = first or last
    return first - t0, (sampled - 1) / (last - first), sampled


def _served(client, model: str, prompt: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first = last = None
    tokens = None
    for chunk in client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, stream=True,
                                           stream_options={"include_usage": True}, extra_body=EXTRA, **SAMPLING):
        if chunk.choices and chunk.choices[0].text:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return first - t0, (tokens - 1) / (last - first), tokens


def _concurrent(running, model: str) -> dict:
    """Eight clients streaming short chat replies at once: throughput and tail latency."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client_loop(index: int) -> None:
        client = running.openai(timeout=600)
        for n in range(REQUESTS_PER_CLIENT):
            t0 = time.perf_counter()
            try:
                for _ in client.completions.create(model=model, prompt=f"Client {index}, question {n}: the sea is",
                                                   max_tokens=CONCURRENT_MAX_TOKENS, stream=True, extra_body=EXTRA,
                                                   **SAMPLING):
                    pass
            except Exception as exc:  # noqa: BLE001 - a refused request is a figure, not a crash
                with lock:
                    failures.append(type(exc).__name__)
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else None
    return {
        "clients": CLIENTS,
        "requests": CLIENTS * REQUESTS_PER_CLIENT,
        "completed": len(latencies),
        "failed": failures,
        "tokens_per_request": CONCURRENT_MAX_TOKENS,
        "requests_per_second": round(len(latencies) / wall, 2),
        "p50_latency_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
        "p99_latency_ms": round(p99 * 1000, 1) if p99 is not None else None,
        "wall_s": round(wall, 2),
    }


def run() -> dict:
    import llama_cpp

    from engines.llama.backends import ensure_backends_loaded
    from engines.llama.engine import default_threads
    from tests.fixtures.api_server import start_server
    from tests.fixtures.gemma import assemble_gemma

    path = assemble_gemma()
    threads = default_threads()
    ensure_backends_loaded()
    running = start_server(Path(tempfile.mkdtemp(prefix="bench-serve-")), {"gemma": path}, context_length=CONTEXT)
    try:
        model = running.ids["gemma"]
        client = running.openai(timeout=600)
        _served(client, model, "Warm up: the model loads now.")  # the load is not part of any round
        llm = llama_cpp.Llama(str(path), n_ctx=CONTEXT, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0,
                              verbose=False)
        direct, served = [], []
        for i in range(ROUNDS):
            prompt = f"Round {i}. The history of the printing press began"
            if i % 2:
                served.append(_served(client, model, prompt))
                direct.append(_direct(llm, prompt))
            else:
                direct.append(_direct(llm, prompt))
                served.append(_served(client, model, prompt))
        del llm
        concurrent = _concurrent(running, model)
    finally:
        running.stop()
    d_rate = statistics.median(r[1] for r in direct)
    s_rate = statistics.median(r[1] for r in served)
    d_ttft = statistics.median(r[0] for r in direct)
    s_ttft = statistics.median(r[0] for r in served)
    ratio = s_rate / d_rate
    overhead_ms = (s_ttft - d_ttft) * 1000
    return {
        "model": path.name,
        "threads": threads,
        "rounds": ROUNDS,
        "tokens_per_round": [r[2] for r in served],
        "direct_tokens_per_second": round(d_rate, 2),
        "served_tokens_per_second": round(s_rate, 2),
        "ratio": round(ratio, 3),
        "ratio_target": RATIO_TARGET,
        "direct_ttft_ms": round(d_ttft * 1000, 1),
        "served_ttft_ms": round(s_ttft * 1000, 1),
        "ttft_overhead_ms": round(overhead_ms, 1),
        "ttft_overhead_target_ms": TTFT_OVERHEAD_TARGET_MS,
        "concurrent": concurrent,
        "met": ratio >= RATIO_TARGET and overhead_ms <= TTFT_OVERHEAD_TARGET_MS,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
