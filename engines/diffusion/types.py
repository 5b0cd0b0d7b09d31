"""Requests, results and events of the image engines.

Like :mod:`engines.api`, everything here is a frozen, plain dataclass
that crosses to the engine host unchanged (msgspec, see
:mod:`engines.host.payloads`), and importing this module is cheap (no
torch, no diffusers) so the GUI can build and validate requests without
loading an engine.

A result carries the exact request that produced it plus the seed actually
used for every image, so any image can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engines.byte_sizes import format_bytes

Backend = Literal["auto", "torch", "onnx"]
Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "fp32", "bf16", "fp16"]

# The sampler names the user sees (AUTOMATIC1111's names, so PNG metadata reads the same there).
SCHEDULER_NAMES: tuple[str, ...] = ("Euler", "Euler a", "DPM++ 2M Karras", "DDIM", "LCM")
MIN_SIZE, MAX_SIZE = 64, 2048
MAX_SEED = 2**32 - 1

MAX_BATCH = 16
MAX_LORAS = 8  # LoRAs applied at once; each is fused into the weights (engines.diffusion.lora)
MAX_LORA_WEIGHT = 10.0  # a weight beyond ±10 only turns the image to noise
# Init images: a photo from any camera fits (a 50 MP JPEG is ~25 MB); a decompression bomb or /dev/zero does not.
# Decoding 64 MP as RGB takes ~200 MB, the most an img2img source that is resized to 2048 px at most should cost.
MAX_INIT_IMAGE_BYTES = 64_000_000  # "64 MB": decimal, as every size is shown (engines.byte_sizes)
MAX_INIT_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class ImageLoadSpec:
    """How to load an image model. "auto" lets the engine choose what measured best here."""

    model_path: str
    backend: Backend = "auto"
    device: Device = "auto"
    dtype: DType = "auto"
    # Pre-packed weights and sliced attention on the CPU (engines.diffusion.cpu_speedups); off only to compare.
    cpu_speedups: bool = True

    def validate(self) -> list[str]:
        problems = []
        if self.backend not in ("auto", "torch", "onnx"):
            problems.append(f"backend must be auto, torch or onnx, not {self.backend!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            problems.append(f"device must be auto, cpu, cuda or mps, not {self.device!r}")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"precision must be auto, fp32, bf16 or fp16, not {self.dtype!r}")
        return problems


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to apply: its ``.safetensors`` file, its weight, and the name the PNG records (``<lora:name:w>``).

    ``path`` is empty only in a request read back from another tool's PNG,
    which names its LoRAs without files; such a request must have them
    found in the library before it can run.
    """

    path: str
    weight: float = 1.0
    name: str = ""

    @property
    def label(self) -> str:
        """The name in ``<lora:name:weight>``: the given one, else the file's stem."""
        if self.name:
            return self.name
        stem = self.path.replace("\\", "/").rsplit("/", 1)[-1]
        return stem.rsplit(".", 1)[0] if "." in stem else stem

    def validate(self) -> list[str]:
        if not self.path:
            return [f"the LoRA '{self.label}' has no file (add it to the library, or give its path)"]
        if not isinstance(self.weight, (int, float)) or not -MAX_LORA_WEIGHT <= self.weight <= MAX_LORA_WEIGHT:
            return [f"the weight of the LoRA '{self.label}' must be between -{MAX_LORA_WEIGHT:g} and "
                    f"{MAX_LORA_WEIGHT:g} (got {self.weight})"]
        return []


