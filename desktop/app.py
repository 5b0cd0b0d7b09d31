"""Starting the GUI: application object, single-instance lock, theme, main window.

Kept cheap on purpose: no engine library is imported here, so the window
appears in well under a second and the engines load on first use. A
second start on the same profile brings the running window to the front
and exits 0 (``desktop.single_instance``).
"""

from __future__ import annotations

import os
import sys
import time

_T0 = time.perf_counter()


def run_gui(argv: list[str] | None = None) -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from desktop.main_window import MainWindow
    from desktop.single_instance import SingleInstance
    from desktop.theme import apply_theme
    from engines.paths import app_paths
    from engines.workspace import open_workspace

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Atelier")
    app.setOrganizationName("Atelier")
    QGuiApplication.setDesktopFileName("atelier")
    from PySide6.QtGui import QIcon

    from resources import icon_path

    app.setWindowIcon(QIcon(str(icon_path())))
    paths = app_paths()
    instance = SingleInstance(paths.data)
    if not instance.acquire():
        if instance.ask_running_to_show():
            print("Atelier is already running with this profile; its window was brought to the front.",
                  file=sys.stderr)
        else:
            print(f"Atelier is already running with this profile ({paths.data}), but its window did not answer.",
                  file=sys.stderr)
        return 0
    workspace = open_workspace(paths)
    apply_theme(app, workspace.settings.theme)
    from desktop.widgets.expert import expert_mode
    from desktop.widgets.wheel_guard import install_wheel_guard

    install_wheel_guard(app)  # spin boxes and combo boxes take the mouse wheel only when focused
    expert_mode().set_advanced(workspace.settings.advanced_controls)  # before the pages mark their expert controls
    window = MainWindow(workspace)

    def follow_system(_scheme=None) -> None:
        if workspace.settings.theme == "system":
            apply_theme(app, "system")
            window.chat_page.view.set_theme(app.palette().window().color().lightness() < 128)

    window.settings_page.theme_changed.connect(
        lambda choice: window.chat_page.view.set_theme(apply_theme(app, choice))
    )
    app.styleHints().colorSchemeChanged.connect(follow_system)
    window.chat_page.view.set_theme(app.palette().window().color().lightness() < 128)
    window.show()

    def first_run() -> None:
        from desktop.pages.models.first_run import show_first_run

        show_first_run(window)  # once per profile: the recommended model for this machine, and privacy

    QTimer.singleShot(700, first_run)
    instance.show_requested.connect(window.bring_to_front)
    if os.environ.get("ATELIER_REPORT_STARTUP"):
        QTimer.singleShot(0, lambda: print(f"window shown after {time.perf_counter() - _T0:.3f} s", flush=True))
        instance.show_requested.connect(lambda: print("window brought to the front by a second start", flush=True))
    if os.environ.get("ATELIER_QUIT_AFTER_SHOW"):
        QTimer.singleShot(int(os.environ["ATELIER_QUIT_AFTER_SHOW"]), window.close)
    code = app.exec()
    instance.release()
    if not window.chat_controller.worker_stopped:
        # The chat worker is stuck outside the engine (its host is already killed). Tearing Python down
        # would destroy its running QThread, which aborts the process; everything is saved, so leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
