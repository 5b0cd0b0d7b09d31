#!/usr/bin/env bash
# Install dist/atelier_*.deb into a clean Debian 12 (debootstrap minbase) root and run it there.
#
#   sudo packaging/linux/chroot_smoke.sh [DEB]
#
# Needs root (chroot, mount) and debootstrap, and a reachable Debian mirror (the one
# this machine's apt uses). The minbase root is made once and cached as a tarball in
# ~/.cache/atelier-build/rootfs/; downloaded .debs are cached beside it, so a rerun
# unpacks in seconds and downloads nothing new. Each run works on a fresh copy.
#
# Steps, each must pass:
#   1. Before installing anything: which system libraries does the bundle really miss
#      on a bare Debian (ldd over every ELF file)? Is each one in the .deb's Depends?
#      Does the launcher check name them instead of Qt's plugin error?
#   2. The self-test of the bare bundle (no X libraries at all: the engine needs none).
#   3. apt-get install ./atelier_*.deb, then `atelier --selftest` with ATELIER_HOME on a
#      path with spaces and non-ASCII letters.
#   4. The window under Xvfb, with only the .deb's dependencies (plus xvfb itself).
#   5. The launcher check on the installed app with one dependency forcibly removed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DEB=${1:-$(ls "$ROOT"/dist/atelier_*.deb 2>/dev/null | head -1)}
SUITE=${ATELIER_CHROOT_SUITE:-bookworm}
CACHE=${ATELIER_BUILD_CACHE:-$HOME/.cache/atelier-build}
TARBALL="$CACHE/rootfs/$SUITE-minbase.tar"
ARCHIVES="$CACHE/rootfs/$SUITE-apt-archives"

fail() { echo "chroot smoke: FAIL: $*" >&2; exit 1; }
step() { echo "--- chroot: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (chroot and mount)"
[ -f "${DEB:-}" ] || fail "no .deb found: run make package first"

# The mirror this machine's apt uses, so the chroot reaches the same one.
mirror() {
    local url
    url=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -m1 -E '/debian/?$' || true)
    [ -n "$url" ] || url=$(grep -hs -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -m1 -E '/debian/?$' || true)
    echo "${url:-http://deb.debian.org/debian}"
}

make_tarball() {
    command -v debootstrap >/dev/null || fail "debootstrap is missing (apt-get install debootstrap)"
    local url dir
    url=$(mirror)
    dir="$CACHE/rootfs/$SUITE-minbase.tmp"
    mkdir -p "$CACHE/rootfs"
    if [ ! -x "$dir/bin/bash" ] || [ -d "$dir/debootstrap" ]; then  # absent or interrupted
        rm -rf --one-file-system "$dir"
        step "debootstrap --variant=minbase $SUITE from $url (once; cached in $TARBALL)"
        debootstrap --variant=minbase "$SUITE" "$dir" "$url" >"$CACHE/rootfs/debootstrap.log" 2>&1 \
            || fail "debootstrap failed (see $CACHE/rootfs/debootstrap.log); is $url reachable?"
    fi
    local security=${url%/debian*}/debian-security
    cat > "$dir/etc/apt/sources.list" <<EOF
deb $url $SUITE main
deb $url $SUITE-updates main
deb $security $SUITE-security main
EOF
    echo 'APT::Install-Recommends "false";' > "$dir/etc/apt/apt.conf.d/90atelier-no-recommends"
    echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > "$dir/etc/apt/apt.conf.d/90atelier-keep-debs"
    tar -C "$dir" -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
    rm -rf --one-file-system "$dir"
}

[ -f "$TARBALL" ] || make_tarball
mkdir -p "$ARCHIVES/partial"

R=$(mktemp -d /tmp/atelier-chroot.XXXXXX)
MOUNTS=()
cleanup() {
    for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
    # Only ever delete when nothing is mounted below the root any more.
    if ! grep -q " $R/" /proc/mounts; then rm -rf --one-file-system "$R"; else echo "left $R (still mounted)" >&2; fi
}
trap cleanup EXIT
mnt() { mount "$@"; MOUNTS+=("${@: -1}"); }

step "unpack the cached $SUITE minbase root into $R"
tar -C "$R" -xf "$TARBALL"
mnt -t proc proc "$R/proc"
mnt -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"          # multiprocessing (the engine host) needs it
mnt -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
mnt --bind "$ARCHIVES" "$R/var/cache/apt/archives"     # our own cache folder, never a system one
cp -L /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
cp "$DEB" "$R/tmp/"
DEB_IN=/tmp/$(basename "$DEB")

