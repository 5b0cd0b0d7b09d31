"""The Settings page: theme, overflow policy and the offline switch."""

import pytest
from PySide6.QtCore import Qt

from engines.network import network_allowed, set_offline
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


# ---- privacy, offline, the token, the folders ---------------------------------------------


@pytest.fixture
def keyring_backend():
    """Put the keyring library's backend back after a test replaces it."""
    import keyring

    before = keyring.get_keyring()
    yield keyring
    keyring.set_keyring(before)


def test_saving_a_token_without_a_keyring_says_so_plainly_and_clears_the_field(qtbot, keyring_backend):
    from keyring.backends import fail

    from desktop.pages.settings_page import SettingsPage

    keyring_backend.set_keyring(fail.Keyring())  # what a headless Linux without a secret service has
    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    page.token.setText("hf_secret")
    page.save_token_button.click()
    assert page.token.text() == ""  # never looks saved
    assert page.banner.isVisibleTo(page)
    assert page.banner.text() == (
        "No system keyring is available here, so the token was not saved. Set the HF_TOKEN environment "
        "variable before starting Atelier instead, or install a keyring service (GNOME Keyring, KWallet).")
    assert "recommended backend" not in page.banner.text()  # not the library's own words


def test_a_keyring_that_refuses_is_named_as_such(qtbot, keyring_backend):
    from keyring.backend import KeyringBackend
    from keyring.errors import PasswordSetError

    from desktop.pages.settings_page import SettingsPage

    class Locked(KeyringBackend):
        priority = 1

        def get_password(self, service, username):
            return None

        def set_password(self, service, username, password):
            raise PasswordSetError("Cannot unlock the collection")

        def delete_password(self, service, username):
            raise PasswordSetError("locked")

    keyring_backend.set_keyring(Locked())
    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    page.token.setText("hf_secret")
    page.save_token_button.click()
    assert page.token.text() == ""
    assert page.banner.text().startswith("The system keyring did not accept the token (it may be locked), "
                                         "so the token was not saved.")


def test_a_saved_token_is_confirmed(qtbot, keyring_backend):
    from keyring.backend import KeyringBackend

    from desktop.pages.settings_page import SettingsPage

    class Memory(KeyringBackend):
        priority = 1
        store: dict = {}

        def get_password(self, service, username):
            return self.store.get((service, username))

        def set_password(self, service, username, password):
            self.store[(service, username)] = password

        def delete_password(self, service, username):
            self.store.pop((service, username), None)

    keyring_backend.set_keyring(Memory())
    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    page.token.setText("hf_secret")
    page.save_token_button.click()
    assert Memory.store[("atelier", "huggingface")] == "hf_secret"
    assert page.token.text() == "" and not page.banner.isVisibleTo(page)
    assert page.network_note.text() == "Token saved in the system keyring."


def test_settings_say_what_connects_and_when(qtbot):
    from desktop.pages.settings_page import SettingsPage
    from desktop.privacy import CONNECTS, NEVER

    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    text = page.privacy.text()
    assert "What can connect to the internet, and when" in text
    for line in (*CONNECTS, *NEVER):
        assert line.replace("&", "&amp;") in text
    assert "No telemetry" in text


def test_the_offline_switch_tells_the_sidebar(qtbot):
    from desktop.main_window import MainWindow

    window = MainWindow(open_workspace())
    qtbot.addWidget(window)
    window.ensure_models_page()  # built now, so that closing the window stops its background work
    try:
        badge = window.privacy_badge
        assert badge.text() == "Private: everything runs on this computer"
        window.settings_page.offline.setChecked(True)
        assert badge.text() == "● Offline mode: no network connections"
        assert "Offline mode is on" in window.settings_page.network_note.text()
        qtbot.mouseClick(badge, Qt.MouseButton.LeftButton)
        assert window.stack.currentWidget() is window.settings_page
        window.settings_page.offline.setChecked(False)
        assert badge.text() == "Private: everything runs on this computer"
    finally:
        set_offline(False)
        window.close()
        window.models_page.wait_idle()


def test_offline_from_the_environment_is_shown_and_cannot_be_unticked(qtbot, monkeypatch):
    from desktop.pages.settings_page import SettingsPage

    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    assert page.offline.isChecked() and not page.offline.isEnabled()
    assert page.offline.toolTip() == "ATELIER_OFFLINE=1 is set in the environment: offline mode stays on."


def test_a_folder_that_cannot_be_opened_is_reported_on_the_page(qtbot, monkeypatch, tmp_path):
    import desktop.open_external as open_external
    from desktop.pages.settings_page import SettingsPage
    from PySide6.QtGui import QDesktopServices

    monkeypatch.setenv("PATH", str(tmp_path))  # no xdg-open: Qt decides, and finds nothing to open it with
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)
    page = SettingsPage(open_workspace())
    qtbot.addWidget(page)
    page.folder_buttons[1].click()  # Models
    assert page.banner.isVisibleTo(page)
    assert page.banner.text() == (f"Could not open {page.workspace.paths.models}: no app or file manager is set "
                                  "up to open it on this system. Its location was copied to the clipboard.")
    assert open_external._running == set()


def test_settings_that_cannot_be_saved_are_named_not_a_traceback(qtbot, monkeypatch):
    from desktop.pages.settings_page import SettingsPage

    workspace = open_workspace()
    page = SettingsPage(workspace)
    qtbot.addWidget(page)

    def read_only():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(workspace, "save_settings", read_only)
    page.theme.setCurrentIndex(page.theme.findData("dark"))
    assert page.banner.text() == ("The settings could not be saved: Permission denied. "
                                  "The change applies until Atelier closes.")
    assert workspace.settings.theme == "dark"


def test_a_settings_file_set_aside_at_start_is_named_in_the_window(qtbot):
    """A settings.json that is JSON but not settings (``null``) opens the app on defaults, and says so once."""
    from desktop.main_window import MainWindow
    from engines.paths import app_paths

    paths = app_paths()
    paths.settings_file.write_text("null", encoding="utf-8")
    workspace = open_workspace()
    assert workspace.settings_problem  # the reader set it aside
    window = MainWindow(workspace)
    qtbot.addWidget(window)
    try:
        assert window.chat_page.banner.isVisibleTo(window)
        assert window.chat_page.banner.text() == workspace.settings_problem
        assert list(paths.config.glob("settings.unreadable-*.json"))
    finally:
        window.close()
