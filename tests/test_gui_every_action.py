"""Every button, combo choice, link and action of the Models page, Settings and the first-run dialog, pressed.

Dialogs are answered automatically (message boxes, file pickers), the file
manager is a stand-in that records what it was asked to open, and the Hub
is a closed port on 127.0.0.1. pytest-qt fails a test on any exception
raised inside a slot, so a button whose handler raises fails here, however
deep the handler is.
"""

from __future__ import annotations

import socket

import pytest
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QAbstractButton, QComboBox, QFileDialog, QLabel, QMessageBox, QWidget

from desktop.widgets.expert import expert_mode
from engines.network import set_offline
from engines.workspace import open_workspace

pytestmark = pytest.mark.gui


@pytest.fixture
def answered(monkeypatch):
    """Every dialog answered without a person: yes to questions, cancel to choices, no file picked."""
    asked = []

    def exec_(box):
        asked.append(box.text())
        cancel = next((b for b in box.buttons() if box.buttonRole(b) == QMessageBox.RejectRole), None)
        (cancel or box.buttons()[0]).click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.Yes)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: "")
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: asked.append(url.toLocalFile()) or True)
    monkeypatch.setenv("PATH", "/nonexistent")  # no xdg-open: the stand-in openUrl above answers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    yield asked
    set_offline(False)
    expert_mode().set_advanced(True)


def press_everything(qtbot, root: QWidget, settle) -> int:
    """Click each visible, enabled button, choose each entry of each combo, follow each link, trigger each action."""
    pressed = 0
    buttons = sorted(root.findChildren(QAbstractButton), key=lambda b: b.text().startswith(("Remove", "Delete")))
    for button in buttons:  # the ones that take the selection away last
        if button.isVisibleTo(root) and button.isEnabled() and button.window() is root.window():
            button.click()
            pressed += 1
            settle()
    for combo in list(root.findChildren(QComboBox)):
        if combo.isVisibleTo(root) and combo.isEnabled():
            for index in range(combo.count()):
                combo.setCurrentIndex(index)
                pressed += 1
                settle()
    for label in list(root.findChildren(QLabel)):
        if "<a href" in label.text() and label.isVisibleTo(root):
            label.linkActivated.emit("advanced")
            pressed += 1
            settle()
    for action in list(root.findChildren(QAction)):
        if action.isEnabled():
            action.trigger()
            pressed += 1
            settle()
    return pressed


@pytest.mark.slow
def test_every_control_of_the_models_page(qtbot, answered, tiny_gguf):
    from desktop.pages.models_page import ModelsPage

    library = open_workspace().library()
    page = ModelsPage(library)
    qtbot.addWidget(page)
    page.resize(1024, 640)
    page.show()
    qtbot.waitUntil(lambda: page.advice is not None, timeout=20000)

    def settle():
        page.wait_idle()
        qtbot.wait(1)

    try:
        catalog = page.catalog_tab
        catalog.hub.query.setText("qwen")
        for entry_id in (page.advice.recommended["chat"].entry_id, "gemma-3-12b-it-q4_k_m"):
            catalog.select(entry_id)
            assert press_everything(qtbot, catalog, settle) > 5
        catalog.hub.query.setText("qwen")  # the line edit's clear button was pressed too
        catalog.hub.search_button.click()
        qtbot.waitUntil(lambda: catalog.hub.message.isVisible(), timeout=10000)  # the unreachable Hub, in words
        assert catalog.hub.message.text().startswith("Could not reach Hugging Face: 127.0.0.1:")
        page.tabs.setCurrentWidget(page.installed_tab)
        qtbot.waitUntil(lambda: page.installed_tab.loaded, timeout=20000)
        page.installed_tab.import_file(str(tiny_gguf))
        qtbot.waitUntil(lambda: len(page.installed_tab.model.rows) == 2, timeout=20000)
        for row in range(2):
            page.installed_tab.table.selectRow(0)  # the remove button removes it: the next is row 0 again
            press_everything(qtbot, page.installed_tab, settle)
        page.tabs.setCurrentWidget(page.downloads_tab)
        press_everything(qtbot, page.downloads_tab, settle)
        press_everything(qtbot, page, settle)  # the header's buttons, and the Downloads rows again
        assert page.welcome is not None and page.welcome.isVisible()  # "Help me choose…" opened it
    finally:
        for dialog in [page.welcome] if page.welcome else []:
            dialog.close()
        page.shutdown()
        page.wait_idle()
        library.queue().shutdown(wait=True, timeout=5)


def test_every_control_of_the_settings_page(qtbot, answered):
    from desktop.pages.settings_page import SettingsPage

    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    page.show()
    page.token.setText("hf_not_saved")
    assert press_everything(qtbot, page, lambda: qtbot.wait(1)) >= 9
    assert answered  # the folder buttons asked the (stand-in) file manager


def test_every_control_of_the_first_run_dialog(qtbot, answered):
    from desktop.pages.models_page import ModelsPage

    library = open_workspace().library()
    page = ModelsPage(library)
    qtbot.addWidget(page)
    qtbot.waitUntil(lambda: page.advice is not None, timeout=20000)
    try:
        dialog = page.show_welcome()
        qtbot.waitUntil(lambda: dialog.reachable is False, timeout=10000)
        for _ in range(2):  # its buttons close it: open it again and press the rest
            page.show_welcome()
            press_everything(qtbot, dialog, lambda: page.wait_idle())
    finally:
        page.shutdown()
        page.wait_idle()
        library.queue().shutdown(wait=True, timeout=5)
