"""Init images (the img2img source): check the bytes before anything decodes them.

An init image is the one part of an image request that comes straight
from a file the user named, so it is where a hostile or mistaken input
gets in: an empty file (which must not quietly turn img2img into
txt2img), a 12000×12000 PNG that decodes to gigabytes to make a 512×512
image, or an EPS file that Pillow would hand to Ghostscript. The engines
run :func:`check_init_image` before decoding, and the front ends run it
when they read the file (:func:`engines.images.init_image.read_init_image`,
which also refuses FIFOs and devices), so a request from anywhere gets the
same limits and the same sentences. Only Pillow is needed here: this runs
in the private image engine's Python too.
"""

from __future__ import annotations

import io
import warnings

from engines.byte_sizes import format_bytes
from engines.diffusion.types import MAX_INIT_IMAGE_BYTES, MAX_INIT_IMAGE_PIXELS
from engines.errors import EngineError, ErrorKind

# What Pillow may open: the common photo formats. Others (EPS runs Ghostscript, TIFF and friends carry a
# long history of decoder bugs) are refused before any decoder sees them.
INIT_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
INIT_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
READ_HINT = "Use a PNG, JPEG or WebP file."


def _bad(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


def check_init_image(data: bytes, name: str = "", role: str = "init image") -> tuple[int, int]:
    """The (width, height) of an encoded init image, read from its header; BAD_INPUT when it is unusable.

    Refuses what is empty, too large, not one of :data:`INIT_IMAGE_FORMATS`
    or above :data:`MAX_INIT_IMAGE_PIXELS`, before a single pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    what = f"The {role} {name}" if name else f"The {role}"  # role: "init image", "image to upscale"
    if not data:
        raise _bad(f"{what} is empty (0 bytes); choose an image file.")
    if len(data) > MAX_INIT_IMAGE_BYTES:
        raise _bad(f"{what} is larger than {format_bytes(MAX_INIT_IMAGE_BYTES)}; choose a smaller image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in words
            with Image.open(io.BytesIO(data), formats=INIT_IMAGE_FORMATS) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise _bad(f"{what} has far more than {MAX_INIT_IMAGE_PIXELS // 1_000_000} megapixels; "
                   "scale it down first.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _bad(f"{what} could not be read ({type(exc).__name__}: {exc}). {READ_HINT}") from None
    if width * height > MAX_INIT_IMAGE_PIXELS:
        raise _bad(f"{what} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels); Atelier takes at "
                   f"most {MAX_INIT_IMAGE_PIXELS // 1_000_000} megapixels. Scale it down first.")
    return width, height
