"""Will this image model run here? Weights at the run dtype plus activations.

Diffusion needs the pipeline's weights in memory at the dtype it runs in
(fp16 on a GPU; bf16 on a CPU that computes it natively, where an fp32
file is narrowed as it loads; fp32 on other CPUs, where fp16 files are
widened) plus the
activations of one denoising step and of the VAE decode, which grow with
the image's pixel count. Activations scale with the pipeline's channel
widths (read from its configs) and the pixel count; the live-map counts
were calibrated against the tiny pipeline and the SD 1.5-architecture
benchmark (benchmarks/bench_fit.py reports the error).

For a model folder on disk, :func:`folder_weights` counts what an engine
actually loads, not every file in the folder: SDXL base as downloaded holds
its UNet twice (fp32 and an ``.fp16`` variant, 10 + 5 GB) and often a
single-file checkpoint beside it, which summing every file would count
three times, while both of SDXL's text encoders must be counted.
:class:`PipelineShape` also gives the size the model was trained at, where
its activations are judged (1024² for SDXL, not 512²).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.byte_sizes import format_bytes
from engines.machine.fit import FitVerdict, MemoryNeed, ram_reserve

TORCH_OVERHEAD = 450 * 1024**2  # torch + diffusers + transformers imported in the engine host
ONNX_WEIGHT_COPIES = 2  # ONNX Runtime: the initializers as stored, plus the copies its CPU kernels pre-pack
VAE_LIVE_MAPS = 6  # full-resolution feature maps alive at once in the VAE decoder
UNET_LIVE_MAPS = 30  # feature maps alive at once in one UNet step
# The components the image engines load (never the safety checker, which they skip): SDXL has two text encoders.
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
_SAFETENSORS_DTYPES = {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}


@dataclass(frozen=True)
class PipelineShape:
    """The widths that set activation memory (the UNet's first block, the VAE's last) and the trained size."""

    unet_channels: int = 320
    vae_channels: int = 128
    vae_scale: int = 8
    native_size: int = 512  # pixels: the UNet's sample size × the VAE's scale
    # The UNet's highest-resolution self-attention: its level (0 = full latent size; SDXL starts at 1) and heads.
    first_attention_level: int = 0
    first_attention_heads: int = 8
    cross_attention_dim: int = 768  # the text encoder's width: tells SD 1.x (768), 2.x (1024) and SDXL (2048) apart

    @property
    def base(self) -> str | None:
        """"sd15", "sd21" or "sdxl" (the architectures :mod:`engines.machine.image_speed` knows), else None."""
        return {768: "sd15", 1024: "sd21", 2048: "sdxl"}.get(self.cross_attention_dim)

    @classmethod
    def from_folder(cls, folder: Path) -> "PipelineShape":
        """Read the configs of a diffusers folder; SD defaults for anything missing."""
        def config(name: str) -> dict:
            try:
                return json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}

        unet, vae = config("unet"), config("vae") or config("vae_decoder")
        vae_blocks = vae.get("block_out_channels") or [128, 256, 512, 512]
        unet_blocks = unet.get("block_out_channels") or [320]
        scale = 2 ** (len(vae_blocks) - 1)
        sample_size = unet.get("sample_size")
        native = int(sample_size) * scale if isinstance(sample_size, int) and sample_size > 0 else 512
        level, heads = _first_attention(unet)
        cross = unet.get("cross_attention_dim")
        cross = cross if isinstance(cross, int) and cross > 0 else (768 if not unet else 0)
        return cls(int(unet_blocks[0]), int(vae_blocks[0]), scale, native, level, heads, cross)


def _first_attention(unet: dict) -> tuple[int, int]:
    """(level, heads) of the UNet's first attention block; SD 1.x defaults when the config is unusual.

    diffusers' UNet configs name the head count ``attention_head_dim`` (a
    historical slip it keeps for compatibility) unless ``num_attention_heads``
    is set; either may be one number or one per level.
    """
    kinds = unet.get("down_block_types") or ["CrossAttnDownBlock2D"]
    level = next((i for i, kind in enumerate(kinds) if "Attn" in str(kind)), 0)
    heads = unet.get("num_attention_heads") or unet.get("attention_head_dim") or 8
    if isinstance(heads, list):
        heads = heads[min(level, len(heads) - 1)] if heads else 8
    return level, int(heads) if isinstance(heads, int) and heads > 0 else 8


def _stored_dtype(path: Path) -> str | None:
    """The dtype of the first tensor in a .safetensors file, from its JSON header alone."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= 100 * 1024**2:
                return None
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    tensors = (v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict))
    return _SAFETENSORS_DTYPES.get(next(tensors, {}).get("dtype"))


