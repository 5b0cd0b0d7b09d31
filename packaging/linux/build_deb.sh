#!/usr/bin/env bash
# Build dist/atelier_<version>_<arch>.deb from the one-folder bundle dist/atelier/.
#
#   packaging/linux/build_deb.sh PYTHON [DIST_DIR]
#
# Layout: the bundle in /opt/atelier, /usr/bin/atelier a symlink to it (the
# PyInstaller bootloader finds its files through /proc/self/exe, so a link works),
# the menu entry and the hicolor icons. No maintainer scripts: Debian's
# desktop-file-utils and hicolor-icon-theme refresh their caches with dpkg triggers.
# Compression: zstd (dpkg >= 1.21.18: Debian 12, Ubuntu 22.04 and later, the same systems whose
# glibc the bundle needs); xz is 10x slower to build for 10% less. DEB_COMPRESSION=xz to change.
# Depends: the system libraries the bundled Qt needs and the bundle does not
# carry (checked in a clean Debian 12 root by packaging/linux/chroot_smoke.sh).
set -euo pipefail

PYTHON=${1:?usage: build_deb.sh PYTHON [DIST_DIR]}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIST=${2:-$ROOT/dist}
BUNDLE="$DIST/atelier"
VERSION=$("$PYTHON" -c "import sys; sys.path.insert(0, '$ROOT/packaging'); import common_spec; print(common_spec.version())")
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
STAGE="$ROOT/build/deb/atelier_${VERSION}_${ARCH}"
DEB="$DIST/atelier_${VERSION}_${ARCH}.deb"

# The system libraries the bundled Qt links (see desktop/launcher_check.py for the sonames),
# plus fonts: Qt renders no text without a fontconfig configuration and one font.
# The bundle's own copies of these are removed below, so the system's copies (with
# their security updates) are the ones loaded; the AppImage keeps its copies.
SYSTEM_PACKAGES=(
    libgl1 libegl1 libdrm2
    libxkbcommon0 libxkbcommon-x11-0
    libfontconfig1 libfreetype6 fontconfig-config fonts-dejavu-core
    libdbus-1-3 libglib2.0-0
    libx11-6 libx11-xcb1 libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
    libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxcb-randr0 libxcb-sync1
    libxcb-xfixes0 libxcb-shm0 libxcb-util1 libxcb-glx0
    libwayland-client0 libwayland-cursor0 libwayland-egl1
)

test -x "$BUNDLE/atelier" || { echo "error: $BUNDLE/atelier is missing: build the bundle first" >&2; exit 1; }

rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/icons/hicolor/scalable/apps" "$STAGE/usr/share/doc/atelier"
cp -a "$BUNDLE" "$STAGE/opt/atelier"
"$PYTHON" "$HERE/unbundle.py" "$STAGE/opt/atelier/_internal" "${SYSTEM_PACKAGES[@]}"
ln -s /opt/atelier/atelier "$STAGE/usr/bin/atelier"
install -m 644 "$HERE/atelier.desktop" "$STAGE/usr/share/applications/atelier.desktop"
install -m 644 "$ROOT/resources/icons/atelier.svg" "$STAGE/usr/share/icons/hicolor/scalable/apps/atelier.svg"

ICONS="$ROOT/build/icons"
"$PYTHON" "$ROOT/packaging/render_icons.py" "$ICONS" >/dev/null
for size in 16 24 32 48 64 128 256 512; do
    mkdir -p "$STAGE/usr/share/icons/hicolor/${size}x${size}/apps"
    install -m 644 "$ICONS/atelier-$size.png" "$STAGE/usr/share/icons/hicolor/${size}x${size}/apps/atelier.png"
done

cat > "$STAGE/usr/share/doc/atelier/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: Atelier
Comment: The bundle in /opt/atelier also carries Python, Qt (LGPL-3.0, via PySide6),
 llama.cpp (MIT) and the Gemma 3 270M demo model (Gemma Terms of Use); their
 licence files are in /opt/atelier/_internal/*.dist-info.

Files: *
License: Apache-2.0
EOF

# Every file readable, directories and executables 755, the rest 644.
find "$STAGE" -type d -exec chmod 755 {} +
find "$STAGE/opt" -type f -exec chmod u+rw,go+r,go-w {} +

# The oldest glibc the bundle works with: the newest GLIBC_x.y symbol version it uses.
GLIBC=$(find "$STAGE/opt/atelier" -type f \( -name '*.so*' -o -name atelier \) -print0 \
    | xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

DEPENDS=("libc6 (>= ${GLIBC:-2.34})" "${SYSTEM_PACKAGES[@]}")
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)

cat > "$STAGE/DEBIAN/control" <<EOF
Package: atelier
Version: $VERSION
Architecture: $ARCH
Maintainer: Atelier developers <atelier@localhost>
Installed-Size: $INSTALLED_SIZE
Depends: $(IFS=,; echo "${DEPENDS[*]}" | sed 's/,/, /g')
Recommends: xdg-desktop-portal
Section: graphics
Priority: optional
Homepage: https://github.com/atelier-studio/atelier
Description: private, offline generative-AI studio for the desktop
 Atelier chats with quantized language models (GGUF files through llama.cpp)
 entirely on your own computer. A small demo model is included, so it works
 offline from the first start. Image generation engines install on demand.
EOF

mkdir -p "$DIST"
rm -f "$DEB"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-zstd}" -z"${DEB_LEVEL:-9}" --build "$STAGE" "$DEB" >/dev/null
echo "built $DEB ($(du -h "$DEB" | cut -f1), installs $(( INSTALLED_SIZE / 1024 )) MB, glibc >= ${GLIBC:-?})"
