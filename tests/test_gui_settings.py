"""The Settings page: theme, overflow policy and the offline switch."""

import pytest

from engines.library.network import network_allowed, set_offline
from engines.workspace import open_workspace

pytestmark = pytest.mark.gui


def test_offline_switch_is_saved_and_blocks_the_network(qtbot):
    from desktop.pages.settings_page import SettingsPage

    workspace = open_workspace()
    page = SettingsPage(workspace)
    qtbot.addWidget(page)
    try:
        page.offline.setChecked(True)
        assert not network_allowed()
        assert open_workspace().settings.offline  # persisted
        page.offline.setChecked(False)
        assert network_allowed()
    finally:
        set_offline(False)


def test_theme_and_overflow_choices_persist(qtbot):
    from desktop.pages.settings_page import SettingsPage

    workspace = open_workspace()
    page = SettingsPage(workspace)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.theme_changed):
        page.theme.setCurrentIndex(page.theme.findData("dark"))
    page.overflow.setCurrentIndex(page.overflow.findData("drop_oldest"))
    again = open_workspace().settings
    assert again.theme == "dark" and again.overflow_policy == "drop_oldest"
