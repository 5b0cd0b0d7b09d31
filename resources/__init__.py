"""Static files: icons, styles and catalog data, found relative to this folder."""

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent


def icon_path(name: str = "atelier.svg") -> Path:
    return RESOURCES / "icons" / name
