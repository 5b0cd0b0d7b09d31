"""An image in the chat: dropped or pasted into the composer, sent to a vision model, shown in the message, saved.

The real window offscreen, on the real scheduler and engine host, with the
tiny Gemma 3 VLM (tests/fixtures/tiny_vlm.py) and its projector in one
folder, as a download leaves them; and a text-only model (the same weights
without the projector) for the refusal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QImage

from engines.library.installed import InstalledModel
from engines.settings import LoadPrefs
from engines.workspace import open_workspace
from tests.fixtures.bad_images import header_only_png, real_png
from tests.fixtures.models_page import make_page  # noqa: F401  (fixture)
from tests.fixtures.tiny_vlm import tiny_vlm  # noqa: F401  (session fixture)

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, tiny_vlm, tmp_path, monkeypatch):  # noqa: F811
    from desktop.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)
    folder = tmp_path / "tiny-vlm"
    folder.mkdir()
    shutil.copy(tiny_vlm.projector, folder / "mmproj-tiny-vlm-f32.gguf")
    lonely = tmp_path / "text-only"
    lonely.mkdir()
    ws = open_workspace()
    vision = ws.models.add(InstalledModel("local/tiny-vlm", "Tiny VLM", str(shutil.copy(tiny_vlm.model, folder)),
                                          1000, "llama_cpp", "gguf", "import", kind="chat"))
    text_only = ws.models.add(InstalledModel("local/text-only", "Text Only", str(shutil.copy(tiny_vlm.model, lonely)),
                                             1000, "llama_cpp", "gguf", "import", kind="chat"))
    ws.settings.last_model_id = vision.id
    for model in (vision, text_only):  # tiny models: one thread is faster on a busy 2-core box
        ws.settings.load_prefs[model.id] = LoadPrefs(threads=1)
    ws.save_settings()
    win = MainWindow(ws)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


def drop(composer, *paths: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    assert composer.canInsertFromMimeData(mime)
    composer.insertFromMimeData(mime)


@pytest.mark.slow
def test_a_dropped_image_reaches_the_vision_model_and_stays_with_the_message(qtbot, window, tmp_path):
    page, controller = window.chat_page, window.chat_controller
    photo = tmp_path / "photo.png"
    photo.write_bytes(real_png(64, 48, (30, 120, 220)))
    assert page.panel.model_note.text().endswith(" · reads images (drop one on the message box)")
    drop(page.composer, photo)
    assert page.attachments.names() == ["photo.png"] and page.attachments.isVisible()
    assert page.composer.toPlainText() == ""  # the path never lands in the text
    page.panel.max_tokens.setValue(4)
    page.composer.setPlainText("what is this?")
    page.send_button.click()
    qtbot.waitUntil(lambda: controller.streaming, timeout=10_000)
    qtbot.waitUntil(lambda: not controller.streaming, timeout=240_000)

    assert page.banner.isHidden(), page.banner.text()
    assert not page.attachments.isVisible() and page.attachments.images() == ()
    user, reply = controller.messages()[-2:]
    assert (user.content, reply.status) == ("what is this?", "complete")
    assert reply.stats["image_tokens"] == 16  # the projector's tokens were in the prompt
    assert controller.images_of_current() == {user.id: (photo.read_bytes(),)}
    html = page.view.toHtml()
    assert f'src="atelier-image:{user.id}/0"' in html
    thumb = page.view.loadResource(2, QUrl(f"atelier-image:{user.id}/0"))
    assert isinstance(thumb, QImage) and (thumb.width(), thumb.height()) == (64, 48)

    # The next turn sends the image again: the history keeps it.
    page.composer.setPlainText("and now?")
    page.send_button.click()
    qtbot.waitUntil(lambda: controller.streaming, timeout=10_000)
    qtbot.waitUntil(lambda: not controller.streaming, timeout=240_000)
    assert controller.messages()[-1].stats["image_tokens"] == 16

    # A model that cannot see is not handed a chat that holds images: it says so, and the text stays.
    page.panel.model_combo.setCurrentIndex(page.panel.model_combo.findData("local/text-only"))
    page.composer.setPlainText("and in words?")
    page.send_button.click()
    assert page.banner.text() == ("This chat holds images, and Text Only cannot see them: choose a vision model for "
                                  "this chat, or start a new chat.")
    assert page.composer.toPlainText() == "and in words?" and not controller.streaming
    assert not controller.regenerate() and controller.messages()[-1].stats["image_tokens"] == 16


@pytest.mark.slow
def test_a_pasted_image_is_attached_and_can_be_removed(qtbot, window):
    page = window.chat_page
    mime = QMimeData()
    image = QImage(40, 30, QImage.Format.Format_RGB32)
    image.fill(0xFF336699)
    mime.setImageData(image)
    page.composer.insertFromMimeData(mime)
    assert page.attachments.names() == ["pasted image"]
    assert QImage.fromData(page.attachments.images()[0]).size().toTuple() == (40, 30)
    page.attachments.remove(0)
    assert page.attachments.images() == () and not page.attachments.isVisible()


@pytest.mark.slow
def test_bad_images_and_a_text_only_model_are_refused_in_the_banner(qtbot, window, tmp_path):
    page, controller = window.chat_page, window.chat_controller
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(30000, 30000))
    drop(page.composer, bomb)
    assert page.banner.text() == ("The image bomb.png has far more than 64 megapixels; scale it down first. "
                                  "The image was not attached.")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    drop(page.composer, broken)
    assert page.banner.text().startswith("The image broken.jpg could not be read (")
    assert page.attachments.images() == ()

    page.panel.model_combo.setCurrentIndex(page.panel.model_combo.findData("local/text-only"))
    assert controller.current_model().id == "local/text-only"
    assert "reads images" not in page.panel.model_note.text()
    photo = tmp_path / "photo.png"
    photo.write_bytes(real_png())
    drop(page.composer, photo)
    assert page.banner.text() == (
        "Text Only cannot see images: no vision projector (an mmproj .gguf file made for it) is beside it in "
        f"{tmp_path / 'text-only'}. Choose a vision model, or send the message without the image.")
    assert page.attachments.images() == ()
    page.composer.setPlainText("hello")  # the chat goes on, in text
    page.panel.max_tokens.setValue(2)
    page.send_button.click()
    qtbot.waitUntil(lambda: controller.streaming, timeout=10_000)
    qtbot.waitUntil(lambda: not controller.streaming, timeout=240_000)
    assert controller.messages()[-1].status == "complete"


@pytest.mark.slow
def test_an_image_dropped_anywhere_on_the_chat_page_is_attached(qtbot, window, tmp_path):
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QDropEvent

    photo = tmp_path / "photo.jpg"
    from PIL import Image

    Image.new("RGB", (30, 20), (10, 20, 30)).save(photo, "JPEG")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photo))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.chat_page.attachments.names() == ["photo.jpg"]
    assert window.chat_page.banner.isHidden()


def test_the_catalog_says_a_vision_model_brings_its_projector(qtbot, make_page):  # noqa: F811
    library = open_workspace().library()
    page = make_page(library)
    count = len(library.catalog.entries)
    qtbot.waitUntil(lambda: len(page.catalog_tab.verdicts) == count, timeout=10000)
    assert page.catalog_tab.select("gemma-3-4b-it-q4_k_m")
    details = page.catalog_tab.details
    assert details.files.text() == ("2 files: the model and its vision projector (851 MB), so it can read images "
                                    "you drop into the chat")
    assert "with 1.7 GB for the vision projector" in details.verdict.explanation.text()
    assert page.catalog_tab.select("qwen2.5-1.5b-instruct-q4_k_m")
    assert details.files.text() == "1 file"
