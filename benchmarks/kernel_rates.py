"""The rates this CPU's best kernels reach right now: the yardstick a diffusion step is measured against.

Absolute rates move between machines of one kind and between hours on a
shared one (packed bf16 kernels reached 0.39-0.42 TFLOP/s on one VM of
this project's machine type and 0.86-0.94 on another), so a step's
seconds say little alone. What does is its efficiency: the step's FLOPs
per second over the best kernel's rate, measured in the same run, right
before and right after it (:func:`efficiency`).

The kernels, each in fp32 and/or bf16 (``NAME_DTYPE`` keys, TFLOP/s):

* ``matmul``: a 1024² matrix product;
* ``conv3x3``: SD's widest 3×3 convolution (1,280 channels on the 16×16
  map of a 512² image's deepest level), with PyTorch's plain module;
* ``packed_conv3x3`` and ``packed_linear``: the UNet's commonest 3×3
  convolution (320 channels, 64×64, a batch of 2 as in a guided 512² step)
  and its widest top-level product (the GEGLU projection, 8,192 rows ×
  320 → 2,560), with weights pre-packed for oneDNN exactly as
  :mod:`engines.diffusion.cpu_speedups` packs the UNet's. These are the
  kernels the engine's step runs, and the fastest measured here; only
  where oneDNN packs that dtype (bf16: AVX-512 or AMX).

Sized so that an emulated bf16 (a CPU without AVX-512 BF16, at a few
GFLOP/s) still takes seconds, not minutes, for bench_turbo's report.
"""

from __future__ import annotations

import time
from typing import Iterable

DTYPES = ("fp32", "bf16")
MATMUL_N = 1024
WIDE_CONV = (1280, 16, 1)  # channels, side, batch
PACKED_CONV = (320, 64, 2)
PACKED_LINEAR = (8192, 320, 2560)  # rows, in, out


def best_seconds(fn, repeats: int = 3, warm_up: bool = True) -> float:
    """The fastest of ``repeats`` calls of ``fn``, after an untimed warm-up (oneDNN builds a kernel per shape once)."""
    if warm_up:
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _conv_flops(channels: int, side: int, batch: int) -> int:
    return 2 * channels * channels * 9 * side * side * batch


def _dtype_rates(dtype: str, repeats: int) -> dict[str, float]:
    import torch

    from engines.diffusion.cpu_speedups import PackedConv2d, PackedLinear, onednn_packing_available_for

    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    kernels = {}
    a, b = torch.randn(MATMUL_N, MATMUL_N, dtype=torch_dtype), torch.randn(MATMUL_N, MATMUL_N, dtype=torch_dtype)
    kernels["matmul"] = (lambda: torch.mm(a, b), 2 * MATMUL_N**3)
    channels, side, batch = WIDE_CONV
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(torch_dtype).eval()
    x = torch.randn(batch, channels, side, side, dtype=torch_dtype)
    kernels["conv3x3"] = (lambda: conv(x), _conv_flops(*WIDE_CONV))
    if onednn_packing_available_for(dtype):
        channels, side, batch = PACKED_CONV
        with torch.no_grad():
            packed = PackedConv2d(torch.nn.Conv2d(channels, channels, 3, padding=1).to(torch_dtype))
        px = torch.randn(batch, channels, side, side, dtype=torch_dtype)
        kernels["packed_conv3x3"] = (lambda: packed(px), _conv_flops(*PACKED_CONV))
        rows, width_in, width_out = PACKED_LINEAR
        with torch.no_grad():
            linear = PackedLinear(torch.nn.Linear(width_in, width_out).to(torch_dtype))
        lx = torch.randn(rows, width_in, dtype=torch_dtype)
        kernels["packed_linear"] = (lambda: linear(lx), 2 * rows * width_in * width_out)
    rates = {}
    with torch.inference_mode():
        for name, (fn, flops) in kernels.items():
            rates[f"{name}_{dtype}"] = round(flops / best_seconds(fn, repeats) / 1e12, 4)
    return rates


def kernel_rates(dtypes: Iterable[str] = DTYPES, repeats: int = 2) -> dict[str, float]:
    """TFLOP/s of each kernel (see the module docstring) in each of ``dtypes``, best of ``repeats`` after a warm-up."""
    rates: dict[str, float] = {}
    for dtype in dtypes:
        rates.update(_dtype_rates(dtype, repeats))
    return rates


def best_kernel(rates: dict[str, float], dtype: str) -> tuple[str, float]:
    """(name, TFLOP/s) of the fastest kernel of ``dtype`` in ``rates``."""
    mine = {name: rate for name, rate in rates.items() if name.endswith(f"_{dtype}")}
    if not mine:
        raise ValueError(f"no {dtype} kernel was measured")
    name = max(mine, key=mine.get)
    return name, mine[name]


def efficiency(step_flops: float, step_seconds: float, kernel_tflops: float) -> float:
    """The share of the kernel's rate a step reaches: its FLOPs per second over the kernel's (0.56 = 56%)."""
    if step_seconds <= 0 or kernel_tflops <= 0:
        raise ValueError("a step's seconds and a kernel's rate must be positive")
    return step_flops / step_seconds / (kernel_tflops * 1e12)


def step_efficiency(step_flops: dict[str, float], step_seconds: float, dtype: str,
                    before: dict[str, float], after: dict[str, float]) -> dict:
    """A step's efficiency against the better of two kernel measurements, taken right before and after it.

    ``step_flops``: :func:`benchmarks.step_flops.unet_step_flops`'s
    ``total`` and ``attention``. Besides the headline (every FLOP the step
    computes), the share without attention is given too: an earlier figure
    (52% of the best bf16 kernel) was counted that way, because PyTorch's
    FLOP counter does not see the CPU flash-attention kernel.
    """
    name_before, rate_before = best_kernel(before, dtype)
    name_after, rate_after = best_kernel(after, dtype)
    name, rate = (name_before, rate_before) if rate_before >= rate_after else (name_after, rate_after)
    total, attention = step_flops["total"], step_flops["attention"]
    return {
        "step_tflop": round(total / 1e12, 4),
        "step_tflop_without_attention": round((total - attention) / 1e12, 4),
        "step_tflops": round(total / step_seconds / 1e12, 4),
        "kernel_tflops_before": before,
        "kernel_tflops_after": after,
        "best_kernel": name,
        "best_kernel_tflops": rate,
        "efficiency_pct": round(100 * efficiency(total, step_seconds, rate), 1),
        "efficiency_without_attention_pct": round(100 * efficiency(total - attention, step_seconds, rate), 1),
    }
