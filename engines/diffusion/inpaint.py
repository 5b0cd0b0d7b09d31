"""Inpainting and outpainting: the mask checks, the outpainted canvas and the paste-back, for any engine.

An inpainting request is an img2img request with a ``mask`` (an encoded
image of the init image's size, white where the model repaints) and/or
``outpaint`` pixels on some sides. Everything that is not the diffusers
call itself lives here, so the checks say the same sentences to the CLI,
the GUI and the engine, and the engine only runs the pipeline:

* :func:`mask_problems` refuses a mask of another size than the init
  image, a blank one (nothing to repaint) and a full one. A full mask
  throws the whole init image away, which is text to image with extra
  steps; it is refused with that sentence rather than run, because a
  masked img2img at strength < 1 would still copy the init image's colours
  into a picture the user asked to repaint entirely.
* :func:`prepare` builds the canvas the model sees: the init image at the
  request's size, extended by the outpaint margins (edge pixels repeated
  outwards, so the model starts from the right colours at the seam), and
  the binary mask (painted area plus the new margins).
* :func:`paste_back` puts the original pixels back outside the mask after
  decoding. The VAE's round trip changes every pixel a little; the user
  asked for the unmasked part to stay, so it stays byte for byte. The
  feather (:data:`MASK_BLUR` pixels) blends only *inside* the mask, so the
  seam is soft and nothing outside it changes.
* :func:`memory_problem` refuses an outpaint that makes the image too
  large for the memory free now, with the model library's arithmetic
  (:mod:`engines.machine.image_fit`).

Only Pillow and numpy are imported, and only when a function runs.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from engines.diffusion.init_image import INIT_IMAGE_FORMATS, check_init_image, decode_upright
from engines.diffusion.request_words import steps_words
from engines.errors import EngineError, ErrorKind

MASK_BLUR = 4  # pixels of feather inside the mask's edge (A1111's "Mask blur")
MASK_THRESHOLD = 128  # a mask pixel at or above this (0..255) is repainted
OUTPAINT_SIDES = ("left", "right", "top", "bottom")
ONNX_REFUSAL = ("Inpainting and outpainting run on the PyTorch backend only; ONNX Runtime cannot do them here. "
                "Choose the 'torch' backend (--backend torch) for this image.")
FULL_MASK = ("the mask covers the whole image, so nothing of the init image would be kept: that is text to image. "
             "Leave part of the mask black, or clear the init image and generate from the prompt alone")
BLANK_MASK = "the mask is blank (all black): there is nothing to repaint. Paint the area to repaint in white"


def _upright_size(data: bytes) -> tuple[int, int]:
    """The init image's size as it is shown (EXIF orientation applied), from its header alone."""
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=INIT_IMAGE_FORMATS) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def mask_problems(init_image: bytes | None, mask: bytes, outpainting: bool = False) -> list[str]:
    """What is wrong with ``mask`` for ``init_image``, in words (empty when it can be used).

    A blank mask is fine when the request outpaints: the new margins are
    repainted, and nothing inside the image is.
    """
    try:
        check_init_image(mask, role="mask")
        if init_image is None:
            return []  # "a mask needs an init image" is ImageRequest.validate's sentence
        check_init_image(init_image)
        expected = _upright_size(init_image)
        image = decode_upright(mask, "mask", "L")
    except EngineError as exc:
        return [exc.message.rstrip(".")]
    except Exception:  # the init image's own problem: request_init_image reports it in its words
        return []
    if image.size != expected:
        return [f"the mask is {image.width}×{image.height} pixels but the init image is {expected[0]}×{expected[1]}; "
                "a mask must be the same size as the image it masks"]
    low, high = image.getextrema()
    if high < MASK_THRESHOLD and not outpainting:
        return [BLANK_MASK]
    if low >= MASK_THRESHOLD:
        return [FULL_MASK]
    return []


@dataclass(frozen=True)
class InpaintInputs:
    """What the inpaint pipeline gets: the canvas (RGB), the binary mask (L, 255 = repaint), and their size."""

    canvas: object  # PIL.Image.Image, RGB
    mask: object  # PIL.Image.Image, L
    width: int
    height: int


