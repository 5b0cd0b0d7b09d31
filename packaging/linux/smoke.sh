#!/usr/bin/env bash
# `make package-smoke`: check what `make package` built, outside the build's venv.
#
#   packaging/linux/smoke.sh
#
#   a. dist/atelier/atelier --selftest under `env -i` (nothing of the venv on PATH or
#      PYTHONPATH), ATELIER_HOME on a path with spaces and non-ASCII letters; the
#      llama.cpp CPU variant that was picked; no AVX-512/AMX code outside the variants;
#      the same self-test through the AppDir's AppRun and the .AppImage when built.
#   b. the window under Xvfb: time from process start until it is shown (median of 5),
#      a screenshot in dist/screenshot.png, the window's WM_CLASS against the .desktop.
#   c. the .deb in a clean Debian 12 root (packaging/linux/chroot_smoke.sh), when this
#      machine can (root, debootstrap, a Debian mirror); otherwise it says why and skips.
#      ATELIER_SMOKE_CHROOT=0 skips it, =1 makes a skip an error.
#
# Exits non-zero when anything fails. Figures go to dist/smoke-report.txt.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIST="$ROOT/dist"
BUNDLE="$DIST/atelier"
STARTUP_TARGET=${ATELIER_STARTUP_TARGET:-1.0}   # seconds; above it: a warning
STARTUP_LIMIT=${ATELIER_STARTUP_LIMIT:-5.0}     # seconds; above it: a failure
REPORT="$DIST/smoke-report.txt"

fail() { echo "package-smoke: FAIL: $*" >&2; exit 1; }
[ -x "$BUNDLE/atelier" ] || fail "$BUNDLE/atelier is missing: run make package first"

WORK=$(mktemp -d /tmp/atelier-smoke.XXXXXX)
XVFB_PID=
cleanup() {
    [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
APP_HOME="$WORK/Über Ordner/ä b"      # ATELIER_HOME: spaces and non-ASCII letters
mkdir -p "$WORK/home"
# Nothing of the build: no venv on PATH, no PYTHONPATH, no PYTHONHOME, no locale.
CLEAN=(env -i HOME="$WORK/home" PATH=/usr/bin:/bin)
: > "$REPORT"
report() { echo "$*" | tee -a "$REPORT"; }

echo "=== a. self-test of the bundle in a clean environment"
LIB=$(find "$BUNDLE" -type d -path '*llama_cpp/lib' | head -1)
[ -n "$LIB" ] || fail "no llama_cpp/lib in the bundle"
variants=$(cd "$LIB" && ls libggml-cpu-*.so 2>/dev/null | sed 's/libggml-cpu-\(.*\)\.so/\1/' | tr '\n' ' ')
[ -n "$variants" ] || fail "no libggml-cpu-<level>.so variants in $LIB (runtime CPU dispatch missing)"
compgen -G "$LIB/*sapphirerapids*" >/dev/null && fail "the AMX (sapphirerapids) variant is bundled"
report "cpu variants:  $variants"
if command -v objdump >/dev/null; then
    # Only the variants may use AVX-512 (zmm registers) or AMX tiles; the base libraries must run anywhere.
    for lib in "$LIB"/libggml-base.so.* "$LIB"/libggml.so.* "$LIB"/libllama.so.* "$LIB"/libggml-cpu-x64.so; do
        [ -L "$lib" ] && continue
        n=$(objdump -d --no-show-raw-insn "$lib" | grep -cE '%zmm|tileloadd|tdpb' || true)
        [ "$n" = 0 ] || fail "$(basename "$lib") holds $n AVX-512/AMX instructions: built with -march=native?"
    done
    report "base libs:     no AVX-512/AMX instructions outside the CPU variants"
fi

start=$(date +%s.%N)
"${CLEAN[@]}" ATELIER_HOME="$APP_HOME" LD_DEBUG=files LD_DEBUG_OUTPUT="$WORK/ld" \
    "$BUNDLE/atelier" --selftest > "$WORK/selftest1.json" 2> "$WORK/selftest1.err" \
    || { rc=$?; cat "$WORK/selftest1.err"; fail "atelier --selftest (first run) exited $rc"; }
first=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
cat "$WORK/selftest1.json"
grep -q '"selftest": "ok"' "$WORK/selftest1.json" || fail "the self-test did not say ok"
grep -q '"frozen": true' "$WORK/selftest1.json" || fail "the self-test did not run frozen"
log="$APP_HOME/logs/engine-host-selftest.log"
[ -s "$log" ] || fail "no engine host log at $log"
# The engine host is a spawned copy of the bundle; ggml opens every variant to score it,
# then the best one once more: the last one opened is the one in use.
picked=$(cat "$WORK"/ld.* | grep -E 'file=.*libggml-cpu-[a-z0-9]+\.so .*dynamically loaded' \
    | tail -1 | sed 's/.*libggml-cpu-\([a-z0-9]*\)\.so.*/\1/')
[ -n "$picked" ] || fail "no libggml-cpu variant was loaded (runtime CPU dispatch failed)"
if grep -h "file=" "$WORK"/ld.* | grep -q "$ROOT/.venv"; then fail "the bundle loaded a library from the build venv"; fi
echo "llama.cpp CPU variant loaded by the engine host: $picked"
report "cpu variant:   $picked (picked at run time on: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"

start=$(date +%s.%N)
"${CLEAN[@]}" ATELIER_HOME="$APP_HOME" "$BUNDLE/atelier" --selftest > "$WORK/selftest2.json" \
    || fail "atelier --selftest (second run) exited $?"
second=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
grep -q '"selftest": "ok"' "$WORK/selftest2.json" || fail "the second self-test did not say ok"
tps=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['tokens_per_second'], 1))" "$WORK/selftest2.json")
report "self-test:     ${first} s first run (writes the 253 MB demo model), ${second} s after; ${tps} tokens/s"

