"""The shown image's Content Credentials, under the image: one line, and the whole story on demand.

Reading a manifest means c2pa's native library and a hash of the file, so
the page asks its controller to read them off the GUI thread and this
widget shows "Reading…" until :meth:`CredentialsLine.show_credentials`
gets the answer. The one line says what the manifest claims, who signed it
and whether it holds; "Details" opens the rest (every claim, the issuer,
when it was signed, and the verdict in a full sentence: Atelier's own key
is self-signed, so a valid signature is reported as untrusted, and the
sentence says why rather than looking like an error).
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

TITLE = "Credentials:"
DETAILS_MAX_HEIGHT = 150  # the details scroll rather than squeeze the image in a small window


class CredentialsLine(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        row = QHBoxLayout()
        row.setSpacing(8)
        self.summary = QLabel()
        self.summary.setObjectName("CredentialsLine")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary.setToolTip("Content Credentials (C2PA): a signed record, inside the PNG, of how it was made")
        self.details_button = QPushButton("Details")
        self.details_button.setCheckable(True)
        self.details_button.setToolTip("Show everything the credentials say and who signed them")
        self.details_button.toggled.connect(self._toggle)
        row.addWidget(self.summary, 1)
        row.addWidget(self.details_button, 0, Qt.AlignTop)
        layout.addLayout(row)
        self.details = QLabel()
        self.details.setObjectName("CredentialsDetails")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.RichText)
        self.details.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.details_area = QScrollArea()
        self.details_area.setWidget(self.details)
        self.details_area.setWidgetResizable(True)
        self.details_area.setFrameShape(QFrame.NoFrame)
        self.details_area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.details_area.setMaximumHeight(DETAILS_MAX_HEIGHT)
        self.details_area.hide()
        layout.addWidget(self.details_area)
        self.image_id = ""  # the image these credentials belong to ("" when none is shown)
        self.credentials = None
        self.clear()

    @property
    def reading(self) -> bool:
        """An image is shown and its credentials are still being read."""
        return bool(self.image_id) and self.credentials is None

    def clear(self) -> None:
        self.image_id = ""
        self.credentials = None
        self.summary.setText("")
        self.details.setText("")
        self.details_button.setChecked(False)
        self.details_area.hide()
        self.hide()

    def show_pending(self, image_id: str) -> None:
        """The image ``image_id`` is shown; its credentials are being read."""
        self.image_id = image_id
        self.credentials = None
        self.summary.setText(f"{TITLE} reading…")
        self.details.setText("")
        self.details_button.setEnabled(False)
        self.details_area.hide()
        self.show()

    def show_credentials(self, image_id: str, credentials) -> bool:
        """Show ``credentials`` (engines.images.credentials_read.Credentials) if ``image_id`` is still shown."""
        if image_id != self.image_id:
            return False  # the user moved on to another image while these were read
        self.credentials = credentials
        self.summary.setText(f"{TITLE} {credentials.summary()}")
        self.details.setText(details_html(credentials))
        has_details = credentials.state not in ("none", "unreadable")
        self.details_button.setEnabled(has_details)
        self.details_area.setVisible(has_details and self.details_button.isChecked())
        self.show()
        return True

    def _toggle(self, on: bool) -> None:
        self.details_area.setVisible(on and bool(self.details.text()))


def details_html(credentials) -> str:
    """Every claim, who signed and when, and the verdict, as a small table."""
    rows = []
    for claim in credentials.claims:
        rows.append(("Says", claim))
    if credentials.signer:
        rows.append(("Signed by", credentials.signer))
    if credentials.issuer:
        rows.append(("Issuer", credentials.issuer))
    if credentials.signed_at:
        rows.append(("Signed at", credentials.signed_at))
    if credentials.generator:
        rows.append(("Written by", credentials.generator))
    rows.append(("Verdict", credentials.verdict))
    cells = "".join(f"<tr><td style='padding-right:10px; white-space:nowrap'><b>{escape(k)}</b></td>"
                    f"<td>{escape(v)}</td></tr>"
                    for k, v in rows)
    return f"<table>{cells}</table>"