def prepare(request) -> InpaintInputs:
    """The canvas and mask of an inpaint/outpaint ``request`` (an :class:`ImageRequest` with an init image).

    The init image and the mask are scaled to the request's width×height
    (as img2img scales its init image), the mask made binary, then both are
    extended by the outpaint margins: edge pixels repeated outwards for the
    canvas, white (repaint) for the mask.
    """
    import numpy as np
    from PIL import Image

    width, height = request.width, request.height
    check_init_image(request.init_image)
    image = decode_upright(request.init_image, "init image", "RGB")
    if image.size != (width, height):  # scaled as img2img scales its init image (engines.diffusion.common)
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    if request.mask is not None:
        mask = decode_upright(request.mask, "mask", "L")
        if mask.size != (width, height):
            mask = mask.resize((width, height), Image.Resampling.BILINEAR)
        painted = np.asarray(mask) >= MASK_THRESHOLD
    else:
        painted = np.zeros((height, width), dtype=bool)
    left, right, top, bottom = request.outpaint
    pixels = np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), mode="edge")
    repaint = np.pad(painted, ((top, bottom), (left, right)), mode="constant", constant_values=True)
    canvas = Image.fromarray(pixels, "RGB")
    return InpaintInputs(canvas, Image.fromarray(repaint.astype(np.uint8) * 255, "L"), canvas.width, canvas.height)


def paste_back(generated, inputs: InpaintInputs, feather: int = MASK_BLUR):
    """``generated`` with the original canvas put back outside the mask, blended over ``feather`` pixels inside it.

    The blend weight is zero outside the mask, so there the result is the
    original exactly; inside, it rises from 1/``feather`` at the mask's edge
    to the full generated image ``feather`` pixels in.
    """
    import numpy as np
    from PIL import Image, ImageFilter

    if generated.size != inputs.canvas.size:
        generated = generated.resize(inputs.canvas.size, Image.Resampling.LANCZOS)
    mask = np.asarray(inputs.mask) >= MASK_THRESHOLD
    # Depth inside the mask, in pixels (1 at its edge): one more for each 3×3 erosion a pixel survives.
    depth = mask.astype(np.float32)
    eroded = inputs.mask
    for _ in range(max(0, feather - 1)):
        eroded = eroded.filter(ImageFilter.MinFilter(3))
        depth += np.asarray(eroded) >= MASK_THRESHOLD
    alpha = np.minimum(depth / max(feather, 1), 1.0)
    original = np.asarray(inputs.canvas.convert("RGB"), dtype=np.float32)
    new = np.asarray(generated.convert("RGB"), dtype=np.float32)
    blended = original * (1.0 - alpha[..., None]) + new * alpha[..., None]
    out = np.where(mask[..., None], np.clip(np.rint(blended), 0, 255), original).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def memory_problem(model_path: str, width: int, height: int, available: int | None = None,
                   report=None) -> str | None:
    """A sentence when a ``width``×``height`` image on this model needs more memory than is free now, else None.

    The estimate is the model library's (:func:`engines.machine.image_fit.estimate_image`:
    weights at the run precision, the UNet's and VAE's activations at that
    pixel count, and the runtime), so the numbers match the Models page.
    """
    from pathlib import Path

    from engines.byte_sizes import format_bytes
    from engines.machine.image_fit import PipelineShape, estimate_image, folder_weights

    folder = Path(model_path)
    if report is None:
        from engines.machine.hardware import probe

        report = probe()
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    weights, dtype = folder_weights(folder)
    size = math.isqrt(width * height - 1) + 1  # the square of the same pixel count
    need = estimate_image(weights, size, report, file_dtype=dtype, shape=PipelineShape.from_folder(folder))
    if need.total_bytes <= available:
        return None
    parts = (need.weights_bytes, need.kv_cache_bytes, need.overhead_bytes, need.total_bytes)
    w, a, r, total = (format_bytes(n, in_gb=True) for n in parts)
    return (f"the outpainted image would be {width}×{height} pixels, which needs about {total} of memory "
            f"({w} weights + {a} activations + {r} runtime) and {format_bytes(available, in_gb=True)} is free; "
            "outpaint fewer pixels or make the image smaller")


def parameters_pairs(request) -> list[tuple[str, str]]:
    """What the PNG's A1111 ``parameters`` say about an inpaint/outpaint run (nothing for other runs)."""
    pairs = []
    if request.mask is not None:
        pairs += [("Mask blur", str(MASK_BLUR)), ("Inpaint area", "Whole picture")]
    if any(request.outpaint):
        sides = " ".join(f"{side}={value}" for side, value in zip(OUTPAINT_SIDES, request.outpaint) if value)
        pairs.append(("Outpaint", sides))
    return pairs


def describe(request) -> str:
    """A few words for the Content Credentials' edit action: what was repainted and how much was added."""
    parts = []
    if request.mask is not None:
        parts.append("Inpainted the masked area")
    if any(request.outpaint):
        sides = ", ".join(f"{value} px {side}" for side, value in zip(OUTPAINT_SIDES, request.outpaint) if value)
        parts.append(f"outpainted {sides}" if parts else f"Outpainted {sides}")
    return f"{' and '.join(parts)} (strength {request.strength:g}), {steps_words(request.steps)}"
