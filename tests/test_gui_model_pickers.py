"""Issue 9: each model picker lists only the models its engine can run, and a dropped folder is imported.

The real main window, offscreen; the chat engine is the FakeHost (nothing is
generated here), the models are weight-stripped files.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from engines.library.importer import import_model
from engines.workspace import open_workspace
from tests.fixtures import stripped_models as stripped
from tests.fixtures.fake_host import FakeHost

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, tmp_path, tiny_gguf, monkeypatch):
    from desktop.main_window import MainWindow
    from desktop.pages.chat_controller import ChatController

    # The Models page is built on a timer after the window shows; only the drop tests need it, and they
    # build it themselves (with_models_page), so no page outlives its test.
    build_models_page = MainWindow.ensure_models_page
    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)
    workspace = open_workspace()
    import_model(tiny_gguf, workspace.models)
    import_model(stripped.write_diffusers_folder(tmp_path / "dream-sd", "sd1"), workspace.models)
    import_model(stripped.write_bert_embedding(tmp_path / "minilm.gguf"), workspace.models)
    win = MainWindow(workspace, ChatController(workspace, host=FakeHost()))
    win.build_models_page = build_models_page.__get__(win)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


def with_models_page(window):
    window.ensure_models_page = window.build_models_page
    return window.ensure_models_page()


def combo_ids(combo) -> list[str]:
    return [combo.itemData(i) for i in range(combo.count())]


def test_the_chat_picker_lists_chat_models_and_the_images_picker_image_models(window):
    chat = combo_ids(window.chat_page.panel.model_combo)
    assert sorted(chat) == ["demo/gemma-3-270m-q4_k_m", "local/tiny-llama"]  # no image folder, no embedding model
    assert combo_ids(window.images_page.controls.model_combo) == ["local/dream-sd"]


def test_a_last_model_that_is_not_a_chat_model_is_not_offered_for_chat(window):
    window.workspace.settings.last_model_id = "local/dream-sd"  # e.g. chosen before kinds existed
    assert window.chat_controller.current_model().kind == "chat"


def test_dropping_a_model_folder_imports_it_for_the_images_page(qtbot, window, tmp_path):
    folder = stripped.write_onnx_folder(tmp_path / "turbo-onnx", "sd1")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    drop = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    page = with_models_page(window)
    with qtbot.waitSignal(page.model_installed, timeout=10000) as installed:
        window.dropEvent(drop)
    assert installed.args == ["local/turbo-onnx"]
    assert window.stack.currentWidget() is page and page.tabs.currentWidget() is page.installed_tab
    qtbot.waitUntil(lambda: "local/turbo-onnx" in combo_ids(window.images_page.controls.model_combo), timeout=10000)
    assert "local/turbo-onnx" not in combo_ids(window.chat_page.panel.model_combo)


def test_dropping_a_lora_adds_it_to_the_library_not_to_the_pickers(qtbot, window, tmp_path):
    lora = stripped.write_kohya_lora(tmp_path / "style.safetensors", "sdxl")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(lora))])
    tab = with_models_page(window).installed_tab
    window.dropEvent(QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    qtbot.waitUntil(lambda: tab.status.text().startswith("Added") or tab.banner.isVisible(), timeout=10000)
    assert not tab.banner.isVisible(), tab.banner.text()
    record = window.workspace.models.get("local/style.safetensors")
    assert (record.kind, record.base) == ("lora", "sdxl")
    assert tab.status.text() == f"Added {record.name}. The file stays where it is: {lora}"
    assert "local/style.safetensors" not in combo_ids(window.images_page.controls.model_combo)
    assert "local/style.safetensors" not in combo_ids(window.chat_page.panel.model_combo)
