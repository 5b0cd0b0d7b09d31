"""The Images page remembers, follows the model, keeps its messages true, and answers the keyboard.

Remembered across restarts: prompt, negative prompt, size, steps, guidance,
sampler, seed mode and backend (``Settings.images``). A newly chosen model
starts at its native size. A "Can't generate yet" message goes as soon as
its cause does. Ctrl+Enter generates and Esc cancels. Open and Reveal say
when the system has no program for them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from engines.library.installed import InstalledModel
from engines.settings import ImagePrefs, load_settings
from engines.workspace import open_workspace
from tests.fixtures.images_page import (  # noqa: F401  (fixtures)
    engine_ready,
    fill,
    make_page,
    page,
    run,
    system_opener,
    workspace,
)
from tests.fixtures.images_page import write_light_model_folder

pytestmark = pytest.mark.gui


def test_the_page_remembers_its_settings_across_restarts(qtbot, workspace, engine_ready):
    first = make_page(qtbot, workspace)
    c = first.controls
    c.select_model("import/dream-b")
    fill(first, "a red fox in snow", width=640, height=384, steps=9, seed=77, negative="text", guidance=4.5,
         sampler="DDIM", backend="onnx")
    settings_file = workspace.paths.settings_file
    # saved a moment after the last edit, without waiting for a Generate or a close
    qtbot.waitUntil(lambda: settings_file.exists() and load_settings(settings_file).images.prompt == "a red fox in snow",
                    timeout=10000)
    c.prompt.setPlainText("a red fox in deep snow")
    first.shutdown()  # a close saves what the timer had not yet
    saved = json.loads(settings_file.read_text(encoding="utf-8"))["images"]
    assert saved == {"model_id": "import/dream-b", "backend": "onnx", "prompt": "a red fox in deep snow",
                     "negative_prompt": "text", "width": 640, "height": 384, "steps": 9, "guidance": 4.5,
                     "sampler": "DDIM", "random_seed": False, "seed": 77, "upscaler_id": None, "loras": [],
                     "previews": "tiny", "final_decode": "full", "step_cache": False, "step_cache_interval": 3,
                     "grid_axes": ["steps="], "experiment_open": False}  # LoRAs, Speed and Experiment: tests/test_image_prefs_memory.py

    again = make_page(qtbot, open_workspace())  # a fresh start reads settings.json
    try:
        c = again.controls
        assert c.current_model_id() == "import/dream-b" and c.backend_combo.currentData() == "onnx"
        assert c.prompt.toPlainText() == "a red fox in deep snow" and c.negative.toPlainText() == "text"
        assert (c.width_spin.value(), c.height_spin.value(), c.steps_spin.value()) == (640, 384, 9)
        assert c.guidance_spin.value() == 4.5 and c.sampler_combo.currentText() == "DDIM"
        assert not c.random_seed.isChecked() and c.seed() == 77 and c.seed_spin.isEnabled()
    finally:
        again.shutdown()


def test_generate_saves_the_settings_it_used(qtbot, page):
    fill(page, "a castle", seed=None)
    run(qtbot, page)
    prefs = load_settings(page.workspace.paths.settings_file).images
    assert prefs.prompt == "a castle" and prefs.random_seed and prefs.model_id == "import/dream-a"


def test_unusable_remembered_values_fall_back_one_by_one():
    prefs = ImagePrefs.model_validate({"prompt": "kept", "width": "wide", "steps": 0, "backend": "tensorrt",
                                       "sampler": "From The Future", "seed": -5, "unknown": 1})
    assert prefs.prompt == "kept" and prefs.sampler == "From The Future"
    assert (prefs.width, prefs.steps, prefs.backend, prefs.seed) == (512, 20, "auto", 0)
    assert ImagePrefs.model_validate(None) == ImagePrefs()


def test_a_sampler_this_version_lacks_is_left_alone(qtbot, workspace, engine_ready):
    workspace.settings.images = ImagePrefs(model_id="import/dream-a", sampler="From The Future", steps=11)
    page = make_page(qtbot, workspace)
    try:
        assert page.controls.sampler_combo.currentText() == "Euler" and page.controls.steps_spin.value() == 11
    finally:
        page.shutdown()


def test_a_newly_chosen_model_starts_at_its_native_size(qtbot, workspace, engine_ready, tmp_path):
    folder = write_light_model_folder(tmp_path / "dream-xl", native=1024)
    workspace.models.add(InstalledModel("import/dream-xl", "dream-xl", str(folder), 1000, "diffusers", "diffusers",
                                        "import"))
    workspace.settings.images = ImagePrefs(model_id="import/dream-a", width=768, height=512)
    page = make_page(qtbot, workspace)
    try:
        c = page.controls
        assert c.current_model_id() == "import/dream-a"
        assert (c.width_spin.value(), c.height_spin.value()) == (768, 512)  # remembered for this very model
        c.select_model("import/dream-xl")
        assert (c.width_spin.value(), c.height_spin.value()) == (1024, 1024)
        assert c.preset_combo.currentText() == "1024 × 1024" and not c.size_note.isVisible()
        c.select_model("import/dream-b")
        assert (c.width_spin.value(), c.height_spin.value()) == (512, 512)
        page.refresh_models()  # the Models page changed something: the same model keeps the user's size
        c.set_size(576, 448)
        page.refresh_models()
        assert (c.width_spin.value(), c.height_spin.value()) == (576, 448)
    finally:
        page.shutdown()


def test_a_remembered_size_is_not_forced_on_another_model(qtbot, workspace, engine_ready, tmp_path):
    folder = write_light_model_folder(tmp_path / "dream-xl", native=1024)
    workspace.models.add(InstalledModel("import/dream-xl", "dream-xl", str(folder), 1000, "diffusers", "diffusers",
                                        "import"))
    workspace.settings.images = ImagePrefs(model_id="import/dream-xl", width=768, height=512)
    workspace.models.remove("import/dream-xl")  # the model it was for is gone: the next one starts native
    page = make_page(qtbot, workspace)
    try:
        assert page.controls.current_model_id() == "import/dream-a"
        assert (page.controls.width_spin.value(), page.controls.height_spin.value()) == (512, 512)
    finally:
        page.shutdown()


def test_cant_generate_messages_go_as_soon_as_their_cause(qtbot, page):
    c = page.controls
    fill(page, width=500)
    qtbot.mouseClick(c.generate_button, Qt.LeftButton)
    assert c.validation.isVisible()
    assert c.validation.text() == "Can’t generate yet: width must be a multiple of 8 (got 500; try 496)."
    c.prompt.setPlainText("")
    assert c.validation.text() == ("Can’t generate yet: the prompt is empty; width must be a multiple of 8 "
                                   "(got 500; try 496).")
    c.set_size(496, 512)
    assert c.validation.text() == "Can’t generate yet: the prompt is empty."
    c.prompt.setPlainText("a fox")
    assert not c.validation.isVisible()
    assert page.host.requests == []  # fixing it never starts a run by itself


def test_choosing_a_model_clears_choose_a_model_first(qtbot, engine_ready, tmp_path):
    ws = open_workspace()
    page = make_page(qtbot, ws)
    try:
        fill(page)
        qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
        assert page.controls.validation.text().startswith("Can’t generate yet: choose an image model first")
        folder = write_light_model_folder(tmp_path / "dream-c")
        ws.models.add(InstalledModel("import/dream-c", "dream-c", str(folder), 1000, "diffusers", "diffusers",
                                     "import"))
        page.refresh_models("import/dream-c")  # as when the Models page installs one
        assert page.controls.current_model_id() == "import/dream-c"
        assert not page.controls.validation.isVisible()
    finally:
        page.shutdown()


def test_ctrl_enter_generates_and_esc_cancels(qtbot, page):
    c = page.controls
    assert "Ctrl+Enter" in c.generate_button.toolTip() and "Esc" in c.cancel_button.toolTip()
    fill(page, steps=3)
    c.prompt.setFocus()
    qtbot.keyClick(c.prompt, Qt.Key_Return, Qt.ControlModifier)
    assert page.running and c.prompt.toPlainText() == "a lighthouse at dawn"  # no new line typed
    qtbot.waitUntil(lambda: not page.running, timeout=10000)
    assert len(page.host.requests) == 1 and len(page.gallery.list()) == 1
    qtbot.keyClick(c.prompt, Qt.Key_Escape)  # nothing runs: Esc does nothing here
    assert page.status_line.text().startswith("Made 1 image")
    page.host.delay = 0.02
    fill(page, steps=150)
    qtbot.keyClick(c.negative, Qt.Key_Enter, Qt.ControlModifier)  # the keypad's Enter too
    qtbot.waitUntil(lambda: page.status_line.text().startswith("Step 2"), timeout=10000)
    qtbot.keyClick(c.negative, Qt.Key_Escape)
    qtbot.waitUntil(lambda: not page.running, timeout=10000)
    assert page.status_line.text() == "Cancelled" and len(page.host.requests) == 2


def test_open_and_reveal_say_when_nothing_can_open_files(qtbot, page, system_opener):
    fill(page, seed=4)
    run(qtbot, page)
    entry = page.gallery.list()[0]
    folder = str(Path(entry.path).parent)
    qtbot.mouseClick(page.gallery_view.open_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: system_opener.opened == [entry.path], timeout=10000)
    system_opener.works = False  # a desktop with no image viewer and no file manager
    qtbot.mouseClick(page.gallery_view.open_button, Qt.LeftButton)
    qtbot.waitUntil(page.banner.isVisible, timeout=10000)  # the failure is said where the user clicked
    assert page.banner.text() == (f"Could not open {entry.path}: no app or file manager is set up to open it"
                                  f"{' on this system' if not sys.platform.startswith('linux') else ''}. "
                                  "Its location was copied to the clipboard.")
    assert QGuiApplication.clipboard().text() == entry.path
    page._show_banner("")
    qtbot.mouseClick(page.gallery_view.reveal_button, Qt.LeftButton)
    if sys.platform.startswith("linux"):
        qtbot.waitUntil(page.banner.isVisible, timeout=10000)
        assert system_opener.opened[-1] == folder
        assert page.banner.text().startswith(f"Could not open {folder}: no app or file manager is set up to open it")
    system_opener.works = True
    qtbot.mouseClick(page.gallery_view.open_button, Qt.LeftButton)
    assert not page.banner.isVisible()  # a new try starts clean: no stale failure left on the page
