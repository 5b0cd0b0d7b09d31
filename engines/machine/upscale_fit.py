"""Will an upscale fit in memory? The arithmetic the upscaler engine and the library share.

An ESRGAN upscaler is small (Real-ESRGAN ×4plus: 67 MB of weights), but
what it makes is not: a 2048×2048 image ×4 is 8192×8192 pixels. Atelier
upscales in tiles, so the network's activations are bounded by the tile
(:func:`tile_bytes`), whatever the image size; what still grows with the
image is the result itself, held as pixels, as a Pillow image and as the
encoded PNG on its way out (:data:`RESULT_COPIES`). The engine picks the
largest tile whose activations fit :data:`TILE_BUDGET` and a quarter of
the free memory, and refuses an image whose result cannot fit, with the
sum, before it starts (:func:`check_upscale_fits`). The library shows the
same sum for a 1024×1024 image as the upscaler's verdict
(:func:`judge_upscaler_fit`).
"""

from __future__ import annotations

from engines.byte_sizes import format_bytes
from engines.errors import EngineError, ErrorKind
from engines.machine.fit import FitVerdict, MemoryNeed, ram_reserve
from engines.machine.image_fit import TORCH_OVERHEAD

MiB = 1024**2
TILE_BUDGET = 1024 * MiB  # at most this much for one tile's activations, however much memory is free
TILE_CHOICES = (512, 384, 256, 192, 128, 96, 64)  # tile edges tried, largest first (source pixels)
# Feature maps of the network's full width alive at once at the output resolution: a convolution's input and
# output (the activations run in place). The dense blocks at the input resolution add about a quarter more.
LIVE_OUTPUT_MAPS = 2
BODY_SHARE = 1.25
RESULT_COPIES = 4  # the result's RGB bytes as pixels, as a Pillow image, as the PNG, and as the message carrying it
SOURCE_COPIES = 3  # the decoded source: its pixels, the padded copy the tiles are cut from, the alpha channel
MAX_RESULT_PIXELS = 16384 * 16384  # beyond this, a PNG that viewers (and Pillow's bomb check) refuse to open
VERDICT_SIZE = 1024  # the source size the library's verdict is stated for
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def tile_bytes(tile: int, context: int, scale: int, features: int, dtype: str = "fp32") -> int:
    """Activations of one tile (``tile`` source pixels square, ``context`` more on every side) at ``scale``."""
    side = (tile + 2 * context) * scale
    return int(side * side * features * DTYPE_BYTES.get(dtype, 4) * LIVE_OUTPUT_MAPS * BODY_SHARE)


