"""Live previews: latents → a small RGB PNG by a fixed linear projection.

Decoding latents with the VAE for every step would cost as much as a
UNet step on CPU. A 4→3 linear map, fitted once by the ComfyUI/A1111
authors against the real VAEs, gives a recognisable colour sketch at latent
resolution (64×64 for a 512×512 image) in about a millisecond, PNG encoding
included. The factors apply to latents as the pipelines hold them (already
multiplied by the VAE's scaling factor).

Fed the scheduler's prediction of the clean image (x0) the preview shows
the picture forming; fed the noisy latents of the current step (all that
DPM++ exposes) it shows the picture under noise, which is still useful.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Rows: latent channels 0..3; columns: R, G, B. From ComfyUI's comfy/latent_formats.py.
SD15_FACTORS = np.array(
    [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
    dtype=np.float32,
)
SD15_BIAS = np.zeros(3, dtype=np.float32)
SDXL_FACTORS = np.array(
    [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
    dtype=np.float32,
)
SDXL_BIAS = np.array([0.1084, -0.0175, -0.0011], dtype=np.float32)


def latents_to_rgb(latents, family: str = "sd") -> np.ndarray:
    """One latent (C×H×W, numpy or torch; a leading batch axis takes the first) → H×W×3 uint8."""
    if hasattr(latents, "detach"):  # a torch tensor, possibly bf16 or on a GPU
        latents = latents.detach().float().cpu().numpy()
    array = np.asarray(latents, dtype=np.float32)
    if array.ndim == 4:
        array = array[0]
    if array.shape[0] != 4:
        raise ValueError(f"expected 4 latent channels, got shape {array.shape}")
    factors, bias = (SDXL_FACTORS, SDXL_BIAS) if family == "sdxl" else (SD15_FACTORS, SD15_BIAS)
    rgb = np.tensordot(array, factors, axes=([0], [0])) + bias  # H×W×3
    return (np.clip((rgb + 1.0) * 127.5, 0.0, 255.0)).astype(np.uint8)


def preview_png(latents, family: str = "sd") -> bytes:
    """A PNG of the projected latents; fast compression because it is thrown away a step later."""
    out = io.BytesIO()
    Image.fromarray(latents_to_rgb(latents, family), "RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()
