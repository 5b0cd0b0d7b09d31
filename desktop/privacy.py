"""What Atelier connects to, and when, in the words every page uses; the sidebar's privacy badge.

Atelier runs everything on this computer. Only three things ever open a
network connection, and only when the user asks for them: searching the
Hugging Face Hub, downloading a model, and chatting with a model on a
remote server the user added (engines/remote). There is no telemetry, no
update check, no crash report. Offline mode blocks all three (a remote
server on this computer, on loopback, stays allowed). One thing accepts
connections: the API server, while the user runs it (the Server page),
from this computer only unless the user chose every network interface.
Settings, the first-run dialog and the sidebar badge all say so from the
text here, so they can never disagree.

The badge says what is true now: "Private" only while nothing leaves the
computer. The chat page's model on a remote server (beyond loopback) and
the API server open to other machines each change its line, and its
tooltip says exactly what goes where; the window tells it when either
changes (:meth:`PrivacyBadge.set_chat_model`, :meth:`PrivacyBadge.set_api_server`).
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
    "The API server, only while you switch it on (Server page): other apps, and other machines if you allow "
    "them, can use your models.",
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


PRIVATE = "Private: everything runs on this computer"
OFFLINE = "● Offline mode: no network connections"
CLICK = "Click for the privacy settings."


def badge_words(offline: bool, api_server: tuple[str, int] | None = None,
                remote: tuple[str, str] | None = None) -> tuple[str, str]:
    """The badge's line and the first part of its tooltip: what leaves this computer now, and where to.

    ``api_server``: where the API server listens, (bind address, port), while it runs; ``remote``: the
    chat page's model's remote server, (name, base URL), when the model runs on one.
    """
    exposed = api_server is not None and not _loopback_bind(api_server[0])
    away = remote is not None and not _loopback_url(remote[1])
    facts = []
    if remote is not None:
        name, url = remote
        if not away:
            facts.append(f"• Chats with '{name}' go to {url}, a server on this computer: they do not leave it.")
        elif offline:
            facts.append(f"• Chats with '{name}' are blocked: offline mode keeps them from {url} (not on this "
                         "computer).")
        else:
            facts.append(f"• Chats with '{name}' are sent to {url}: your messages, the chat's earlier ones and its "
                         "system prompt.")
    if api_server is not None:
        host, port = api_server
        if exposed:
            facts.append(f"• The API server accepts other machines on {_address(host, port)}: any that can reach "
                         "this one can use your models with the token.\n"
                         "   To close it, stop the server or choose 'This computer only' on the Server page.")
        else:
            facts.append(f"• The API server answers apps on this computer only ({_address(host, port)}).")
    if offline:
        line = "● Offline mode; the API server accepts other machines" if exposed else OFFLINE
    elif away and exposed:
        line = f"● Chats go to '{remote[0]}'; the API server accepts other machines"
    elif away:
        line = f"● Chats go to the remote server '{remote[0]}'"
    elif exposed:
        line = "● The API server accepts other machines"
    else:
        line = PRIVATE
    return line, "\n".join(["Right now:", *facts]) if facts else ""


def _loopback_bind(host: str) -> bool:
    from engines.server.config import is_loopback  # the server runs: its package is loaded already

    return is_loopback(host)


def _loopback_url(url: str) -> bool:
    from engines.remote.urls import is_loopback  # a remote model is chosen: engines.remote is loaded already

    return is_loopback(url)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PrivacyBadge(QLabel):
    """The sidebar's line: private, offline, or what leaves the computer, with the details as a tooltip; a click
    opens Settings."""

    clicked = Signal()

    def __init__(self, offline: bool, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("Muted")
        self.setWordWrap(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.offline = offline
        self.api_server: tuple[str, int] | None = None
        self.remote: tuple[str, str] | None = None
        self._show()

    def set_offline(self, offline: bool) -> None:
        self.offline = offline
        self._show()

    def set_api_server(self, listening: tuple[str, int] | None) -> None:
        """Where the API server listens, (bind address, port), while it runs; None once it stopped."""
        self.api_server = tuple(listening) if listening is not None else None
        self._show()

    def set_chat_model(self, model) -> None:
        """The chat page's model (an installed model, a remote one, or None)."""
        server = getattr(model, "server", None) if getattr(model, "engine", None) == "remote" else None
        self.remote = (server.name, server.base_url) if server is not None else None
        self._show()

    def _show(self) -> None:
        line, facts = badge_words(self.offline, self.api_server, self.remote)
        self.setText(line)
        self.setToolTip("\n\n".join(part for part in (facts, privacy_text(), CLICK) if part))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mouseReleaseEvent(event)
