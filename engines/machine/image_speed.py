"""Expected speed of an image model: seconds per image on this machine's CPU.

Diffusion is bound by arithmetic, so the estimate is the FLOPs one image
takes divided by a compute rate:

    FLOPs = text encoder × prompts + steps × UNet × prompts + VAE decoder

where *prompts* is 2 with classifier-free guidance (the negative prompt
runs too) and 1 without (Turbo models). The FLOPs of each part at 512×512
(``ARCHITECTURES``) were counted with ``torch.utils.flop_counter`` on the
real configurations (UNets built on the meta device: SD 1.5 0.80 TFLOP,
4.67 at 1024×1024; SDXL 1.59, 6.76 at 1024×1024; the VAE decoder 2.48,
from verified-on-this-machine.md; the text encoders are 2 × parameters × 77
tokens). They grow with the pixel count, and the UNet's self-attention
share (0.15 for SD, 0.02 for SDXL, from the two sizes) with its square.

The compute rate is numpy's float32 matrix product measured on this
machine (:mod:`engines.machine.machine_speed`) times a factor per engine
(``ENGINE_FACTORS``), calibrated so:

* PyTorch fp32, 1.0: on this project's 2-core machine, measured in one run
  and interleaved, numpy's product reached 31-54 GFLOP/s and PyTorch's
  oneDNN 3×3 convolution (320 channels, 64×64, batch 2) 75-77; a whole
  UNet step runs at about 0.6 of such a convolution's rate (the README's
  benchmark: 0.56 TFLOP/s for a step against 0.86-0.94 for the kernel), so
  the UNet runs at about numpy's rate;
* PyTorch bf16, 2.4 (only on CPUs with native bf16): the README's SD 1.5
  step took 6.83 s in fp32 and 2.87 s in bf16;
* ONNX Runtime fp32, 1.25: the same step took 5.44 s;
* the VAE decoder runs at two thirds of the UNet's rate (``VAE_SHARE_OF_RATE``:
  the README's SD-Turbo image, 9.6 s, less its UNet step).

This is a guide within a factor of about two (on the README's AVX-512
machine it underestimates PyTorch, whose kernels gain more there than
numpy's); the seconds a model really took are kept after its first image
and shown beside the estimate. On a GPU there is no estimate (None): the
speed is measured after the first image.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.machine.speed import SpeedEstimate

T = 1e12


@dataclass(frozen=True)
class Architecture:
    """TFLOP of one pass of each part at 512×512 (a 64×64 latent), batch 1."""

    label: str
    text_encoder: float
    unet: float
    vae_decoder: float
    attention_share: float  # of the UNet's FLOPs, in self-attention, which grows with the pixel count squared


ARCHITECTURES = {
    "sd15": Architecture("SD 1.5", 0.019, 0.80, 2.48, 0.15),  # CLIP ViT-L text encoder
    "sd21": Architecture("SD 2.1", 0.045, 0.80, 2.48, 0.15),  # OpenCLIP ViT-H text encoder; SD-Turbo is one
    "sdxl": Architecture("SDXL", 0.126, 1.59, 2.48, 0.02),  # CLIP ViT-L + OpenCLIP bigG; no attention at the top level
}
BASE_ARCHITECTURE = {"sd15": "sd15", "sd21": "sd21", "sd-turbo": "sd21", "sdxl": "sdxl", "sdxl-turbo": "sdxl"}
# How much faster than numpy's float32 matrix product each engine computes (see the module docstring).
ENGINE_FACTORS = {("torch", "fp32"): 1.0, ("torch", "bf16"): 2.4, ("onnx", "fp32"): 1.25}
VAE_SHARE_OF_RATE = 0.66


def image_flops(architecture: Architecture, size: int, steps: int, guided: bool) -> float:
    """FLOPs of one *size*×*size* image with *steps* denoising steps."""
    r = (size / 512) ** 2
    prompts = 2 if guided else 1
    unet = architecture.unet * ((1 - architecture.attention_share) * r + architecture.attention_share * r * r)
    return T * (architecture.text_encoder * prompts + steps * unet * prompts + architecture.vae_decoder * r)


def estimate_image_speed(base: str | None, size: int, steps: int, guidance: float, *, matmul_flops: float,
                         backend: str = "torch", dtype: str = "bf16", on_gpu: bool = False) -> SpeedEstimate | None:
    """Seconds per image on this CPU; None on a GPU or for an architecture we have no figures for."""
    architecture = ARCHITECTURES.get(BASE_ARCHITECTURE.get(base or "", ""))
    factor = ENGINE_FACTORS.get((backend, dtype))
    if on_gpu or architecture is None or factor is None or matmul_flops <= 0:
        return None
    guided = guidance > 1.0
    rate = matmul_flops * factor
    r = (size / 512) ** 2
    vae = architecture.vae_decoder * r * T
    rest = image_flops(architecture, size, steps, guided) - vae
    seconds = rest / rate + vae / (rate * VAE_SHARE_OF_RATE)
    noun = "step" if steps == 1 else "steps"
    basis = (f"{image_flops(architecture, size, steps, guided) / T:.1f} TFLOP for a {size}×{size} {architecture.label} "
             f"image in {steps} {noun}{' with guidance' if guided else ''}, at {rate / T:.2f} TFLOP/s "
             f"({backend_label(backend, dtype)} on this CPU)")
    return SpeedEstimate(seconds, "s/image", basis)


def backend_label(backend: str, dtype: str) -> str:
    return f"ONNX Runtime {dtype}" if backend == "onnx" else f"PyTorch {dtype}"


def default_steps(name: str, distilled: bool) -> tuple[int, float]:
    """(steps, guidance) the Images page starts a model with: few and none for Turbo/LCM, else 20 at 7."""
    if not distilled:
        return 20, 7.0
    return (4, 1.0) if "lcm" in name.lower() else (2, 0.0)
