"""What Atelier connects to, and when, in the words every page uses; the sidebar's privacy badge.

Atelier runs everything on this computer. Only three things ever open a
network connection, and only when the user asks for them: searching the
Hugging Face Hub, downloading a model, and chatting with a model on a
remote server the user added (engines/remote). There is no telemetry, no
update check, no crash report. Offline mode blocks all three (a remote
server on this computer, on loopback, stays allowed). Settings, the
first-run dialog and the sidebar badge all say so from the text here, so
they can never disagree.
"""

from __future__ import annotations

import html
import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel

# engines.network.OFFLINE_ENV; read here directly because importing that module
# imports requests, which the window must not pay for at start-up.
OFFLINE_ENV = "ATELIER_OFFLINE"

CONNECTS = (
    "Searching Hugging Face, only when you click Search on the Models page.",
    "Downloading a model, only when you click Download (and resuming it later).",
    "Chatting with a model on a remote server you added (Models, Add remote server…): your messages go to "
    "that server, and only to it.",
)
NEVER = (
    "Nothing else connects: your chats, prompts, images and files never leave this computer, except what you "
    "send to a model on a remote server.",
    "No telemetry, no usage statistics, no update checks, no crash reports.",
    "Offline mode blocks even searching, downloading and remote servers: Atelier then opens no connection "
    "beyond this computer.",
)


def offline_mode_on(settings) -> bool:
    """Offline mode from the Settings switch or the ``ATELIER_OFFLINE`` environment variable."""
    return bool(settings.offline) or offline_forced_by_environment()


def offline_forced_by_environment() -> bool:
    """True when ``ATELIER_OFFLINE`` turns offline mode on, whatever the Settings switch says."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def privacy_html() -> str:
    """The facts as rich text: what can connect and when, then what never does."""
    connects = "".join(f"<li>{html.escape(line)}</li>" for line in CONNECTS)
    never = "".join(f"<li>{html.escape(line)}</li>" for line in NEVER)
    return (f"<b>What can connect to the internet, and when</b><ul style='margin-left:-20px'>{connects}</ul>"
            f"<b>What never does</b><ul style='margin-left:-20px'>{never}</ul>")


def privacy_text() -> str:
    """The same facts as plain text (tooltips)."""
    return "\n".join(["Connects only when you click:", *(f"• {line}" for line in CONNECTS), "", *NEVER])


class PrivacyBadge(QLabel):
    """The sidebar's line: private, or offline, with the details as a tooltip; a click opens Settings."""

    clicked = Signal()

    def __init__(self, offline: bool, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("Muted")
        self.setWordWrap(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip(privacy_text() + "\n\nClick for the privacy settings.")
        self.set_offline(offline)

    def set_offline(self, offline: bool) -> None:
        self.offline = offline
        if offline:
            self.setText("● Offline mode: no network connections")
        else:
            self.setText("Private: everything runs on this computer")

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mouseReleaseEvent(event)
