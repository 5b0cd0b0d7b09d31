"""Every button, menu action, context-menu action and shortcut of the Images page, pressed once.

Dialogs are answered automatically (a dialog nobody expected fails the
test instead of waiting for ever), and pytest-qt turns any exception raised
inside a slot into a failure. The list of what was pressed is checked
against what the page shows, so a new button without a test fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QAbstractButton, QDialog, QFileDialog, QMenu, QMessageBox

from engines.library.installed import InstalledModel
from tests.fixtures.fake_image_host import small_png
from tests.fixtures.images_page import engine_ready, fill, make_page, run, system_opener, workspace  # noqa: F401
from tests.fixtures.images_page import write_light_model_folder

pytestmark = pytest.mark.gui

# What the page offers once it has a model, a distilled model, an image in the gallery and a run going.
EXPECTED_BUTTONS = {"Add model folder…", "Unload", "Use the recommended settings", "Random", "Choose…", "Clear",
                    "Generate", "Cancel", "Use these settings again", "Open", "Copy", "Reveal", "Delete…", "Details",
                    "Experiment (X/Y plot)", "Make grid", "Upscale"}
EXPECTED_MENU = ["Use these settings again", "Open", "Copy image", "Reveal in folder", "Upscale ×2", "Upscale ×4",
                 "Delete…"]


@pytest.fixture
def answered(monkeypatch, tmp_path, system_opener):
    """Every dialog the page may open, answered; any other dialog is a failure."""
    new_model = write_light_model_folder(tmp_path / "added-by-dialog")
    init = tmp_path / "start.png"
    small_png(48, 48, 2).save(init)
    asked = []

    def unexpected(dialog, *args, **kwargs):
        raise AssertionError(f"an unexpected dialog opened: {dialog.windowTitle()!r}")

    monkeypatch.setattr(QDialog, "exec", unexpected)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[1]) or QMessageBox.Yes)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: asked.append(a[1]) or str(new_model))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: asked.append(a[1]) or (str(init), ""))
    return asked


def settle(qtbot, page) -> None:
    """Wait until what a press started has ended: a run, an init-image read, the shown image's credentials."""
    qtbot.waitUntil(lambda: not page.running and not page.controls.init_group.loading
                    and not page.credentials_line.reading, timeout=10000)


def visible_buttons(page) -> dict[str, QAbstractButton]:
    return {b.text(): b for b in page.findChildren(QAbstractButton) if b.isVisibleTo(page) and b.text()}


