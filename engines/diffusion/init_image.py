"""Init images (the img2img source): read the user's file safely and check it before anything decodes it.

An init image is the one part of an image request that comes straight
from a file the user named, so it is where a hostile or mistaken input
gets in: ``/dev/zero`` or a FIFO (an endless or blocking read), an empty
file (which must not quietly turn img2img into txt2img), a 12000×12000
PNG that decodes to gigabytes to make a 512×512 image, or an EPS file
that Pillow would hand to Ghostscript. The CLI and the GUI read the file
with :func:`read_init_image`; the engines check the bytes again with
:func:`check_init_image` before decoding, so a request from anywhere gets
the same limits and the same sentences.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from os import PathLike

from engines.diffusion.types import MAX_INIT_IMAGE_BYTES, MAX_INIT_IMAGE_PIXELS
from engines.errors import EngineError, ErrorKind

# What Pillow may open: the common photo formats. Others (EPS runs Ghostscript, TIFF and friends carry a
# long history of decoder bugs) are refused before any decoder sees them.
INIT_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
INIT_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
READ_HINT = "Use a PNG, JPEG or WebP file."


def _bad(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


def read_init_image(path: str | PathLike[str]) -> bytes:
    """The bytes of the init image at ``path``, or a BAD_INPUT error that says what is wrong with the file.

    The file is opened without blocking and refused unless it is a regular
    file, so a FIFO or a device never hangs the caller, and at most
    :data:`MAX_INIT_IMAGE_BYTES` + 1 bytes are ever read. The header is then
    checked by :func:`check_init_image` (format and pixel count), which
    costs no decoding.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise _bad(f"The init image {name} does not exist.") from None
    except IsADirectoryError:
        raise _bad(f"The init image {name} is a folder; choose an image file.") from None
    except PermissionError:
        raise _bad(f"The init image {name} cannot be read: permission denied.") from None
    except OSError as exc:
        raise _bad(f"The init image {name} cannot be read: {exc.strerror or exc}.") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _bad(f"The init image {name} is a folder; choose an image file.")
        if not stat.S_ISREG(info.st_mode):
            raise _bad(f"The init image {name} is not a regular file (it is a pipe, a socket or a device); "
                       "choose an image file.")
        if info.st_size > MAX_INIT_IMAGE_BYTES:
            raise _bad(f"The init image {name} is larger than {MAX_INIT_IMAGE_BYTES // 2**20} MB; "
                       "choose a smaller image.")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            data = handle.read(MAX_INIT_IMAGE_BYTES + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise _bad(f"The init image {name} cannot be read: {exc.strerror or exc}.") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if not data:
        raise _bad(f"The init image {name} is empty (0 bytes); choose an image file.")
    if len(data) > MAX_INIT_IMAGE_BYTES:
        raise _bad(f"The init image {name} is larger than {MAX_INIT_IMAGE_BYTES // 2**20} MB; choose a smaller image.")
    check_init_image(data, name)
    return data


def check_init_image(data: bytes, name: str = "") -> tuple[int, int]:
    """The (width, height) of an encoded init image, read from its header; BAD_INPUT when it is unusable.

    Refuses what is empty, too large, not one of :data:`INIT_IMAGE_FORMATS`
    or above :data:`MAX_INIT_IMAGE_PIXELS`, before a single pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    what = f"The init image {name}" if name else "The init image"
    if not data:
        raise _bad(f"{what} is empty (0 bytes); choose an image file.")
    if len(data) > MAX_INIT_IMAGE_BYTES:
        raise _bad(f"{what} is larger than {MAX_INIT_IMAGE_BYTES // 2**20} MB; choose a smaller image.")
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
