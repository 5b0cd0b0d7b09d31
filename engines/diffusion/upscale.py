"""The upscaler engine: ESRGAN-family GANs (:mod:`engines.diffusion.rrdbnet`), tiled, in the engine host.

It is an engine like the image engines (registry name ``"esrgan"``): the
scheduler loads it in its own host under the image engine's Python, a
request goes through :meth:`UpscaleEngine.generate`, and a cancel stops it
within one residual block. What it adds to the network:

- **Bounded memory at any size.** The image is run in tiles
  (:mod:`engines.diffusion.tiles`) whose edge is chosen so that one tile's
  activations fit :mod:`engines.machine.upscale_fit`'s budget; only the
  result grows with the image, and a result that cannot fit the free memory
  is refused with the sum before anything runs.
- **Any scale from the model's own.** A ×4 model asked for ×2 runs once and
  shrinks with Lanczos; a ×2 model asked for ×4 runs twice.
- **The source's metadata kept**, the step added (:mod:`engines.diffusion.upscale_png`).

Alpha is not run through the network (ESRGANs are trained on RGB): it is
scaled with Lanczos and put back.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

from engines.api import CancelFlag, Emit, ProgressEvent
from engines.diffusion.upscale_types import (
    MIN_SOURCE_SIDE,
    UPSCALE_STAGE,
    UpscaleLoadSpec,
    UpscaleRequest,
    UpscaleResult,
    UpscalerInfo,
)
from engines.errors import EngineError, ErrorKind, problems_sentence
from engines.model_folder import PICKLED_MESSAGE

log = logging.getLogger(__name__)

ENGINE = "esrgan"  # the registry name (engines.diffusion.plugin.UPSCALE_PLUGIN)
# Context run around each tile, in source pixels. A 23-block Real-ESRGAN's receptive radius is 349 pixels in
# theory, which would make every tile ~3× wider than its core; what a trained ESRGAN's output pixel really
# depends on fades within a few pixels (Real-ESRGAN's own tiler pads by 10). 40 keeps seams invisible, and
# covers the whole radius of small networks (up to 2 blocks at ×4, 1 at ×2), where tiled equals whole exactly.
MAX_CONTEXT = 40
STOPPED = "Upscaling was stopped."
_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class _Stop(Exception):
    """Raised between residual blocks when the request is cancelled; never leaves the engine."""


class UpscaleEngine:
    """One loaded ESRGAN-family upscaler; see the module docstring."""

    def __init__(self) -> None:
        self._net = None
        self._info: UpscalerInfo | None = None
        self._weights_bytes = 0

    @property
    def info(self) -> UpscalerInfo | None:
        return self._info

    def load(self, spec: UpscaleLoadSpec, emit: Emit, cancel: CancelFlag | None = None) -> UpscalerInfo:
        problems = spec.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems, "Cannot load the upscaler"))
        import torch

        from engines.diffusion.rrdbnet import build_strict
        from engines.diffusion.torch_engine import resolve_device, resolve_dtype

        path = Path(spec.model_path)
        emit(ProgressEvent("load", f"Loading {path.name}…"))
        state = read_weights(path)
        net, layout = build_strict(state, path.name)
        device = resolve_device(spec.device)
        dtype = resolve_dtype(device, spec.dtype)
        self._net = net.to(device=device, dtype=getattr(torch, _TORCH_DTYPES[dtype]))
        self._weights_bytes = sum(t.numel() * t.element_size() for t in self._net.state_dict().values())
        shape = net.shape
        self._info = UpscalerInfo(path=str(path), name=path.stem, scale=shape.scale, architecture="RRDBNet",
                                  layout=layout, blocks=shape.num_block, features=shape.num_feat, device=device,
                                  dtype=dtype)
        log.info("loaded %s: RRDBNet ×%d, %d blocks, %s on %s", path.name, shape.scale, shape.num_block, dtype, device)
        return self._info

    def unload(self) -> None:
        self._net = None
        self._info = None

    def generate(self, request: UpscaleRequest, emit: Emit, cancel: CancelFlag | None = None) -> UpscaleResult:
        if self._net is None or self._info is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No upscaler is loaded.")
        problems = request.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems, "Cannot upscale"))
        from PIL import Image

        from engines.diffusion.init_image import INIT_IMAGE_FORMATS, check_init_image
        from engines.diffusion.upscale_png import source_text, upscaled_png

        started = time.perf_counter()
        name = request.source_name
        width, height = check_init_image(request.image, name, role="image to upscale")
        if min(width, height) < MIN_SOURCE_SIDE:
            raise EngineError(ErrorKind.BAD_INPUT, f"The image to upscale is {width}×{height} pixels; it needs at "
                                                   f"least {MIN_SOURCE_SIDE} on each side.")
        model_scale = self._info.scale
        scale = request.scale or model_scale
        if model_scale < 2:
            raise EngineError(ErrorKind.UNSUPPORTED, f"{self._info.name} keeps the size (a ×1 model: it restores, "
                                                     "it does not enlarge); choose a ×2 or ×4 upscaler.")
        passes = _passes(model_scale, scale)
        tile = self._tile_for(request)
        self._check_fits(width, height, model_scale, passes, tile)
        with Image.open(io.BytesIO(request.image), formats=INIT_IMAGE_FORMATS) as opened:
            text = source_text(opened)
            from PIL import ImageOps

            upright = ImageOps.exif_transpose(opened)
            alpha = None
            if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
                upright = upright.convert("RGBA")
                alpha = upright.getchannel("A")
            rgb = upright.convert("RGB")
        import numpy as np

        pixels = np.asarray(rgb)
        del rgb
        tiles_per_pass = 0
        try:
            for index in range(passes):
                pixels, tiles_per_pass = self._run_pass(pixels, tile, emit, cancel, index, passes)
        except _Stop:
            raise EngineError(ErrorKind.CANCELLED, STOPPED) from None
        image = Image.fromarray(pixels, "RGB")
        del pixels
        target = (width * scale, height * scale)
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS)
        if alpha is not None:
            image.putalpha(alpha.resize(target, Image.Resampling.LANCZOS))
        step = {"step": "upscale", "scale": scale, "upscaler": self._info.name, "architecture": "RRDBNet",
                "model_scale": model_scale, "passes": passes, "source_width": width, "source_height": height,
                "width": target[0], "height": target[1], "tile": tile}
        png = upscaled_png(image, text, step)
        return UpscaleResult(
            png=png, width=target[0], height=target[1], source_width=width, source_height=height, scale=scale,
            passes=passes, model_name=self._info.name, device=self._info.device, dtype=self._info.dtype,
            tiles=tiles_per_pass, tile=tile, seconds=round(time.perf_counter() - started, 3),
            parameters=text.get("parameters"),
        )

    # ---- the parts -------------------------------------------------------------

    def _tile_for(self, request: UpscaleRequest) -> int:
        from engines.machine.upscale_fit import TILE_BUDGET, choose_tile

        if request.tile:
            return request.tile
        info = self._info
        free = _free_memory()[0] or 4 * TILE_BUDGET
        return choose_tile(self._context(), info.scale, info.features, info.dtype, free)

    def _context(self) -> int:
        return min(self._net.shape.receptive_radius, MAX_CONTEXT)

    def _check_fits(self, width: int, height: int, model_scale: int, passes: int, tile: int) -> None:
        """Refuse, with the sum, a pass whose result (or tile) cannot fit the free memory."""
        from engines.machine.upscale_fit import check_upscale_fits, upscale_need

        free, total = _free_memory()
        if free is None:
            return
        info = self._info
        for index in range(passes):
            side = model_scale**index
            source = (width * side, height * side)
            need = upscale_need(self._weights_bytes, source, model_scale, tile, self._context(), info.features,
                                info.dtype)
            check_upscale_fits(need, source, model_scale, tile, free, total)

    def _run_pass(self, pixels, tile: int, emit: Emit, cancel: CancelFlag | None, index: int, passes: int):
        """One run of the network over ``pixels`` (H×W×3 uint8), tile by tile; the result and the tile count."""
        import numpy as np
        import torch

        from engines.diffusion.tiles import tile_grid

        net = self._net
        shape = net.shape
        align, scale = shape.unshuffle, shape.scale
        height, width = pixels.shape[:2]
        pad_h, pad_w = (-height) % align, (-width) % align
        if pad_h or pad_w:  # the pixel-unshuffle needs whole 2×2 (4×4) cells: mirror the edge, as Real-ESRGAN does
            pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        grid = tile_grid(height + pad_h, width + pad_w, tile, self._context(), align)
        out = np.empty(((height + pad_h) * scale, (width + pad_w) * scale, 3), dtype=np.uint8)
        param = next(net.parameters())
        where = f"pass {index + 1} of {passes}, " if passes > 1 else ""

        def between_blocks() -> None:
            if cancel is not None and cancel.is_set():
                raise _Stop

        with torch.inference_mode():
            for number, piece in enumerate(grid, 1):
                between_blocks()
                region = pixels[piece.in_y0:piece.in_y1, piece.in_x0:piece.in_x1]
                x = torch.from_numpy(np.array(region)).permute(2, 0, 1).unsqueeze(0)
                x = x.to(device=param.device, dtype=param.dtype).div_(255.0)
                y = net(x, between_blocks)[0]
                y = y.float().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                out[piece.core_in_output(scale)] = y[piece.core_in_region(scale)]
                done = (index * len(grid) + number) / (passes * len(grid))
                emit(ProgressEvent(UPSCALE_STAGE, f"Upscaling: {where}tile {number} of {len(grid)}", done))
        return out[:height * scale, :width * scale], len(grid)


def read_weights(path: Path) -> dict:
    """The tensors of an upscaler file; pickles are never opened, a damaged file is refused in words."""
    if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin", ".pkl"):
        raise EngineError(ErrorKind.UNSUPPORTED, f"{path.name} is a pickled checkpoint. {PICKLED_MESSAGE}.")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise EngineError(ErrorKind.BAD_INPUT if what == "missing" else ErrorKind.MODEL_FILE,
                          f"The upscaler {path} is {what}; it must be a .safetensors file.")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name} could not be read as a .safetensors file ({exc}). "
                                                "The file may be damaged or incomplete.") from None


def _passes(model_scale: int, scale: int) -> int:
    """How many runs of a ×``model_scale`` model reach ×``scale`` (the rest is a Lanczos shrink)."""
    passes, reached = 1, model_scale
    while reached < scale:
        passes, reached = passes + 1, reached * model_scale
    return passes


def _free_memory() -> tuple[int | None, int | None]:
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.available), int(memory.total)
    except Exception:  # noqa: BLE001 - unknown: the tile budget alone bounds the run
        return None, None