def test_every_button_menu_action_and_shortcut(qtbot, workspace, engine_ready, answered, system_opener, tmp_path):
    turbo = write_light_model_folder(tmp_path / "sd-turbo")
    workspace.models.add(InstalledModel("import/sd-turbo", "sd-turbo", str(turbo), 1000, "diffusers", "diffusers",
                                        "import"))
    page = make_page(qtbot, workspace)
    pressed: set[str] = set()
    try:
        fill(page, seed=3)
        run(qtbot, page)  # an image in the gallery, selected: its buttons are enabled
        page.controls.select_model("import/sd-turbo")  # a distilled model shows "Use the recommended settings"

        # a run, so that Cancel can be pressed while it is enabled
        page.host.delay = 0.02
        fill(page, steps=100, seed=4)
        qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
        pressed.add("Generate")
        qtbot.waitUntil(lambda: page.status_line.text().startswith("Step 2"), timeout=10000)
        qtbot.mouseClick(page.controls.cancel_button, Qt.LeftButton)
        pressed.add("Cancel")
        settle(qtbot, page)
        page.host.delay = 0.0

        # "Upscale" opens its menu (×2, ×4); with no upscaler installed the banner says where to get one
        page.gallery_view.upscale_button.menu().actions()[1].trigger()
        pressed.add("Upscale")
        assert page.banner.text().startswith("No upscaler is installed. Get Real-ESRGAN ×4 on the Models page")

        # Pass after pass, press what is newly visible and enabled ("Clear" only after "Choose…"). Reusing an
        # image's settings and adding a model switch away from the distilled model, and deleting empties the
        # gallery, so those come last.
        last = {"Use these settings again": 1, "Add model folder…": 1, "Delete…": 2}
        while True:
            ready = [text for text, button in visible_buttons(page).items()
                     if text not in pressed and button.isEnabled()]
            if not ready:
                break
            text = min(ready, key=lambda t: last.get(t, 0))
            qtbot.mouseClick(visible_buttons(page)[text], Qt.LeftButton)
            pressed.add(text)
            settle(qtbot, page)
        assert EXPECTED_BUTTONS <= pressed, EXPECTED_BUTTONS - pressed
        assert set(visible_buttons(page)) <= pressed | EXPECTED_BUTTONS, "a new button needs a press here"
        assert workspace.models.find_by_path(tmp_path / "added-by-dialog") is not None  # Add model folder… worked
        qtbot.waitUntil(lambda: len(system_opener.opened) == 2, timeout=10000)  # Open and Reveal asked the system
        # two xdg-open processes, which may log in either order: the image, and its folder
        png = next(path for path in system_opener.opened if path.endswith(".png"))
        assert sorted(system_opener.opened) == sorted([png, str(Path(png).parent)]) and not page.banner.isVisible()

        # the context menu of a thumbnail, each action in turn
        for seed in (5, 6):
            fill(page, seed=seed)
            run(qtbot, page)
        seen_menus = []

        def choose_in_open_menu(action_index: int) -> None:
            """Runs inside the menu's own event loop: what a user's click on one entry does."""
            menu = next(m for m in page.gallery_view.findChildren(QMenu) if m.isVisible())
            actions = [a for a in menu.actions() if not a.isSeparator()]
            seen_menus.append([a.text() for a in actions])
            menu.close()
            actions[action_index].trigger()

        for index in range(len(EXPECTED_MENU)):
            qtbot.waitUntil(lambda: page.gallery_view.count() > 0, timeout=10000)
            item = page.gallery_view.list.item(0)
            position = page.gallery_view.list.visualItemRect(item).center()
            QTimer.singleShot(0, lambda i=index: choose_in_open_menu(i))
            page.gallery_view.list.customContextMenuRequested.emit(position)  # returns once the menu closed
            settle(qtbot, page)
        assert seen_menus == [EXPECTED_MENU] * len(EXPECTED_MENU)
        assert [e.seed for e in page.gallery.list()] == [5]  # "Delete…" (answered Yes) removed the newest image
        # a right-click on empty space opens nothing
        page.gallery_view.list.customContextMenuRequested.emit(QPoint(2000, 2000))

        # the keyboard: Copy and Delete on the strip, Ctrl+Enter and Esc on the page
        page.gallery_view.select(page.gallery_view.ids()[0])
        page.activateWindow()  # offscreen, the last context menu stays the "active window" after it closed
        page.gallery_view.list.setFocus()
        qtbot.waitUntil(page.gallery_view.list.hasFocus, timeout=10000)
        QGuiApplication.clipboard().clear()
        qtbot.keyClick(page.gallery_view.list, Qt.Key_C, Qt.ControlModifier)
        assert not QGuiApplication.clipboard().image().isNull()
        qtbot.keyClick(page.gallery_view.list, Qt.Key_Delete)
        assert page.gallery_view.count() == 0
        page.host.delay = 0.02
        fill(page, steps=100)
        qtbot.keyClick(page.controls.prompt, Qt.Key_Return, Qt.ControlModifier)
        assert page.running
        qtbot.waitUntil(lambda: page.status_line.text().startswith("Step 2"), timeout=10000)
        qtbot.keyClick(page.controls.prompt, Qt.Key_Escape)
        settle(qtbot, page)
        assert page.status_line.text() == "Cancelled"
    finally:
        page.shutdown()