@dataclass(frozen=True)
class ImageRequest:
    """One text-to-image (or, with ``init_image``, image-to-image) job of ``batch_count`` images.

    With ``init_image`` and a ``mask`` and/or ``outpaint`` margins it is an
    inpainting job: only the masked part and the new margins are repainted.
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance: float = 7.0
    scheduler: str = "Euler"
    seed: int | None = None  # None: a fresh random seed, reported in the result
    batch_count: int = 1  # images made one after another with seeds seed, seed+1, ...
    init_image: bytes | None = None  # an encoded image file (PNG, JPEG, WebP...) for img2img
    strength: float = 0.75  # img2img: how much of the init image is replaced by noise
    preview_every: int = 1  # a PreviewEvent every N steps; 0 turns previews off
    # The final decode: "full" (the model's own VAE) or a tiny VAE folder (TAESD/TAESDXL, engines.diffusion.taesd),
    # several times faster for a slight loss of detail. Front ends turn "--vae tiny" into the installed folder.
    vae: str = "full"
    # A tiny VAE folder that decodes every preview into a real picture; "" projects the latents' colours instead.
    preview_vae: str = ""
    # "Faster, slight quality loss": the UNet runs in full every N steps and reuses its deep features in between
    # (engines.diffusion.deep_cache, PyTorch backend). 0 or 1: every step in full.
    deep_cache: int = 0
    loras: tuple[LoraSpec, ...] = ()  # applied in order, each with its weight (PyTorch backend: engines.diffusion.lora)
    # Inpainting (engines.diffusion.inpaint): an encoded image of the init image's size, white where the model repaints.
    mask: bytes | None = None
    # Outpainting: pixels added on the (left, right, top, bottom) of the init image, multiples of 8, then inpainted.
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)

    def validate(self) -> list[str]:
        """Human-readable problems, empty when the request is usable by any model."""
        problems = []
        if not self.prompt or not self.prompt.strip():
            problems.append("the prompt is empty")
        for label, value in (("width", self.width), ("height", self.height)):
            if not isinstance(value, int) or not MIN_SIZE <= value <= MAX_SIZE:
                problems.append(f"{label} must be between {MIN_SIZE} and {MAX_SIZE} pixels (got {value})")
            elif value % 8:
                problems.append(f"{label} must be a multiple of 8 (got {value}; try {round(value / 8) * 8})")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 150:
            problems.append(f"steps must be between 1 and 150 (got {self.steps})")
        if not 0.0 <= self.guidance <= 30.0:
            problems.append(f"guidance (CFG scale) must be between 0 and 30 (got {self.guidance})")
        if self.scheduler not in SCHEDULER_NAMES:
            problems.append(f"unknown sampler {self.scheduler!r}; choose one of: {', '.join(SCHEDULER_NAMES)}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED):
            problems.append(f"seed must be between 0 and {MAX_SEED} (got {self.seed})")
        if not isinstance(self.batch_count, int) or not 1 <= self.batch_count <= MAX_BATCH:
            problems.append(f"batch count must be between 1 and {MAX_BATCH} (got {self.batch_count})")
        if not isinstance(self.preview_every, int) or self.preview_every < 0:
            problems.append("preview interval must be 0 (off) or a number of steps")
        if len(self.loras) > MAX_LORAS:
            problems.append(f"at most {MAX_LORAS} LoRAs can be applied at once (got {len(self.loras)})")
        for lora in self.loras:
            problems.extend(lora.validate())
        if not isinstance(self.deep_cache, int) or not 0 <= self.deep_cache <= 5:
            problems.append(f"step caching must reuse features for 0 to 5 steps (got {self.deep_cache})")
        for label, vae in (("VAE", self.vae if self.vae != "full" else ""), ("preview VAE", self.preview_vae)):
            if not isinstance(vae, str):
                problems.append(f"the {label} must be 'full' or a tiny VAE folder (got {vae!r})")
            elif vae:
                from engines.diffusion.taesd import tiny_vae_problem  # cheap: json and pathlib, no torch

                problem = tiny_vae_problem(vae)
                if problem:
                    problems.append(problem.rstrip("."))
        if self.init_image is not None:
            # b"" is an init image too (an empty file): refused here, never silently treated as txt2img.
            if not isinstance(self.init_image, bytes) or not self.init_image:
                problems.append("the init image is empty (0 bytes)")
            elif len(self.init_image) > MAX_INIT_IMAGE_BYTES:
                problems.append(f"the init image is larger than {format_bytes(MAX_INIT_IMAGE_BYTES)}")
            if not 0.0 < self.strength <= 1.0:
                problems.append(f"strength must be above 0 and at most 1 (got {self.strength})")
            elif isinstance(self.steps, int) and 1 <= self.steps and int(self.steps * self.strength) < 1:
                problems.append(
                    f"with strength {self.strength} and {self.steps} steps no denoising step would run "
                    f"(img2img runs steps × strength steps); raise the steps or the strength"
                )
        problems.extend(self._inpaint_problems())
        return problems

    def _inpaint_problems(self) -> list[str]:
        """The mask's and the outpaint margins' problems (the mask is decoded: engines.diffusion.inpaint)."""
        if self.mask is None and self.outpaint == (0, 0, 0, 0):
            return []
        problems = []
        what = "a mask" if self.mask is not None else "outpainting"
        if self.init_image is None:
            problems.append(f"{what} needs an init image to paint on (--init-image, or a starting image)")
        if self.mask is not None and (not isinstance(self.mask, bytes) or not self.mask):
            problems.append("the mask is empty (0 bytes)")
        elif self.mask is not None and len(self.mask) > MAX_INIT_IMAGE_BYTES:
            problems.append(f"the mask is larger than {format_bytes(MAX_INIT_IMAGE_BYTES)}")
        sides = self.outpaint
        if (not isinstance(sides, (tuple, list)) or len(sides) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in sides)):
            return problems + ["outpaint must be four whole numbers of pixels: left, right, top, bottom"]
        for name, value in zip(("left", "right", "top", "bottom"), sides):
            if value < 0 or value % 8:
                nearest = max(0, round(value / 8) * 8)
                problems.append(f"outpaint {name} must be a multiple of 8 pixels, 0 or more (got {value}; "
                                f"try {nearest})")
        out_width, out_height = self.output_size
        if max(out_width, out_height) > MAX_SIZE:
            problems.append(f"with outpainting the image would be {out_width}×{out_height} pixels; at most "
                            f"{MAX_SIZE} pixels a side")
        if self.mask and isinstance(self.mask, bytes) and not problems:
            from engines.diffusion.inpaint import mask_problems  # Pillow, imported only for a mask

            problems.extend(mask_problems(self.init_image, self.mask, outpainting=any(sides)))
        return problems

    @property
    def inpainting(self) -> bool:
        """A mask or outpaint margins: the inpaint pipeline repaints part of the init image."""
        return self.mask is not None or any(self.outpaint)

    @property
    def output_size(self) -> tuple[int, int]:
        """The (width, height) of the images made: the request's size plus any outpaint margins."""
        left, right, top, bottom = (v if isinstance(v, int) else 0 for v in tuple(self.outpaint)[:4])
        return self.width + left + right, self.height + top + bottom

    @property
    def denoising_steps(self) -> int:
        """The UNet steps one image really takes (img2img skips the first part of the schedule)."""
        if self.init_image is None:
            return self.steps
        return min(int(self.steps * self.strength), self.steps)


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes  # with the parameters in its metadata (see png_meta)
    seed: int
    width: int
    height: int
    parameters: str  # AUTOMATIC1111-style "parameters" text, as written into the PNG


