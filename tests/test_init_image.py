"""Init images from hostile or mistaken files: refused in words, without blocking, before any decoding.

These are the non-regular-file, empty-file and decompression-bomb classes of
the reliability probe (D16, D17) at the level every front end shares:
:func:`engines.images.init_image.read_init_image` and the engines' own
check of the bytes (:func:`engines.diffusion.init_image.check_init_image`). The CLI and the GUI tests check the same files end to end.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engines.diffusion.init_image import check_init_image
from engines.images.init_image import read_init_image
from engines.diffusion.types import MAX_INIT_IMAGE_BYTES, ImageRequest
from engines.errors import EngineError, ErrorKind
from tests.fixtures.bad_images import header_only_png, real_png


def refusal(path) -> str:
    with pytest.raises(EngineError) as err:
        read_init_image(path)
    assert err.value.kind == ErrorKind.BAD_INPUT
    return err.value.message


def test_a_good_png_is_read_whole(tmp_path):
    path = tmp_path / "start.png"
    path.write_bytes(real_png())
    assert read_init_image(path) == path.read_bytes()
    assert check_init_image(path.read_bytes()) == (40, 30)


def test_an_empty_file_is_refused_not_taken_for_txt2img(tmp_path):
    path = tmp_path / "e.png"
    path.write_bytes(b"")
    assert refusal(path) == f"The init image {path} is empty (0 bytes); choose an image file."
    assert ImageRequest("x", init_image=b"").validate() == ["the init image is empty (0 bytes)"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX thing")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    messages = []
    reader = threading.Thread(target=lambda: messages.append(refusal(fifo)), daemon=True)
    reader.start()
    reader.join(120)  # a hang detector, not a speed limit: a blocking open never returns at all
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert messages == [f"The init image {fifo} is a FIFO (named pipe), not an image file."]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_dev_zero_is_refused_before_reading():
    assert refusal("/dev/zero") == "The init image /dev/zero is a character device, not an image file."


def test_a_folder_and_a_missing_file(tmp_path):
    assert refusal(tmp_path) == f"The init image {tmp_path} is a folder, not an image file."
    missing = tmp_path / "nope.png"
    assert refusal(missing) == f"The init image {missing} does not exist."


def test_a_file_over_64_mb_is_refused_unread(tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_INIT_IMAGE_BYTES + 1)  # sparse: costs no disk
    assert refusal(huge) == f"The init image {huge} is larger than 64 MB; choose a smaller image."
    too_big = ImageRequest("x", init_image=b"\0" * (MAX_INIT_IMAGE_BYTES + 1)).validate()
    assert too_big == ["the init image is larger than 64 MB"]


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(9000, 8000))
    assert refusal(bomb) == (f"The init image {bomb} is 9000×8000 pixels (72 megapixels); Atelier takes at most "
                             "64 megapixels. Scale it down first.")
    with pytest.raises(EngineError) as err:  # beyond Pillow's own hard limit it is still one sentence
        check_init_image(header_only_png(30000, 30000))
    assert err.value.message == "The init image has far more than 64 megapixels; scale it down first."


def test_formats_outside_the_photo_ones_never_reach_a_decoder(tmp_path):
    eps = tmp_path / "drawing.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    message = refusal(eps)
    assert message.startswith(f"The init image {eps} could not be read (UnidentifiedImageError: ")
    assert message.endswith("Use a PNG, JPEG or WebP file.")
