"""The Images page on a gallery database it cannot use: it opens, says why, and still keeps every image.

In the app the chat history opens first and sets a damaged file aside
(engines/chat/opening.py); a database that stays unusable (read-only,
an I/O error) reaches the page as it is, which must never stop the window.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.diffusion.png_meta import read_png_parameters
from tests.fixtures.images_page import engine_ready, fill, make_page, run, workspace  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


def test_a_database_it_cannot_use_costs_the_index_not_the_images(qtbot, workspace, engine_ready):
    database = workspace.paths.database
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(os.urandom(40960))
    page = make_page(qtbot, workspace)
    try:
        images = workspace.paths.data / "images"
        assert page.gallery_view.problem_label.isVisible()
        assert page.gallery_view.problem_label.text() == (
            f"The gallery's index ({database}) cannot be used: file is not a database. New images are still saved "
            f"as files in {images}; this list shows only the ones made now.")
        fill(page, seed=21, batch=2)
        run(qtbot, page)
        assert not page.banner.isVisible(), page.banner.text()
        files = sorted(images.rglob("*.png"))
        assert len(files) == 2 and sorted(read_png_parameters(f)["seed"] for f in files) == [21, 22]
        assert page.gallery_view.count() == 2 and page.view.kind == "image"
        newest = page.gallery_view.ids()[0]
        page.gallery_view.select(newest, emit=True)
        assert page.reuse_settings(newest) == [] and page.controls.seed() == 22
        assert page.delete_image(newest, confirm=False)
        assert len(list(images.rglob("*.png"))) == 1 and page.gallery_view.count() == 1
        assert Path(page.gallery.list()[0].path).exists()
    finally:
        page.shutdown()