@dataclass(frozen=True)
class ImageResult:
    # Every finished image, in order. A cancelled run holds the images finished before the cancel (each
    # already sent as an ImageDoneEvent), never the one it interrupted: a half-denoised image never passes
    # as finished.
    images: tuple[GeneratedImage, ...]
    request: ImageRequest
    backend: str  # "torch" or "onnx"
    device: str  # "cpu", "cuda", "mps", or the ONNX Runtime provider's short name
    dtype: str  # "fp32", "bf16", "fp16"
    model_name: str
    seconds: float
    seconds_per_step: float  # steady-state UNet step time (first step excluded when there are more)
    cancelled: bool

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(image.seed for image in self.images)


@dataclass(frozen=True)
class ImageModelInfo:
    """What a loaded image model turned out to be, and how it runs."""

    path: str
    name: str
    pipeline_class: str
    backend: str
    device: str
    dtype: str
    native_size: int  # the resolution it was trained at (512 for SD 1.x, 1024 for SDXL)
    schedulers: tuple[str, ...]  # the samplers this model can use


# ---- events -------------------------------------------------------------


@dataclass(frozen=True)
class StepEvent:
    step: int  # 1-based, within the current image
    total: int  # denoising steps of the current image
    image_index: int  # 0-based
    batch_count: int
    eta_s: float | None  # seconds left for the whole batch, once a step has been timed


@dataclass(frozen=True)
class ImageDoneEvent:
    """One image of the batch is finished: front ends save it at once, before the next one starts.

    This is what makes a cancel, a Ctrl-C or a crashed engine keep every
    image made so far: nothing waits for the end of the batch.
    """

    image: GeneratedImage
    image_index: int  # 0-based, within the batch
    batch_count: int


@dataclass(frozen=True)
class PreviewEvent:
    step: int
    png: bytes  # a small PNG (latent resolution) approximating the image so far
    image_index: int = 0