in_root() { chroot "$R" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

step "1. what the bare bundle misses on a minimal Debian"
in_root dpkg-deb -x "$DEB_IN" /tmp/bare
# With the library path the bootloader sets at run time, so what the bundle carries counts as found.
in_root env LD_LIBRARY_PATH=/tmp/bare/opt/atelier/_internal bash -c \
    'find /tmp/bare/opt/atelier -type f \( -name "*.so*" -o -name atelier \) -exec ldd {} \; 2>/dev/null \
    | awk "/=> not found/ {print \$1}" | sort -u' > "$R/tmp/missing.txt"
depends=$(dpkg-deb -f "$DEB" Depends)
echo "    sonames missing on a bare $SUITE: $(tr '\n' ' ' < "$R/tmp/missing.txt")"
uncovered=()
while read -r soname; do
    package=$(python3 -c "import sys; sys.path.insert(0, '$ROOT'); from desktop import launcher_check as l; print(l.DEBIAN_PACKAGES.get('$soname', ''))")
    if [ -z "$package" ] || ! grep -qw -- "$package" <<<"$depends"; then uncovered+=("$soname${package:+ ($package)}"); fi
done < "$R/tmp/missing.txt"
# libgtk-3 only feeds an optional Qt theme plugin if one is ever shipped; anything else must be covered.
[ ${#uncovered[@]} -eq 0 ] || fail "not in the .deb's Depends: ${uncovered[*]}"
echo "    all of them are covered by the .deb's Depends"

set +e
out=$(in_root env DISPLAY=:99 /tmp/bare/opt/atelier/atelier 2>&1); rc=$?
set -e
echo "$out" | sed 's/^/    | /'
[ $rc -ne 0 ] && grep -q "sudo apt install" <<<"$out" || fail "the launcher check did not explain the missing libraries (exit $rc)"
! grep -qi "could not load the qt platform plugin" <<<"$out" || fail "Qt's own plugin error reached the user"

step "2. self-test of the bare bundle (no X libraries installed)"
in_root env ATELIER_HOME="/tmp/bare home/Ärger ü" /tmp/bare/opt/atelier/atelier --selftest | tee "$R/tmp/bare-selftest.json"
grep -q '"selftest": "ok"' "$R/tmp/bare-selftest.json" || fail "self-test of the bare bundle"
in_root rm -rf /tmp/bare

step "2b. apt-get update; apt-get install ./$(basename "$DEB")"
in_root apt-get update -qq >/dev/null || fail "apt-get update in the chroot (mirror $(mirror))"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$DEB_IN" > "$R/tmp/apt.log" 2>&1 \
    || { tail -20 "$R/tmp/apt.log"; fail "apt-get install of the .deb"; }
echo "    installed: $(in_root dpkg-query -W -f='${Package} ${Version}' atelier); $(grep -c '^Setting up' "$R/tmp/apt.log") packages set up"
in_root test -L /usr/bin/atelier || fail "/usr/bin/atelier is missing"
in_root test -f /usr/share/applications/atelier.desktop || fail "the .desktop file is missing"

step "3. atelier --selftest (ATELIER_HOME with spaces and non-ASCII letters)"
in_root env ATELIER_HOME="/root/Über Ordner/ä b" atelier --selftest | tee "$R/tmp/selftest.json"
grep -q '"selftest": "ok"' "$R/tmp/selftest.json" || fail "self-test of the installed app"
grep -q '"frozen": true' "$R/tmp/selftest.json" || fail "the self-test did not run the frozen app"
in_root test -f "/root/Über Ordner/ä b/logs/engine-host-selftest.log" || fail "no engine host log under ATELIER_HOME"

step "4. the window under Xvfb with only the .deb's dependencies"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth > "$R/tmp/apt-xvfb.log" 2>&1 || fail "installing xvfb"
out=$(in_root env ATELIER_HOME="/root/Über Ordner/ä b" ATELIER_REPORT_STARTUP=1 ATELIER_QUIT_AFTER_SHOW=500 \
      QT_DEBUG_PLUGINS=0 timeout 60 xvfb-run -a -s "-screen 0 1280x800x24" atelier 2>&1) || { echo "$out"; fail "the GUI did not start"; }
echo "$out" | grep -v '^$' | sed 's/^/    | /'
grep -q "window shown after" <<<"$out" || fail "the window was not shown"
! grep -qiE "could not (load|find) the qt platform plugin|cannot open shared object" <<<"$out" || fail "Qt reported a missing library"

step "5. launcher check on the installed app, libxcb-cursor0 removed by force"
in_root dpkg --remove --force-depends libxcb-cursor0 >/dev/null 2>&1 || fail "could not remove libxcb-cursor0"
set +e
out=$(in_root env DISPLAY=:99 atelier 2>&1); rc=$?
set -e
echo "$out" | sed 's/^/    | /'
[ $rc -ne 0 ] && grep -q "libxcb-cursor.so.0" <<<"$out" && grep -q "sudo apt install libxcb-cursor0" <<<"$out" \
    || fail "the launcher check did not name libxcb-cursor.so.0 / libxcb-cursor0"

echo "chroot smoke: OK ($SUITE minbase + $(basename "$DEB"))"