def folder_weights(folder: Path) -> tuple[int, str]:
    """Bytes of weights an image engine loads from a diffusers or ONNX folder, and the dtype they are stored in.

    In a diffusers folder each loaded component counts once: its plain
    ``*.safetensors`` files, or its ``.fp16`` variant when that is all there
    is (as the engine loads them). The dtype is the UNet's, read from its
    file header, so fp16 weights under a plain name count as fp16. An ONNX
    folder holds one graph per component, all of which load.
    """
    if (folder / "unet" / "model.onnx").is_file():
        graphs = [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".onnx", ".onnx_data")]
        return sum(p.stat().st_size for p in graphs), "fp32"
    total, dtype = 0, "fp32"
    for component in WEIGHT_COMPONENTS:
        files = sorted((folder / component).glob("*.safetensors")) if (folder / component).is_dir() else []
        files = [p for p in files if ".fp16." not in p.name] or files
        total += sum(p.stat().st_size for p in files)
        if component == "unet" and files:
            dtype = _stored_dtype(files[0]) or ("fp16" if ".fp16." in files[0].name else "fp32")
    return total, dtype


_BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "bf16": 2}


def default_run_dtype(report) -> str:
    """The precision the PyTorch engine picks on "auto" (engines.diffusion.torch_engine.resolve_dtype)."""
    if report.gpus and not report.gpus[0].unified_memory:
        return "fp16"
    return "bf16" if report.cpu.native_bf16 else "fp32"


def run_dtype_factor(file_dtype: str, report, run_dtype: str | None = None) -> float:
    """Bytes per weight when running, relative to the file's."""
    run = run_dtype or default_run_dtype(report)
    return _BYTES_PER_WEIGHT.get(run, 4) / _BYTES_PER_WEIGHT.get(file_dtype, 4)


def estimate_image(weights_bytes: int, size: int, report, file_dtype: str = "fp16", batch: int = 1,
                   shape: PipelineShape = PipelineShape(), run_dtype: str | None = None,
                   runtime: str = "torch") -> MemoryNeed:
    """Weights at the run dtype + activations at ``size``² (fp32) + the runtime.

    ``runtime="onnx"``: ONNX Runtime keeps the graph's weights as stored plus
    its own pre-packed copies of them, and the exported graph computes
    attention in full, so the top level's score and probability matrices
    (batch 2 × heads × tokens² in fp32) are alive at once. For SD 1.5 at
    512×512 that is 2 × 4.3 GB + 2.1 GB + activations: 12.3 GB estimated,
    11.3 GB measured (benchmarks/bench_diffusion.py).
    """
    latent = (size // shape.vae_scale) ** 2
    vae = size * size * shape.vae_channels * 4 * VAE_LIVE_MAPS
    unet = latent * 2 * shape.unet_channels * 4 * UNET_LIVE_MAPS  # guidance doubles the batch
    if runtime == "onnx":
        tokens = latent // 4**shape.first_attention_level
        attention = 2 * shape.first_attention_heads * tokens * tokens * 4 * 2
        return MemoryNeed(weights_bytes * ONNX_WEIGHT_COPIES, batch * (vae + unet + attention), 0, TORCH_OVERHEAD)
    weights = int(weights_bytes * run_dtype_factor(file_dtype, report, run_dtype))
    return MemoryNeed(weights, batch * (vae + unet), 0, TORCH_OVERHEAD)


def judge_image_fit(weights_bytes: int, size: int, report, file_dtype: str = "fp16",
                    shape: PipelineShape = PipelineShape(), runtime: str = "torch") -> FitVerdict:
    need = estimate_image(weights_bytes, size, report, file_dtype, shape=shape, runtime=runtime)
    free = report.memory.available_bytes
    budget = max(0, free - ram_reserve(report.memory.total_bytes))
    weights, activations, runtime_bytes, total = (format_bytes(n, in_gb=True) for n in (
        need.weights_bytes, need.kv_cache_bytes, need.overhead_bytes, need.total_bytes))
    sentence = f"{weights} weights + {activations} activations at {size}×{size} + {runtime_bytes} runtime = {total}"
    gpu = next((g for g in report.gpus if g.free_bytes), None)
    if gpu is not None and not gpu.unified_memory and need.total_bytes - need.overhead_bytes <= gpu.free_bytes - 512 * 1024**2:
        return FitVerdict("gpu_full", "Runs fully on GPU",
                          f"{sentence}; it fits in the {format_bytes(gpu.free_bytes, in_gb=True)} free on the {gpu.name}.",
                          need, 1, 1, free, gpu.free_bytes)
    if need.total_bytes <= budget:
        where = "" if gpu is None else f" (the {gpu.name} has too little free memory)"
        return FitVerdict("cpu_only", "CPU only",
                          f"{sentence}; you have {format_bytes(free, in_gb=True)} free memory{where}. Expect seconds per step.",
                          need, 0, 1, free, gpu.free_bytes if gpu else 0)
    return FitVerdict("wont_fit", "Won't fit", f"{sentence}; you have {format_bytes(free, in_gb=True)} free memory.", need, 0, 1, free, 0,
                      ("A smaller image size or a smaller model would need less memory.",))
