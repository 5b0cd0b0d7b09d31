"""Light and dark themes that follow the system unless the user picks one.

Fusion style plus a palette does most of the work; a short style sheet
shapes the sidebar and a few named widgets. Nothing here depends on the
engines.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication


@dataclass(frozen=True)
class Colors:
    window: str
    base: str
    alt: str
    text: str
    muted: str
    accent: str
    accent_text: str
    border: str
    sidebar: str
    sidebar_selected: str
    warning_bg: str
    warning_text: str


LIGHT = Colors("#f7f7f8", "#ffffff", "#f0f0f3", "#1d1d1f", "#6e6e73", "#5b5bd6", "#ffffff", "#dcdce0",
               "#eeeef2", "#dedefa", "#fff4e5", "#7a4b00")
DARK = Colors("#1e1f22", "#26272b", "#2e2f34", "#ececf1", "#a0a0aa", "#8b8bf5", "#111114", "#3a3b41",
              "#18191c", "#34345c", "#3d2f14", "#ffd591")


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() == Qt.ColorScheme.Dark


def resolve_dark(choice: str) -> bool:
    if choice == "dark":
        return True
    if choice == "light":
        return False
    return system_prefers_dark()


def palette_for(c: Colors) -> QPalette:
    p = QPalette()
    roles = {
        QPalette.Window: c.window, QPalette.WindowText: c.text, QPalette.Base: c.base,
        QPalette.AlternateBase: c.alt, QPalette.Text: c.text, QPalette.Button: c.base,
        QPalette.ButtonText: c.text, QPalette.Highlight: c.accent, QPalette.HighlightedText: c.accent_text,
        QPalette.ToolTipBase: c.base, QPalette.ToolTipText: c.text, QPalette.PlaceholderText: c.muted,
        QPalette.Link: c.accent, QPalette.Mid: c.border, QPalette.Midlight: c.alt,
    }
    for role, value in roles.items():
        p.setColor(role, QColor(value))
    for role in (QPalette.Text, QPalette.ButtonText, QPalette.WindowText):
        p.setColor(QPalette.Disabled, role, QColor(c.muted))
    return p


def style_sheet(c: Colors) -> str:
    return f"""
    QWidget#Sidebar {{ background: {c.sidebar}; border-right: 1px solid {c.border}; }}
    QListWidget#SidebarList {{ background: transparent; border: none; outline: none; font-size: 14px; }}
    QListWidget#SidebarList::item {{ padding: 10px 14px; margin: 2px 8px; border-radius: 8px; color: {c.text}; }}
    QListWidget#SidebarList::item:selected {{ background: {c.sidebar_selected}; color: {c.text}; }}
    QListWidget#SidebarList::item:hover:!selected {{ background: {c.alt}; }}
    QLabel#AppTitle {{ font-size: 18px; font-weight: 600; padding: 16px 18px 10px 18px; color: {c.text}; }}
    QLabel#Muted, QLabel#StatusLine {{ color: {c.muted}; }}
    QLabel#PageTitle {{ font-size: 20px; font-weight: 600; }}
    QLabel#Banner {{ background: {c.warning_bg}; color: {c.warning_text}; border-radius: 8px; padding: 8px 12px; }}
    QFrame#Panel {{ background: {c.base}; border-left: 1px solid {c.border}; }}
    QFrame#ConversationPanel {{ background: {c.window}; border-right: 1px solid {c.border}; }}
    QListWidget#ConversationList {{ border: none; background: transparent; outline: none; }}
    QListWidget#ConversationList::item {{ padding: 8px 10px; margin: 1px 6px; border-radius: 6px; }}
    QListWidget#ConversationList::item:selected {{ background: {c.sidebar_selected}; color: {c.text}; }}
    QPlainTextEdit#Composer {{ border: 1px solid {c.border}; border-radius: 10px; padding: 8px; background: {c.base}; }}
    QPlainTextEdit#Composer:focus {{ border: 1px solid {c.accent}; }}
    QLineEdit {{ border: 1px solid {c.border}; border-radius: 6px; padding: 5px 8px; background: {c.base}; }}
    QLineEdit:focus {{ border: 1px solid {c.accent}; }}
    QCheckBox::indicator {{ width: 14px; height: 14px; border: 1px solid {c.muted}; border-radius: 3px; background: {c.base}; }}
    QCheckBox::indicator:checked {{ background: {c.accent}; border: 1px solid {c.accent}; }}
    QCheckBox::indicator:disabled {{ border: 1px solid {c.border}; }}
    QPushButton {{ padding: 6px 12px; border-radius: 6px; border: 1px solid {c.border}; background: {c.base}; }}
    QPushButton:hover {{ background: {c.alt}; }}
    QPushButton:disabled {{ color: {c.muted}; }}
    QPushButton#Primary {{ background: {c.accent}; color: {c.accent_text}; border: none; font-weight: 600; }}
    QPushButton#Primary:disabled {{ background: {c.border}; color: {c.muted}; }}
    QTextBrowser#MessageView {{ border: none; background: {c.base}; }}
    QScrollArea#PanelScroll {{ border: none; background: transparent; }}
    QGroupBox {{ font-weight: 600; border: 1px solid {c.border}; border-radius: 8px; margin-top: 14px; padding-top: 6px; }}
    QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; }}
    """


def apply_theme(app: QApplication, choice: str) -> bool:
    """Apply the chosen theme; return whether it is dark."""
    dark = resolve_dark(choice)
    colors = DARK if dark else LIGHT
    app.setStyle("Fusion")
    app.setPalette(palette_for(colors))
    app.setStyleSheet(style_sheet(colors))
    return dark
