"""The Images page shows each image's Content Credentials, and says when the key had to be replaced.

The page runs on the stand-in engine host (real small PNGs); signing and
reading are the real c2pa-python, on the page's own key.
"""

from __future__ import annotations

import io

import pytest
from PySide6.QtCore import Qt

from tests.fixtures.fake_image_host import small_png
from tests.fixtures.images_page import engine_ready, fill, make_page, page, run, workspace  # noqa: F401  (fixtures)

pytest.importorskip("c2pa")
pytestmark = pytest.mark.gui


def credentials_read(qtbot, page) -> None:
    qtbot.waitUntil(lambda: page.credentials_line.credentials is not None, timeout=15000)


def test_a_new_image_shows_who_signed_it_and_that_it_is_self_signed(qtbot, page):
    fill(page, seed=21)
    run(qtbot, page)
    [entry] = page.gallery.list()
    credentials_read(qtbot, page)
    line = page.credentials_line
    assert line.image_id == entry.id and line.isVisible()
    signer = line.credentials.signer
    assert signer.startswith("Atelier on this computer (")
    assert line.summary.text() == (f"Credentials: Made by a generative AI model (dream-a): Text to image, 3 steps · "
                                   f"signed by {signer} · valid, self-signed (untrusted)")
    assert not line.details.isVisible() and line.details_button.isEnabled()
    qtbot.mouseClick(line.details_button, Qt.LeftButton)
    assert line.details.isVisible()
    details = line.details.text()
    for part in ("<b>Says</b>", "<b>Issuer</b></td><td>Atelier</td>", f"<b>Signed by</b></td><td>{signer}</td>",
                 "signingCredential.untrusted"):
        assert part in details, part
    assert not page.banner.isVisible()


def test_an_image_without_credentials_says_so(qtbot, page):
    out = io.BytesIO()
    small_png(64, 64, 4).save(out, "PNG")
    plain = page.gallery.save(out.getvalue(), {"prompt": "made elsewhere", "steps": 1}, seed=4, width=64, height=64,
                              model="elsewhere", backend="torch")
    page.refresh_gallery()
    page.gallery_view.select(plain.id)
    credentials_read(qtbot, page)
    assert page.credentials_line.summary.text() == "Credentials: This image carries no Content Credentials."
    assert not page.credentials_line.details_button.isEnabled()


def test_the_key_is_made_at_first_start_private_to_the_user(qtbot, workspace, engine_ready):
    import stat

    key = workspace.paths.config / "content-credentials.pem"
    assert not key.exists()
    page = make_page(qtbot, workspace)
    try:
        qtbot.waitUntil(key.exists, timeout=15000)  # no image made yet
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert not page.banner.isVisible()
    finally:
        page.shutdown()


def test_a_damaged_key_is_replaced_at_start_and_the_banner_says_so(qtbot, workspace, engine_ready):
    key = workspace.paths.config / "content-credentials.pem"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("this is not a key")
    page = make_page(qtbot, workspace)
    try:
        qtbot.waitUntil(page.banner.isVisible, timeout=15000)
        text = page.banner.text()
        assert text.startswith(f"The Content Credentials key ({key}) could not be used: it holds no PEM keys or "
                               "certificates; it was set aside as content-credentials.unreadable-")
        assert text.endswith(", and a new key was made. Images signed before keep their credentials.")
        fill(page, seed=8)
        run(qtbot, page)
        credentials_read(qtbot, page)
        assert page.credentials_line.summary.text().endswith(" · valid, self-signed (untrusted)")
        assert [e.seed for e in page.gallery.list()] == [8]
        assert not page.banner.isVisible()  # replaced once, said once
        assert len(list(key.parent.glob("content-credentials.unreadable-*.pem"))) == 1
    finally:
        page.shutdown()
