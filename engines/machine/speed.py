"""Expected speed: how many tokens a second a chat model will write on this machine.

Writing one token makes llama.cpp read every weight of the model once, plus
the context cache filled so far, so on a CPU (and on most GPUs) the speed
is the memory bandwidth divided by the bytes read per token:

    seconds per token = weights on the CPU / (CPU bandwidth × efficiency)
                      + weights on the GPU / (GPU bandwidth × efficiency)
                      + context cache read  / (bandwidth of its device)
                      + a fixed cost per token (sampling, graph, IPC)

The CPU bandwidth is measured on this machine (:mod:`engines.machine.machine_speed`);
a GPU's is its memory bus width × memory clock, from NVML. The context
cache is counted at half the context filled, a conversation of middling
length. ``READ_EFFICIENCY`` and ``TOKEN_OVERHEAD_S`` were calibrated on this
project's 2-core benchmark machine (see their comments): an estimate is a
guide within a factor of about 1.5, which is why the measured speed of a
model, once it has run, is kept and shown beside it
(:mod:`engines.library.measured_speeds`).

Image models are estimated from their arithmetic instead, in
:mod:`engines.machine.image_speed`; both give a :class:`SpeedEstimate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engines.byte_sizes import format_bytes
from engines.durations import format_duration

# llama.cpp's decode reads the weights at this share of the bandwidth that numpy's copy measures.
# Calibrated on Gemma 3 270M Q4_K_M with 2 threads on the README's benchmark machine: 82 tokens/s
# when quiet, from 0.253 GB read per token, is 20.7 GB/s; the copy measured 23 GB/s at its best in
# the same session; less the fixed cost below, 0.91 of it. (A copy also pays for its writes, so a
# model larger than Gemma's 270M, more bound by reading, may do a little better.)
READ_EFFICIENCY = 0.9
GPU_READ_EFFICIENCY = 0.7  # llama.cpp's CUDA decode on large models reaches 60-80% of the bus's peak
TOKEN_OVERHEAD_S = 0.0004  # sampling, graph, IPC: a tiny random-weight llama writes ~3,000 tokens/s there
TYPICAL_FILL = 0.5  # share of the context that is filled, for the cache read per token

Unit = Literal["tokens/s", "s/image"]


@dataclass(frozen=True)
class SpeedEstimate:
    """An expected speed and the arithmetic behind it."""

    value: float  # tokens per second, or seconds per image
    unit: Unit
    basis: str  # the arithmetic, in words

    @property
    def short(self) -> str:
        """"about 18 tokens/s", "about 12 s per image"."""
        return f"about {format_speed(self.value, self.unit)}"

    @property
    def words(self) -> str:
        """"about 18 tokens/s here", "about 12 s per image here"."""
        return f"{self.short} here"


def compare_words(measured_value: float, unit: Unit, estimate: SpeedEstimate | None, setting: str = "") -> str:
    """"measured 21 tokens/s (estimated 18)", "measured 12 s per image at 512×512, 2 steps (estimated 10 s)"."""
    measured = format_speed(measured_value, unit)
    where = f" at {setting}" if setting else ""
    if estimate is None:
        return f"measured {measured}{where}"
    number = format_speed(estimate.value, unit).removesuffix(" tokens/s").removesuffix(" per image")
    return f"measured {measured}{where} (estimated {number})"


def format_speed(value: float, unit: Unit) -> str:
    """"18 tokens/s", "6.5 tokens/s", "12 s per image", "2 min 10 s per image"."""
    if unit == "tokens/s":
        if value < 1:
            return f"{value:.1f} tokens/s".replace("0.0 ", "under 0.1 ")
        return f"{value:.0f} tokens/s" if value >= 10 else f"{value:.1f} tokens/s"
    seconds = max(0.1, value)
    if seconds < 10:
        return f"{seconds:.1f} s per image"
    if seconds < 90:
        return f"{seconds:.0f} s per image"
    return f"{format_duration(seconds, precise=True)} per image"


def format_speed_short(value: float, unit: Unit) -> str:
    """The compact form for a table cell: "13 tokens/s", "12 s/image", "2.5 min/image"."""
    if unit == "tokens/s":
        return format_speed(value, unit)
    if value < 90:
        return f"{value:.1f} s/image" if value < 10 else f"{value:.0f} s/image"
    return f"{value / 60:.1f} min/image"


# Reading a passage for an embedding is bound by arithmetic, not by memory: llama.cpp runs whole batches of
# tokens through each weight, 2 FLOP per parameter per token (the token-embedding table is a lookup, not
# arithmetic, so its parameters do not count). Calibrated on all-MiniLM-L6-v2 (f16, 2 threads, 256-token
# passages, 11 M parameters besides its table) on this project's 2-core machine while it was loaded: 110 and
# 203 tokens/s read while numpy's matmul measured 15-18 and 21-45 GFLOP/s, about 0.14 of it.
EMBED_EFFICIENCY = 0.14


def estimate_embedding_speed(compute_parameters: int, matmul_flops: float) -> SpeedEstimate | None:
    """Tokens per second an embedding model reads (indexing documents) on the CPU; parameters besides its token table."""
    if compute_parameters <= 0 or matmul_flops <= 0:
        return None
    per_token = 2 * compute_parameters
    rate = matmul_flops * EMBED_EFFICIENCY / per_token
    return SpeedEstimate(rate, "tokens/s", f"{per_token / 1e6:.0f} MFLOP per token read, at "
                                           f"{EMBED_EFFICIENCY:.0%} of the {matmul_flops / 1e9:.0f} GFLOP/s "
                                           "measured on this machine")


def estimate_text_speed(weights_bytes: int, kv_bytes_per_token: float, context_length: int, *,
                        cpu_bandwidth: float, gpu_layers: int = 0, total_layers: int = 0,
                        gpu_bandwidth: float | None = None, unified_memory: bool = False) -> SpeedEstimate | None:
    """Tokens per second for a model with *gpu_layers* of *total_layers* on the GPU.

    *kv_bytes_per_token* is the context cache per token at the chosen cache
    type. None when a GPU takes part whose bandwidth is unknown.
    """
    on_gpu = gpu_layers / total_layers if total_layers and gpu_layers else 0.0
    if unified_memory:
        gpu_bandwidth, on_gpu = cpu_bandwidth, 1.0  # one memory for both: the CPU's measurement is the best guide
    if on_gpu and not gpu_bandwidth:
        return None
    cache_read = kv_bytes_per_token * context_length * TYPICAL_FILL
    read = weights_bytes + cache_read
    cpu_rate = cpu_bandwidth * READ_EFFICIENCY
    seconds = TOKEN_OVERHEAD_S + read * (1 - on_gpu) / cpu_rate
    if on_gpu:
        seconds += read * on_gpu / (gpu_bandwidth * GPU_READ_EFFICIENCY)
    rate = 1 / seconds
    where = _where(on_gpu, cpu_bandwidth, gpu_bandwidth, unified_memory)
    basis = (f"{format_bytes(read, in_gb=True)} read per token ({format_bytes(weights_bytes, in_gb=True)} weights + "
             f"{format_bytes(cache_read, in_gb=True)} context cache at {int(context_length * TYPICAL_FILL):,} tokens) {where}")
    return SpeedEstimate(rate, "tokens/s", basis)


def text_speed_for_verdict(verdict, kv_bytes_per_token: float, cpu_bandwidth: float,
                           gpu_bandwidth: float | None = None, unified_memory: bool = False) -> SpeedEstimate | None:
    """The expected speed of a model judged by :func:`engines.machine.fit.judge_text_fit`; None if it won't fit."""
    if not verdict.fits:
        return None
    need = verdict.need
    return estimate_text_speed(need.weights_bytes, kv_bytes_per_token, need.context_length or 4096,
                               cpu_bandwidth=cpu_bandwidth, gpu_layers=verdict.gpu_layers,
                               total_layers=verdict.total_layers, gpu_bandwidth=gpu_bandwidth,
                               unified_memory=unified_memory)


def _where(on_gpu: float, cpu_bandwidth: float, gpu_bandwidth: float | None, unified: bool) -> str:
    cpu = f"{cpu_bandwidth / 1e9:.0f} GB/s measured memory bandwidth"
    if unified:
        return f"at {cpu} (shared by the CPU and GPU)"
    if not on_gpu:
        return f"at {cpu}"
    gpu = f"{gpu_bandwidth / 1e9:.0f} GB/s on the GPU"
    if on_gpu >= 1:
        return f"at {gpu}"
    return f"{on_gpu:.0%} of it at {gpu}, the rest at {cpu}"

