#!/usr/bin/env bash
# Everything `make package` does on Linux:
#   1. the PyInstaller one-folder bundle   dist/atelier/          (packaging/linux/atelier.spec)
#   2. the Debian package                  dist/atelier_<v>_amd64.deb
#   3. the AppImage                        dist/Atelier-<v>-x86_64.AppImage (AppDir only without appimagetool)
#
#   packaging/linux/build.sh PYTHON
#
# PYTHON is the project's venv Python with PyInstaller installed. Figures go to
# dist/build-report.txt.
set -euo pipefail

PYTHON=${1:?usage: build.sh PYTHON}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIST="$ROOT/dist"
cd "$ROOT"

started=$(date +%s.%N)
"$PYTHON" -m PyInstaller --version >/dev/null 2>&1 || { echo "error: PyInstaller is not installed in $PYTHON's environment" >&2; exit 1; }

echo "==> PyInstaller bundle (dist/atelier)"
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$ROOT/build/pyinstaller" "$HERE/atelier.spec"
"$PYTHON" "$ROOT/packaging/postprocess_bundle.py" "$DIST/atelier"
bundle_done=$(date +%s.%N)

echo "==> Debian package"
"$HERE/build_deb.sh" "$PYTHON" "$DIST"
deb_done=$(date +%s.%N)

echo "==> AppImage"
"$HERE/appimage/build_appimage.sh" "$PYTHON" "$DIST"
finished=$(date +%s.%N)

DEB=$(ls "$DIST"/atelier_*.deb | head -1)
{
    echo "bundle:        $(du -sh "$DIST/atelier" | cut -f1)  dist/atelier ($(find "$DIST/atelier" -type f | wc -l) files)"
    echo "deb:           $(du -h "$DEB" | cut -f1)  $(basename "$DEB")"
    ls "$DIST"/Atelier-*.AppImage >/dev/null 2>&1 && echo "appimage:      $(du -h "$DIST"/Atelier-*.AppImage | cut -f1)"
    awk -v s="$started" -v b="$bundle_done" -v d="$deb_done" -v f="$finished" 'BEGIN {
        printf "build time:    %.0f s (bundle %.0f s, deb %.0f s, appimage %.0f s)\n", f - s, b - s, d - b, f - d }'
} | tee "$DIST/build-report.txt"
