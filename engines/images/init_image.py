"""Reading the init image a user named (CLI ``--init-image``, the Images page's Choose… and drops).

The file is opened with :func:`engines.gguf.regular.open_regular_file`, the
one way Atelier opens a user's file without blocking: a FIFO or a device
(``/dev/zero``) is refused in words instead of hanging or reading for ever.
At most 64 MB + 1 bytes are read, and the header is checked (format and
pixel count) before anything decodes it: :mod:`engines.image_input`, the one
reader of a user's image, for init images and vision models alike.
"""

from __future__ import annotations

import os
from os import PathLike

from engines.image_input import read_image_file


def read_init_image(path: str | PathLike[str], role: str = "init image") -> bytes:
    """The bytes of the init image at ``path``, or a BAD_INPUT error that says what is wrong with the file.

    ``role`` names the image in those errors ("image to upscale" for ``atelier upscale``); the
    reading and the checks are :func:`engines.image_input.read_image_file`'s, as for a vision model's image.
    """
    return read_image_file(path, f"The {role} {os.fspath(path)}")