def choose_tile(context: int, scale: int, features: int, dtype: str, free_bytes: int) -> int:
    """The largest tile in :data:`TILE_CHOICES` whose activations fit the budget (the smallest one at worst)."""
    budget = min(TILE_BUDGET, free_bytes // 4)
    for tile in TILE_CHOICES:
        if tile_bytes(tile, context, scale, features, dtype) <= budget:
            return tile
    return TILE_CHOICES[-1]


def upscale_need(weights_bytes: int, source: tuple[int, int], scale: int, tile: int, context: int, features: int,
                 dtype: str = "fp32") -> MemoryNeed:
    """Weights (as loaded) + one tile's activations + the source and the result held whole + the runtime."""
    width, height = source
    result = width * scale * height * scale * 3 * RESULT_COPIES + width * height * 3 * SOURCE_COPIES
    activations = tile_bytes(min(tile, max(width, height)), context, scale, features, dtype)
    return MemoryNeed(weights_bytes, activations, result, TORCH_OVERHEAD)


def need_sentence(need: MemoryNeed, source: tuple[int, int], scale: int, tile: int) -> str:
    """"0.07 GB weights + 0.68 GB for a 256-pixel tile + 0.81 GB for the 4096×4096 result + 0.47 GB runtime = …"."""
    width, height = source
    parts = (f"{format_bytes(need.weights_bytes, in_gb=True)} weights",
             f"{format_bytes(need.kv_cache_bytes, in_gb=True)} for a {tile}-pixel tile",
             f"{format_bytes(need.buffers_bytes, in_gb=True)} for the {width * scale}×{height * scale} result",
             f"{format_bytes(need.overhead_bytes, in_gb=True)} runtime")
    return " + ".join(parts) + f" = {format_bytes(need.total_bytes, in_gb=True)}"


def check_upscale_fits(need: MemoryNeed, source: tuple[int, int], scale: int, tile: int, free_bytes: int,
                       total_bytes: int) -> None:
    """Refuse (BAD_INPUT, with the sum) a result too large to open or to hold in the free memory."""
    width, height = source
    pixels = width * scale * height * scale
    if pixels > MAX_RESULT_PIXELS:
        raise EngineError(ErrorKind.BAD_INPUT, f"Upscaling {width}×{height} by {scale} would make a "
                          f"{width * scale}×{height * scale} image ({pixels / 1e6:.0f} megapixels); Atelier makes at "
                          f"most {MAX_RESULT_PIXELS // 1_000_000} megapixels. Use a smaller scale or a smaller image.")
    budget = max(0, free_bytes - ram_reserve(total_bytes))
    if need.total_bytes > budget:
        raise EngineError(ErrorKind.BAD_INPUT, f"Upscaling {width}×{height} by {scale} needs more memory than is "
                          f"free: {need_sentence(need, source, scale, tile)}; you have "
                          f"{format_bytes(free_bytes, in_gb=True)} free memory. Use a smaller scale or a smaller "
                          "image, or close other programs.")


def judge_upscaler_fit(weights_bytes: int, scale: int, report, features: int = 64) -> FitVerdict:
    """The library's verdict for an upscaler: a :data:`VERDICT_SIZE`-pixel square image at its own scale."""
    free, total = report.memory.available_bytes, report.memory.total_bytes
    gpu = next((g for g in report.gpus if g.free_bytes), None)
    dtype = "fp16" if gpu is not None and not gpu.unified_memory else "fp32"
    source = (VERDICT_SIZE, VERDICT_SIZE)
    tile = choose_tile(16, scale, features, dtype, free)
    need = upscale_need(weights_bytes, source, scale, tile, 16, features, dtype)
    sentence = f"{need_sentence(need, source, scale, tile)} to upscale a {VERDICT_SIZE}×{VERDICT_SIZE} image"
    budget = max(0, free - ram_reserve(total))
    if gpu is not None and dtype == "fp16" and need.weights_bytes + need.kv_cache_bytes <= gpu.free_bytes - 512 * MiB:
        return FitVerdict("gpu_full", "Runs fully on GPU", f"{sentence}; the tiles fit in the "
                          f"{format_bytes(gpu.free_bytes, in_gb=True)} free on the {gpu.name}.", need, 1, 1, free,
                          gpu.free_bytes)
    if need.total_bytes <= budget:
        return FitVerdict("cpu_only", "CPU only", f"{sentence}; you have {format_bytes(free, in_gb=True)} free memory. "
                          "Expect minutes per image on a CPU.", need, 0, 1, free, gpu.free_bytes if gpu else 0)
    return FitVerdict("wont_fit", "Won't fit", f"{sentence}; you have {format_bytes(free, in_gb=True)} free memory.",
                      need, 0, 1, free, 0, ("Smaller images need less memory: the tiles bound the rest.",))


def upscale_flops(blocks: int, features: int, scale: int, pixels: int = VERDICT_SIZE * VERDICT_SIZE) -> float:
    """Floating-point operations to upscale ``pixels`` source pixels with an RRDBNet (growth = features / 2).

    Per network pixel each dense block is 9·(8FG + 6G² + F²) multiply-adds (its five 3×3 convolutions over
    the growing concatenation), three per RRDB; the up-convolutions, the HR and the last convolution run
    at 4, 16... times the pixels. Real-ESRGAN x4plus: about 36 MFLOP per source pixel, 95% in the blocks.
    """
    f, g = features, features // 2
    unshuffle = {4: 1, 2: 2, 1: 4}.get(scale, 1)
    ups = 2  # Real-ESRGAN's x2 and x1 models unshuffle first and keep both 2x steps
    body = blocks * 3 * 9 * (8 * f * g + 6 * g * g + f * f) + 9 * f * f + 9 * 3 * unshuffle**2 * f
    tail = sum(9 * f * f * 4**k for k in range(1, ups + 1)) + 9 * f * f * 4**ups + 9 * f * 3 * 4**ups
    return 2.0 * (body + tail) * pixels / unshuffle**2


def upscale_speed(blocks: int, features: int, scale: int, flops_per_s: float):
    """The expected seconds to upscale a :data:`VERDICT_SIZE`-pixel square image (a SpeedEstimate)."""
    from engines.machine.speed import SpeedEstimate

    work = upscale_flops(blocks, features, scale)
    return SpeedEstimate(work / flops_per_s, "s/image", f"{work / 1e12:.0f} TFLOP for a {VERDICT_SIZE}×{VERDICT_SIZE} "
                         f"image at {flops_per_s / 1e12:.2f} TFLOP/s measured here")
