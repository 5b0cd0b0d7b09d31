"""How a fit verdict looks: a coloured dot, a bold label, the arithmetic, the advice.

Also the small formatting helpers every tab of the Models page shares, and
the one question the page asks before a download that will not fit.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QLabel, QMessageBox, QVBoxLayout, QWidget

from engines.byte_sizes import format_bytes
from engines.machine.fit import FitVerdict

VERDICT_COLORS = {
    "gpu_full": "#2f9e5b",  # green
    "gpu_partial": "#1a9a9a",  # teal
    "cpu_only": "#6a7f9a",  # blue-grey
    "wont_fit": "#d64545",  # red
}
PENDING_COLOR = "#b0b0b8"
_icons: dict[str, QIcon] = {}


def dot_icon(verdict: str | None, size: int = 10) -> QIcon:
    """A filled circle in the verdict's colour (grey while unknown)."""
    color = VERDICT_COLORS.get(verdict or "", PENDING_COLOR)
    if color not in _icons:
        scale = 2  # drawn at 2x so it stays round on high-DPI screens
        pixmap = QPixmap(size * scale, size * scale)
        pixmap.setDevicePixelRatio(scale)
        pixmap.fill(Qt.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(color))
        painter.drawEllipse(1, 1, size - 2, size - 2)
        painter.end()
        icon = QIcon(pixmap)
        icon.addPixmap(pixmap, QIcon.Selected)  # keep the colour on a selected row
        _icons[color] = icon
    return _icons[color]


def dot_html(verdict: str | None) -> str:
    return f'<span style="color:{VERDICT_COLORS.get(verdict or "", PENDING_COLOR)}">●</span>'


def fmt_parameters(n: int) -> str:
    if n >= 1e9:
        value = f"{n / 1e9:.1f}".removesuffix(".0")
        return f"{value} B parameters"
    return f"{n / 1e6:.0f} M parameters"


def fmt_speed(bps: float) -> str:
    return f"{format_bytes(bps)}/s" if bps > 0 else "—"


class VerdictView(QWidget):
    """The verdict in words: "● CPU only · about 18 tokens/s here" in bold, the arithmetic, the speed, suggestions."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.label = QLabel()
        self.label.setTextFormat(Qt.RichText)
        self.label.setWordWrap(True)
        self.explanation = QLabel()
        self.explanation.setWordWrap(True)
        self.explanation.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.speed = QLabel()  # the speed's arithmetic, and what was measured here
        self.speed.setWordWrap(True)
        self.speed.setTextFormat(Qt.RichText)
        self.speed.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.suggestions = QLabel()
        self.suggestions.setWordWrap(True)
        self.suggestions.setTextFormat(Qt.RichText)
        for widget in (self.label, self.explanation, self.speed, self.suggestions):
            layout.addWidget(widget)
        self.set_verdict(None)

    def set_verdict(self, verdict: FitVerdict | None, pending: str = "Checking whether it fits…",
                    measured: str | None = None) -> None:
        """Show *verdict*; *measured* is the comparison with a real run ("measured 21 tokens/s (estimated 18)")."""
        if verdict is None:
            self.label.setText(f"{dot_html(None)} <b>{html.escape(pending, quote=False)}</b>")
            for widget in (self.explanation, self.speed, self.suggestions):
                widget.clear()
                widget.hide()
            return
        self.label.setText(f"{dot_html(verdict.verdict)} <b>{html.escape(verdict.summary, quote=False)}</b>")
        self.explanation.setText(verdict.explanation)
        self.explanation.show()
        lines = []
        if measured:
            lines.append(f"<b>{html.escape(measured[0].upper() + measured[1:], quote=False)}.</b>")
        if verdict.speed is not None:
            lines.append(html.escape(f"Expected speed: {verdict.speed.basis}.", quote=False))
        elif verdict.fits:
            lines.append("The speed is measured when the model first runs here.")
        self.speed.setText("<br>".join(lines))
        self.speed.setVisible(bool(lines))
        if verdict.suggestions:
            items = "".join(f"<li>{html.escape(s, quote=False)}</li>" for s in verdict.suggestions)
            self.suggestions.setText(f"<ul style='margin-left:-20px'>{items}</ul>")
            self.suggestions.show()
        else:
            self.suggestions.clear()
            self.suggestions.hide()


def confirm_download_anyway(parent: QWidget, name: str, message: str) -> bool:
    """Ask before downloading a model that will not fit; True for "Download anyway"."""
    box = QMessageBox(QMessageBox.Warning, f"{name} won't fit", message, parent=parent)
    box.setInformativeText("It would be slow or fail to load on this machine.")
    anyway = box.addButton("Download anyway", QMessageBox.AcceptRole)
    cancel = box.addButton("Cancel", QMessageBox.RejectRole)
    box.setDefaultButton(cancel)
    box.exec()
    return box.clickedButton() is anyway