APPDIR="$ROOT/build/appimage/Atelier.AppDir"
if [ -x "$APPDIR/AppRun" ]; then
    "${CLEAN[@]}" ATELIER_HOME="$APP_HOME" "$APPDIR/AppRun" --selftest > "$WORK/appdir.json" \
        && grep -q '"selftest": "ok"' "$WORK/appdir.json" || fail "AppRun --selftest in $APPDIR"
    report "appdir:        AppRun --selftest ok ($APPDIR)"
fi
for image in "$DIST"/Atelier-*.AppImage; do
    [ -e "$image" ] || continue
    # Extract-and-run: no FUSE needed (containers, CI).
    "${CLEAN[@]}" APPIMAGE_EXTRACT_AND_RUN=1 TMPDIR="$WORK" ATELIER_HOME="$APP_HOME" "$image" --selftest > "$WORK/appimage.json" \
        && grep -q '"selftest": "ok"' "$WORK/appimage.json" || fail "$(basename "$image") --selftest"
    report "appimage:      $(basename "$image") --selftest ok"
done

echo "=== b. the window under Xvfb"
for display in $(seq 90 120); do [ -e "/tmp/.X11-unix/X$display" ] || [ -e "/tmp/.X$display-lock" ] || break; done
Xvfb ":$display" -screen 0 1280x800x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
XVFB_PID=$!
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$display" ] && break; sleep 0.1; done
[ -e "/tmp/.X11-unix/X$display" ] || fail "Xvfb did not start"
"${CLEAN[@]}" DISPLAY=":$display" LANG=C.UTF-8 ATELIER_HOME="$APP_HOME" \
    python3 "$HERE/measure_startup.py" --runs 5 --screenshot "$DIST/screenshot.png" -- "$BUNDLE/atelier" \
    > "$WORK/startup.json" || { cat "$WORK/startup.json"; fail "the window did not come up"; }
cat "$WORK/startup.json"
median=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['median_s'])" "$WORK/startup.json")
all=$(python3 -c "import json,sys; print(' '.join(map(str, json.load(open(sys.argv[1]))['all_s'])))" "$WORK/startup.json")
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if any(c.endswith('/Atelier') for c in d['wm_classes']) else 1)" \
    "$WORK/startup.json" || fail "no window with WM_CLASS Atelier (StartupWMClass in atelier.desktop)"
[ -s "$DIST/screenshot.png" ] || fail "no screenshot"
awk -v m="$median" -v l="$STARTUP_LIMIT" 'BEGIN { exit !(m <= l) }' || fail "cold start ${median} s is over ${STARTUP_LIMIT} s"
verdict=$(awk -v m="$median" -v t="$STARTUP_TARGET" 'BEGIN { print (m <= t) ? "within" : "OVER" }')
report "cold start:    median ${median} s from process start to window shown, 5 runs: ${all} ($verdict the ${STARTUP_TARGET} s target; load average $(cut -d' ' -f1-3 /proc/loadavg))"
report "screenshot:    $DIST/screenshot.png"

echo "=== c. the .deb in a clean Debian 12 root"
chroot_state=skipped
if [ "${ATELIER_SMOKE_CHROOT:-auto}" = 0 ]; then
    reason="ATELIER_SMOKE_CHROOT=0"
elif [ "$(id -u)" != 0 ]; then
    reason="needs root (chroot, mount): run sudo make package-smoke"
elif ! command -v debootstrap >/dev/null && [ ! -f "${ATELIER_BUILD_CACHE:-$HOME/.cache/atelier-build}/rootfs/bookworm-minbase.tar" ]; then
    reason="debootstrap is not installed (apt-get install debootstrap)"
else
    reason=
fi
if [ -n "$reason" ]; then
    [ "${ATELIER_SMOKE_CHROOT:-auto}" = 1 ] && fail "chroot test required but impossible: $reason"
    report "chroot:        skipped ($reason); a. covers the bundle itself"
else
    start=$(date +%s)
    "$HERE/chroot_smoke.sh" "$(ls "$DIST"/atelier_*.deb | head -1)" || fail "the chroot test failed"
    chroot_state=passed
    report "chroot:        passed (Debian 12 minbase + apt-get install ./$(basename "$(ls "$DIST"/atelier_*.deb | head -1)"); $(( $(date +%s) - start )) s)"
fi

echo "package-smoke: OK (chroot $chroot_state)"
