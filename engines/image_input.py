"""Images a user hands in: checked from their header before anything decodes them, then decoded within bounds.

Two kinds of request carry an image straight from a file the user named or
dropped: an init image (img2img) and a photo for a vision model to read. That
is where a hostile or mistaken input gets in: an empty file, a 30,000×30,000
PNG of a few kilobytes that decodes to gigabytes (a decompression bomb), or
an EPS file that Pillow would hand to Ghostscript. So both go through this one
module, in the engine that uses the image (the image engines, the llama.cpp
engine's vision path) and in the front ends that read the file
(:func:`engines.images.init_image.read_init_image`, which also refuses FIFOs
and devices): the same limits and the same sentences, wherever a request
comes from.

:func:`read_image_file` reads a file the user named without ever blocking
(:func:`engines.gguf.regular.open_regular_file`: a FIFO or a device such as
``/dev/zero`` is refused in words), at most :data:`MAX_IMAGE_BYTES` + 1 bytes.
:func:`check_image` reads the header only (format and pixel count).
:func:`decode_rgb` decodes an image that passed it into plain RGB pixels,
upright (EXIF orientation applied) and scaled down to a longest side, which
is what llama.cpp's vision projectors take: they never see llama.cpp's own
image decoder (stb_image), so only Pillow's checked path reads user bytes.

Only Pillow is needed, imported when used: this module sits below the
engines, and runs in the private image engine's Python too.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

from engines.byte_sizes import format_bytes
from engines.errors import EngineError, ErrorKind

# A photo from any camera fits (a 50 MP JPEG is ~25 MB); a decompression bomb or /dev/zero does not.
# Decoding 64 MP as RGB takes ~200 MB: the most an image that is scaled down anyway should cost.
MAX_IMAGE_BYTES = 64_000_000  # "64 MB": decimal, as every size is shown (engines.byte_sizes)
MAX_IMAGE_PIXELS = 64_000_000
# What Pillow may open: the common photo formats. Others (EPS runs Ghostscript, TIFF and friends carry a
# long history of decoder bugs) are refused before any decoder sees them.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
READ_HINT = "Use a PNG, JPEG or WebP file."


def _bad(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


def check_image(data: bytes, what: str = "The image") -> tuple[int, int]:
    """The (width, height) of an encoded image, read from its header; BAD_INPUT when it is unusable.

    ``what`` begins each sentence ("The init image photo.png", "The image").
    Refuses what is empty, too large, not one of :data:`IMAGE_FORMATS` or
    above :data:`MAX_IMAGE_PIXELS`, before a single pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _bad(f"{what} is empty (0 bytes); choose an image file.")
    if len(data) > MAX_IMAGE_BYTES:
        raise _bad(f"{what} is larger than {format_bytes(MAX_IMAGE_BYTES)}; choose a smaller image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in words
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise _bad(f"{what} has far more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels; "
                   "scale it down first.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _bad(f"{what} could not be read ({type(exc).__name__}: {exc}). {READ_HINT}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise _bad(f"{what} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels); Atelier takes at "
                   f"most {MAX_IMAGE_PIXELS // 1_000_000} megapixels. Scale it down first.")
    return width, height


def read_image_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of the image file at ``path``, checked (:func:`check_image`); BAD_INPUT in words otherwise.

    ``what`` begins each sentence, naming the file ("The image photo.png").
    """
    from engines.gguf.regular import NotARegularFileError, open_regular_file

    try:
        with open_regular_file(os.fspath(path)) as handle:
            if os.fstat(handle.fileno()).st_size > MAX_IMAGE_BYTES:
                raise _bad(f"{what} is larger than {format_bytes(MAX_IMAGE_BYTES)}; choose a smaller image.")
            data = handle.read(MAX_IMAGE_BYTES + 1)  # the file may have grown since fstat
    except NotARegularFileError as exc:
        raise _bad(f"{what} is {exc.kind}, not an image file.") from None
    except FileNotFoundError:
        raise _bad(f"{what} does not exist.") from None
    except PermissionError:
        raise _bad(f"{what} cannot be read: permission denied.") from None
    except OSError as exc:
        raise _bad(f"{what} cannot be read: {exc.strerror or exc}.") from None
    check_image(data, what)
    return data


@dataclass(frozen=True)
class RGBImage:
    """Decoded pixels: ``width * height * 3`` bytes, row by row, 8-bit RGB."""

    width: int
    height: int
    pixels: bytes


def decode_rgb(data: bytes, what: str = "The image", max_side: int | None = None) -> RGBImage:
    """Check ``data`` (:func:`check_image`), then decode it as upright RGB, at most ``max_side`` on its longer side.

    A file whose header passes but whose data is broken (a truncated PNG)
    is BAD_INPUT too, with Pillow's reason.
    """
    from PIL import Image, ImageOps

    check_image(data, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked above
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                if max_side is not None:
                    image.draft("RGB", (max_side, max_side))  # JPEG: decode at a fraction of the size
                upright = ImageOps.exif_transpose(image)
                rgb = upright.convert("RGB")
                if max_side is not None and max(rgb.size) > max_side:
                    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                return RGBImage(rgb.width, rgb.height, rgb.tobytes())
    except (OSError, ValueError, SyntaxError) as exc:
        raise _bad(f"{what} could not be decoded ({type(exc).__name__}: {exc}). {READ_HINT}") from None
