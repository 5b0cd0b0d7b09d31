"""A tiny VAE (TAESD for SD 1.x/2.x, TAESDXL for SDXL): real previews at every step, and a fast final decode.

The full SD VAE decoder costs 2.48 TFLOP for a 512² image, 3.7× the
UNet's one step: on a CPU it is most of a one-step Turbo image, and far
too much to run for a preview after every step. TAESD (madebyollin/taesd,
``diffusers.AutoencoderTiny``) is a distilled decoder of about 1.2 M
parameters that reads the same latents, as the UNet holds them (scaled:
its ``scaling_factor`` is 1), and decodes them for 0.14 TFLOP at 512²
(``torch.utils.flop_counter``; 5.7% of the full decoder), with a slight
loss of fine detail. So it serves twice:

* **previews**: the scheduler's clean-image prediction decoded to a real
  picture, instead of :mod:`engines.diffusion.preview`'s 4→3 colour
  projection. The latents are first average-pooled to at most
  :data:`PREVIEW_LATENT_SIDE` per side, so a preview costs 0.035 TFLOP,
  a quarter of a full TAESD decode at 512² (a 256² picture: what a preview
  pane shows anyway), and stays the same at any image size;
* **the final decode** when the user asks for speed (``--vae tiny``).

Only folders in the diffusers layout with safetensors weights are loaded
(never the pickled ``.pth``/``.bin`` files those repositories also hold),
and each problem with a folder is a sentence, checked without torch by
:func:`tiny_vae_problem` so the front ends can refuse it before an engine
starts.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from engines.errors import EngineError, ErrorKind

WEIGHTS = "diffusion_pytorch_model.safetensors"
PREVIEW_LATENT_SIDE = 32  # latents pooled to at most 32 per side: a 256² preview whatever the image's size
DECODE_FLOP_512 = 141_400_000_000  # TAESD's decoder on 64×64 latents (a 512² image), by torch.utils.flop_counter


def tiny_vae_problem(path: str | Path) -> str:
    """Why ``path`` is not a usable tiny VAE folder, in a sentence; "" when it is. Cheap: no torch."""
    folder = Path(path)
    if not folder.exists():
        return f"The tiny VAE {folder} does not exist."
    if not folder.is_dir():
        return (f"The tiny VAE {folder} is a file; give the folder that holds its config.json and {WEIGHTS} "
                "(as madebyollin/taesd publishes it).")
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{folder} is not a tiny VAE folder: it has no config.json."
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"The tiny VAE's {config_file} cannot be read ({exc})."
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if kind != "AutoencoderTiny":
        return (f"{folder} is not a tiny VAE: its config.json describes {kind or 'no model class'}, "
                "not an AutoencoderTiny (TAESD, TAESDXL).")
    if not (folder / WEIGHTS).is_file():
        return (f"The tiny VAE {folder} has no {WEIGHTS}. Atelier loads safetensors weights only, never "
                "pickled .bin or .pth files.")
    return ""


class TinyVae:
    """A loaded AutoencoderTiny on the CPU in fp32 (it is small: precision buys nothing here)."""

    def __init__(self, path: str | Path, latent_channels: int = 4, scale: int = 8) -> None:
        problem = tiny_vae_problem(path)
        if problem:
            raise EngineError(ErrorKind.MODEL_FILE, problem)
        import torch
        from diffusers import AutoencoderTiny

        self.path = str(path)
        try:
            model = AutoencoderTiny.from_pretrained(str(path), use_safetensors=True, torch_dtype=torch.float32)
        except Exception as exc:  # a truncated or foreign safetensors file, a config with wrong sizes
            raise EngineError(ErrorKind.MODEL_FILE,
                              f"The tiny VAE {path} could not be loaded: {str(exc).splitlines()[0]}") from None
        channels = int(model.config.latent_channels)
        if channels != latent_channels:
            raise EngineError(ErrorKind.BAD_INPUT,
                              f"The tiny VAE {path} reads {channels}-channel latents, but this model makes "
                              f"{latent_channels}-channel ones: choose the tiny VAE of the model's family "
                              "(TAESD for SD 1.x/2.x, TAESDXL for SDXL).")
        config = model.config
        tiny_scale = int(config.upsampling_scaling_factor) ** (len(config.decoder_block_out_channels) - 1)
        if tiny_scale != scale:
            raise EngineError(ErrorKind.BAD_INPUT,
                              f"The tiny VAE {path} enlarges latents {tiny_scale}×, but this model's VAE "
                              f"enlarges them {scale}×: it was made for another kind of model.")
        self._model = model.eval()

    def decode(self, latents):
        """Latents as the UNet holds them (N×C×h×w, any dtype) → images in [-1, 1], N×3×8h×8w, fp32."""
        import torch

        with torch.inference_mode():
            return self._model.decode(latents.detach().float().cpu(), return_dict=False)[0]

    def preview_rgb(self, latents):
        """The first latent of a batch, pooled to at most :data:`PREVIEW_LATENT_SIDE`, decoded: H×W×3 uint8."""
        import torch

        latents = latents.detach().float().cpu()
        if latents.ndim == 3:
            latents = latents.unsqueeze(0)
        latents = latents[:1]
        factor = math.ceil(max(latents.shape[-2:]) / PREVIEW_LATENT_SIDE)
        if factor > 1:
            latents = torch.nn.functional.avg_pool2d(latents, factor, ceil_mode=True)
        pixels = self.decode(latents)[0]
        return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def preview_png(self, latents) -> bytes:
        """A PNG of :meth:`preview_rgb`; fast compression because it is thrown away a step later."""
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(self.preview_rgb(latents), "RGB").save(out, format="PNG", compress_level=1)
        return out.getvalue()


class TinyVaes:
    """The tiny VAEs an engine has loaded, by folder: a few MB each, so they stay loaded with the model."""

    def __init__(self, latent_channels: int, scale: int) -> None:
        self._latent_channels = latent_channels
        self._scale = scale
        self._loaded: dict[str, TinyVae] = {}

    def get(self, path: str) -> TinyVae | None:
        """The tiny VAE in ``path`` ("" or "full": None, the model's own VAE)."""
        if not path or path == "full":
            return None
        key = str(Path(path).resolve())
        if key not in self._loaded:
            self._loaded[key] = TinyVae(path, self._latent_channels, self._scale)
        return self._loaded[key]
