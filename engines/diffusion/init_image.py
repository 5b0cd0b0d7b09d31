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

from engines.errors import EngineError, ErrorKind
from engines.image_input import IMAGE_FORMATS, IMAGE_SUFFIXES, READ_HINT, check_image

# The image check is engines.image_input's (the vision path uses it too); these names stay for the image engines.
INIT_IMAGE_FORMATS = IMAGE_FORMATS
INIT_IMAGE_SUFFIXES = IMAGE_SUFFIXES
__all__ = ["INIT_IMAGE_FORMATS", "INIT_IMAGE_SUFFIXES", "READ_HINT", "check_init_image", "decode_upright"]


def check_init_image(data: bytes, name: str = "", role: str = "init image") -> tuple[int, int]:
    """The (width, height) of an encoded init image, read from its header; BAD_INPUT when it is unusable.

    Refuses what is empty, too large, not one of :data:`INIT_IMAGE_FORMATS`
    or above the pixel cap, before a single pixel is decoded
    (:func:`engines.image_input.check_image`, in the words of ``role``:
    "init image", "image to upscale").
    """
    return check_image(data, f"The {role} {name}" if name else f"The {role}")


def decode_upright(data: bytes, role: str = "init image", mode: str = "RGB"):
    """``data`` decoded as a Pillow image in ``mode``, turned upright (EXIF orientation); BAD_INPUT in words.

    For the init image (RGB) and an inpainting mask (L) alike; callers run
    :func:`check_init_image` first, so nothing over the limits is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=INIT_IMAGE_FORMATS) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert(mode)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise EngineError(ErrorKind.BAD_INPUT, f"The {role} could not be read ({type(exc).__name__}: {exc}). "
                                               f"{READ_HINT}")
