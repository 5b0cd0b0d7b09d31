"""Reading the init image a user named (CLI ``--init-image``, the Images page's Choose… and drops).

The file is opened with :func:`engines.gguf.regular.open_regular_file`, the
one way Atelier opens a user's file without blocking: a FIFO or a device
(``/dev/zero``) is refused in words instead of hanging or reading for ever.
At most :data:`MAX_INIT_IMAGE_BYTES` + 1 bytes are read, and the header is
checked (:func:`engines.diffusion.init_image.check_init_image`: format and
pixel count) before anything decodes it.
"""

from __future__ import annotations

import os
from os import PathLike

from engines.byte_sizes import format_bytes
from engines.diffusion.init_image import check_init_image
from engines.diffusion.types import MAX_INIT_IMAGE_BYTES
from engines.errors import EngineError, ErrorKind
from engines.gguf.regular import NotARegularFileError, open_regular_file

_LIMIT = format_bytes(MAX_INIT_IMAGE_BYTES)


def _bad(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


def read_init_image(path: str | PathLike[str], role: str = "init image") -> bytes:
    """The bytes of the init image at ``path``, or a BAD_INPUT error that says what is wrong with the file.

    ``role`` names the image in those errors ("image to upscale" for ``atelier upscale``).
    """
    name = os.fspath(path)
    what = f"The {role} {name}"
    try:
        with open_regular_file(name) as handle:
            if os.fstat(handle.fileno()).st_size > MAX_INIT_IMAGE_BYTES:
                raise _bad(f"{what} is larger than {_LIMIT}; choose a smaller image.")
            data = handle.read(MAX_INIT_IMAGE_BYTES + 1)  # the file may have grown since fstat
    except NotARegularFileError as exc:
        raise _bad(f"{what} is {exc.kind}, not an image file.") from None
    except FileNotFoundError:
        raise _bad(f"{what} does not exist.") from None
    except PermissionError:
        raise _bad(f"{what} cannot be read: permission denied.") from None
    except OSError as exc:
        raise _bad(f"{what} cannot be read: {exc.strerror or exc}.") from None
    if len(data) > MAX_INIT_IMAGE_BYTES:
        raise _bad(f"{what} is larger than {_LIMIT}; choose a smaller image.")
    if not data:
        raise _bad(f"{what} is empty (0 bytes); choose an image file.")
    check_init_image(data, name, role)
    return data
