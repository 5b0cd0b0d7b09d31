#!/usr/bin/env bash
# Pack dist/Atelier.app into dist/Atelier-<version>-<arch>.dmg (a compressed, read-only image
# with an /Applications link to drag the app onto). macOS only (hdiutil).
#
#   packaging/macos/build_dmg.sh [PYTHON]
#
# Signing: when ATELIER_CODESIGN_IDENTITY is set ("Developer ID Application: Name (TEAMID)"),
# the app is signed with the hardened runtime before packing and the .dmg after it; when
# ATELIER_NOTARY_PROFILE is set too (a `xcrun notarytool store-credentials` profile), the
# .dmg is notarized and stapled. Without them the app keeps PyInstaller's ad-hoc signature,
# which runs on the build Mac and, after "Open" in the Finder's context menu, elsewhere.
# Details: packaging/macos/SIGNING.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${1:-python3}
APP="$ROOT/dist/Atelier.app"
VERSION=$("$PYTHON" -c "import sys; sys.path.insert(0, '$ROOT/packaging'); import common_spec; print(common_spec.version())")
ARCH=$(lipo -archs "$APP/Contents/MacOS/atelier" 2>/dev/null | tr ' ' '-' || uname -m)
DMG="$ROOT/dist/Atelier-$VERSION-$ARCH.dmg"
STAGE="$ROOT/build/dmg"

[ -d "$APP" ] || { echo "error: $APP is missing: run pyinstaller with packaging/macos/atelier.spec first" >&2; exit 1; }

if [ -n "${ATELIER_CODESIGN_IDENTITY:-}" ]; then
    # Inside out: every Mach-O file first, then the bundle itself, all with the hardened runtime.
    find "$APP/Contents" -type f \( -name '*.dylib' -o -name '*.so' -o -perm -u+x \) -print0 \
        | xargs -0 file | grep -E 'Mach-O' | cut -d: -f1 | while read -r binary; do
            codesign --force --timestamp --options runtime \
                --entitlements "$HERE/entitlements.plist" --sign "$ATELIER_CODESIGN_IDENTITY" "$binary"
        done
    codesign --force --timestamp --options runtime --entitlements "$HERE/entitlements.plist" \
        --sign "$ATELIER_CODESIGN_IDENTITY" "$APP"
    codesign --verify --deep --strict --verbose=2 "$APP"
fi

rm -rf "$STAGE" "$DMG"
mkdir -p "$STAGE"
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
hdiutil create -volname "Atelier $VERSION" -srcfolder "$STAGE" -fs HFS+ -format UDZO -imagekey zlib-level=9 -ov "$DMG"

if [ -n "${ATELIER_CODESIGN_IDENTITY:-}" ]; then
    codesign --force --timestamp --sign "$ATELIER_CODESIGN_IDENTITY" "$DMG"
    if [ -n "${ATELIER_NOTARY_PROFILE:-}" ]; then
        xcrun notarytool submit "$DMG" --keychain-profile "$ATELIER_NOTARY_PROFILE" --wait
        xcrun stapler staple "$DMG"
        xcrun stapler validate "$DMG"
    fi
fi
echo "built $DMG ($(du -h "$DMG" | cut -f1))"
