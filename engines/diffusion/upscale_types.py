"""Requests, results and model info of the upscaler engine (:mod:`engines.diffusion.upscale`).

Plain frozen dataclasses, like :mod:`engines.diffusion.types`: they cross
to the engine host unchanged (msgspec, :mod:`engines.host.payloads`), and
importing them costs nothing (no torch), so a front end builds and checks
a request before any engine starts. Progress comes as
:class:`engines.api.ProgressEvent` (stage ``"upscale"``, one per tile).
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.byte_sizes import format_bytes
from engines.diffusion.types import MAX_INIT_IMAGE_BYTES, Device, DType

SCALES = (2, 3, 4, 8)  # what ``--scale`` may ask for; a model's own scale is one of 1, 2, 4, 8
MIN_TILE, MAX_TILE = 32, 1024  # tile edge in source pixels (0 in a request: chosen from the model and memory)
MIN_SOURCE_SIDE = 8  # Real-ESRGAN's ×2 model unshuffles by 2 and pads by reflection: a few pixels are needed
UPSCALE_STAGE = "upscale"  # the ProgressEvent stage of each finished tile


@dataclass(frozen=True)
class UpscaleLoadSpec:
    """An ESRGAN-family upscaler file (``.safetensors``) and how to run it ("auto": what suits this machine)."""

    model_path: str
    device: Device = "auto"
    dtype: DType = "auto"

    def validate(self) -> list[str]:
        problems = []
        if not self.model_path:
            problems.append("no upscaler file was given")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            problems.append(f"device must be auto, cpu, cuda or mps, not {self.device!r}")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"precision must be auto, fp32, bf16 or fp16, not {self.dtype!r}")
        return problems


@dataclass(frozen=True)
class UpscaleRequest:
    """Make ``image`` ``scale`` times larger on each side.

    ``scale`` None means the model's own (×4 for a ×4 model). Another scale
    runs the model as many times as it takes to reach it, then shrinks with
    Lanczos to the exact size: a ×4 model asked for ×2 runs once and halves;
    a ×2 model asked for ×4 runs twice. ``source_name`` is only for the record.
    """

    image: bytes  # the encoded source image (PNG, JPEG, WebP or BMP)
    scale: int | None = None
    tile: int = 0  # tile edge in source pixels; 0: the largest that keeps a tile's memory bounded
    source_name: str = ""

    def validate(self) -> list[str]:
        problems = []
        if not isinstance(self.image, bytes) or not self.image:
            problems.append("the image to upscale is empty (0 bytes)")
        elif len(self.image) > MAX_INIT_IMAGE_BYTES:
            problems.append(f"the image to upscale is larger than {format_bytes(MAX_INIT_IMAGE_BYTES)}")
        if self.scale is not None and self.scale not in SCALES:
            problems.append(f"the scale must be one of {', '.join(map(str, SCALES))} (got {self.scale})")
        if not isinstance(self.tile, int) or (self.tile and not MIN_TILE <= self.tile <= MAX_TILE):
            problems.append(f"the tile size must be 0 (automatic) or between {MIN_TILE} and {MAX_TILE} pixels "
                            f"(got {self.tile})")
        return problems


@dataclass(frozen=True)
class UpscalerInfo:
    """What a loaded upscaler turned out to be, and how it runs."""

    path: str
    name: str
    scale: int  # the model's own: output side ÷ input side
    architecture: str  # "RRDBNet"
    layout: str  # "basicsr" (Real-ESRGAN's key names) or "esrgan" (the original ones)
    blocks: int
    features: int
    device: str
    dtype: str


@dataclass(frozen=True)
class UpscaleResult:
    """The upscaled PNG and how it was made.

    The PNG keeps the source's ``parameters`` (and any other text it carried)
    and records the upscale step beside them (see
    :func:`engines.diffusion.png_meta.upscaled_png`).
    """

    png: bytes
    width: int
    height: int
    source_width: int
    source_height: int
    scale: int  # width ÷ source_width
    passes: int  # how many times the model ran over the image
    model_name: str
    device: str
    dtype: str
    tiles: int  # tiles per pass
    tile: int  # tile edge in source pixels
    seconds: float
    parameters: str | None  # the source's A1111 parameters, kept as they were (None: it had none)
