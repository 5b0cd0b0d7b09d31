#!/usr/bin/env bash
# Assemble build/appimage/Atelier.AppDir from dist/atelier and, when appimagetool
# is available, pack it into dist/Atelier-<version>-x86_64.AppImage.
#
#   packaging/linux/appimage/build_appimage.sh PYTHON [DIST_DIR]
#
# appimagetool is not packaged by Debian and the PyPI wrappers download it from
# GitHub when they run, so offline builds stop after the AppDir (exit 0, with a
# note). CI downloads it (see .github/workflows/package.yml) and sets APPIMAGETOOL.
set -euo pipefail

PYTHON=${1:?usage: build_appimage.sh PYTHON [DIST_DIR]}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
DIST=${2:-$ROOT/dist}
VERSION=$("$PYTHON" -c "import sys; sys.path.insert(0, '$ROOT/packaging'); import common_spec; print(common_spec.version())")
ARCH=${ARCH:-x86_64}
APPDIR="$ROOT/build/appimage/Atelier.AppDir"
OUT="$DIST/Atelier-$VERSION-$ARCH.AppImage"

test -x "$DIST/atelier/atelier" || { echo "error: build the bundle first ($DIST/atelier)" >&2; exit 1; }

rm -rf "$APPDIR"
mkdir -p "$APPDIR/usr/lib" "$APPDIR/usr/bin" "$APPDIR/usr/share/applications" \
    "$APPDIR/usr/share/icons/hicolor/scalable/apps" "$APPDIR/usr/share/icons/hicolor/256x256/apps"
cp -a "$DIST/atelier" "$APPDIR/usr/lib/atelier"
ln -s ../lib/atelier/atelier "$APPDIR/usr/bin/atelier"
install -m 755 "$HERE/AppRun" "$APPDIR/AppRun"
install -m 644 "$ROOT/packaging/linux/atelier.desktop" "$APPDIR/atelier.desktop"
install -m 644 "$ROOT/packaging/linux/atelier.desktop" "$APPDIR/usr/share/applications/atelier.desktop"
install -m 644 "$ROOT/resources/icons/atelier.svg" "$APPDIR/atelier.svg"
install -m 644 "$ROOT/resources/icons/atelier.svg" "$APPDIR/usr/share/icons/hicolor/scalable/apps/atelier.svg"
"$PYTHON" "$ROOT/packaging/render_icons.py" "$ROOT/build/icons" >/dev/null
install -m 644 "$ROOT/build/icons/atelier-256.png" "$APPDIR/usr/share/icons/hicolor/256x256/apps/atelier.png"
install -m 644 "$ROOT/build/icons/atelier-256.png" "$APPDIR/.DirIcon"

TOOL=${APPIMAGETOOL:-$(command -v appimagetool || command -v appimagetool-x86_64.AppImage || true)}
if [ -z "$TOOL" ]; then
    echo "AppDir ready at $APPDIR; appimagetool not found, so no .AppImage (set APPIMAGETOOL=/path/to/appimagetool; CI downloads it)"
    exit 0
fi
rm -f "$OUT"
# APPIMAGE_EXTRACT_AND_RUN: appimagetool is itself an AppImage; this runs it where FUSE is missing (containers, CI).
APPIMAGE_EXTRACT_AND_RUN=1 ARCH=$ARCH "$TOOL" --no-appstream "$APPDIR" "$OUT"
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
