"""Render the app icon (resources/icons/atelier.svg) into the raster formats installers need.

    python packaging/render_icons.py OUT_DIR [--ico] [--iconset]

Writes OUT_DIR/atelier-<size>.png for the hicolor sizes (16...512), and with
``--ico`` a multi-size Windows ``atelier.ico`` (Pillow), with ``--iconset`` an
``atelier.iconset`` folder for macOS ``iconutil -c icns``. Rendering uses
Qt's own SVG renderer (QSvgRenderer), so it needs no extra tool and runs
headless (the offscreen platform).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SVG = ROOT / "resources" / "icons" / "atelier.svg"
SIZES = [16, 24, 32, 48, 64, 128, 256, 512]


def render(svg: Path, out_dir: Path, sizes=SIZES) -> dict[int, Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 (needed by QPainter)
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"cannot read {svg}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        path = out_dir / f"atelier-{size}.png"
        if not image.save(str(path), "PNG"):
            raise SystemExit(f"cannot write {path}")
        written[size] = path
    return written


def write_ico(pngs: dict[int, Path], target: Path) -> None:
    from PIL import Image

    sizes = [s for s in (16, 24, 32, 48, 64, 128, 256) if s in pngs]
    biggest = Image.open(pngs[max(sizes)]).convert("RGBA")
    biggest.save(target, format="ICO", sizes=[(s, s) for s in sizes])


def write_iconset(pngs: dict[int, Path], folder: Path) -> None:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for size in (16, 32, 128, 256, 512):
        shutil.copyfile(pngs[size], folder / f"icon_{size}x{size}.png")
        double = size * 2
        if double in pngs:
            shutil.copyfile(pngs[double], folder / f"icon_{size}x{size}@2x.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--ico", action="store_true", help="also write atelier.ico (needs Pillow)")
    parser.add_argument("--iconset", action="store_true", help="also write atelier.iconset/ for iconutil")
    args = parser.parse_args()
    sizes = SIZES + ([1024] if args.iconset else [])
    pngs = render(SVG, args.out_dir, sizes)
    if args.ico:
        write_ico(pngs, args.out_dir / "atelier.ico")
    if args.iconset:
        write_iconset(pngs, args.out_dir / "atelier.iconset")
    print(f"icons written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
