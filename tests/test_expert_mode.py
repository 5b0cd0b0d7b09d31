"""Simple and advanced mode: expert controls hidden (with their labels) until asked for, and remembered."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QCheckBox, QFormLayout, QHBoxLayout, QLabel, QSpinBox, QWidget

from desktop.widgets.expert import HiddenControlsNote, expert_mode, mark_advanced
from engines.workspace import open_workspace

pytestmark = pytest.mark.gui


@pytest.fixture
def mode(qapp):
    """The application's switch, put back to "advanced" (what every other test expects) afterwards."""
    switch = expert_mode()
    switch.set_advanced(True)
    yield switch
    switch.set_advanced(True)


def visible_rows(form: QFormLayout) -> list[str]:
    labels = [form.itemAt(row, QFormLayout.ItemRole.LabelRole) for row in range(form.rowCount())]
    return [item.widget().text() for item in labels if item is not None and item.widget().isVisibleTo(form.parentWidget())]


def test_a_marked_form_row_hides_with_its_label_and_comes_back(qtbot, mode):
    box = QWidget()
    qtbot.addWidget(box)
    form = QFormLayout(box)
    temperature, top_k = QSpinBox(), QSpinBox()
    seed_row = QHBoxLayout()
    random_seed, seed = QCheckBox("Random"), QSpinBox()
    seed_row.addWidget(random_seed)
    seed_row.addWidget(seed)
    form.addRow("Temperature", temperature)
    form.addRow("Top-k", top_k)
    form.addRow("Seed", seed_row)
    box.show()
    mark_advanced(top_k, seed_row)
    assert visible_rows(form) == ["Temperature", "Top-k", "Seed"]
    mode.set_advanced(False)
    assert visible_rows(form) == ["Temperature"]
    assert not random_seed.isVisibleTo(box) and not seed.isVisibleTo(box)
    mode.set_advanced(True)
    assert visible_rows(form) == ["Temperature", "Top-k", "Seed"]


def test_a_control_hidden_by_its_page_stays_hidden_in_advanced_mode(qtbot, mode):
    box = QWidget()
    qtbot.addWidget(box)
    recommend = QLabel("Use the recommended settings", box)
    recommend.hide()  # the page shows it only for Turbo models
    mark_advanced(recommend)
    mode.set_advanced(False)
    mode.set_advanced(True)
    assert recommend.isHidden()


def test_the_chat_panel_in_simple_mode_keeps_model_system_prompt_and_temperature(qtbot, mode):
    from desktop.widgets.chat_settings_panel import ChatSettingsPanel

    panel = ChatSettingsPanel()
    qtbot.addWidget(panel)
    panel.show()
    expert = [panel.top_p, panel.top_k, panel.min_p, panel.repeat_penalty, panel.max_tokens, panel.seed,
              panel.threads, panel.gpu_layers, panel.cache_type, panel.context]
    assert all(w.isVisibleTo(panel) for w in expert) and not panel.hidden_note.isVisibleTo(panel)
    mode.set_advanced(False)
    assert not any(w.isVisibleTo(panel) for w in expert)
    for kept in (panel.model_combo, panel.system_prompt, panel.temperature):
        assert kept.isVisibleTo(panel)
    assert panel.hidden_note.isVisibleTo(panel)
    assert panel.hidden_note.text() == ('Simple mode: expert controls are hidden. '
                                        '<a href="advanced">Show all settings</a>')
    panel.hidden_note.linkActivated.emit("advanced")  # the user clicks "Show all settings"
    assert mode.advanced and all(w.isVisibleTo(panel) for w in expert)


def test_the_images_panel_in_simple_mode_hides_backend_sampler_and_seed(qtbot, mode):
    from desktop.pages.images.controls import ImageControls

    controls = ImageControls()
    qtbot.addWidget(controls)
    controls.show()
    mode.set_advanced(False)
    for hidden in (controls.backend_combo, controls.sampler_combo, controls.seed_spin, controls.random_seed):
        assert not hidden.isVisibleTo(controls)
    for kept in (controls.model_combo, controls.prompt, controls.steps_spin, controls.guidance_spin,
                 controls.batch_spin, controls.generate_button):
        assert kept.isVisibleTo(controls)
    mode.set_advanced(True)
    assert controls.backend_combo.isVisibleTo(controls) and controls.seed_spin.isVisibleTo(controls)


def test_the_switch_is_remembered_in_the_settings(qtbot, mode):
    from desktop.pages.settings_page import SettingsPage

    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    assert page.controls.currentText() == "Advanced: every setting"
    page.controls.setCurrentIndex(page.controls.findData(False))
    assert not mode.advanced and open_workspace().settings.advanced_controls is False
    note = HiddenControlsNote()
    qtbot.addWidget(note)
    note.linkActivated.emit("advanced")  # "Show all settings" on a panel: Settings follows and saves
    assert page.controls.currentText() == "Advanced: every setting"
    assert open_workspace().settings.advanced_controls is True
