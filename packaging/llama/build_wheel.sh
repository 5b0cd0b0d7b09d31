#!/usr/bin/env bash
# Build (once) and install llama-cpp-python with portable CPU flags.
#
#   packaging/llama/build_wheel.sh PYTHON
#
# Why a script of our own:
# - llama-cpp-python is a source package; pip's default build uses -march=native,
#   which crashes with "illegal instruction" on CPUs older than the build machine.
#   We build with runtime CPU dispatch instead (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS),
#   as llama.cpp's own releases do: one libggml-cpu-<variant>.so per instruction-set
#   level, the best one picked when the app starts.
# - llama.cpp's AMX kernels segfault on some CPUs that advertise AMX (ggml_backend_amx_mul_mat).
#   AMX is off in the base flags, and the one variant that forces it on (sapphirerapids)
#   is left out of the wheel, so the next best variant (AVX-512 BF16/VNNI) serves those CPUs.
# - pip caches a built wheel under the package's name and version only, not its flags,
#   so a wheel built once with other flags would be silently reused. We keep our own
#   wheel cache keyed by version + flags + this script's revision, and never use pip's.
set -euo pipefail

PYTHON=${1:?usage: build_wheel.sh PYTHON}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
SCRIPT_REVISION=3
BASE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
# Extra flags for GPU builds, e.g. LLAMA_EXTRA_CMAKE_ARGS="-DGGML_CUDA=ON" (see README).
ARGS="$BASE_ARGS ${LLAMA_EXTRA_CMAKE_ARGS:-}"
CACHE_ROOT=${ATELIER_WHEEL_CACHE:-$HOME/.cache/atelier-build/wheels}
sha256() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi; }  # macOS: shasum
KEY=$(printf '%s|%s|%s|%s' "$VERSION" "$ARGS" "$SCRIPT_REVISION" "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" | sha256 | cut -c1-16)
DEST="$CACHE_ROOT/llama-cpp-python-$VERSION-$KEY"

installed_key() {
    "$PYTHON" - <<'PY' 2>/dev/null || true
import importlib.metadata as m, pathlib
try:
    dist = m.distribution("llama-cpp-python")
    print((pathlib.Path(dist._path) / "atelier-build-key").read_text().strip())
except Exception:
    pass
PY
}

if [ "$(installed_key)" = "$KEY" ]; then
    echo "llama-cpp-python $VERSION (build $KEY) is already installed"
    exit 0
fi

if ! ls "$DEST"/*.whl >/dev/null 2>&1; then
    echo "Building llama-cpp-python $VERSION with portable CPU dispatch (about 10 minutes on 2 cores)..."
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/wheel" "$WORK/unpacked" "$WORK/repacked"
    if [ -n "${LLAMA_PREBUILT_WHEEL:-}" ]; then
        cp "$LLAMA_PREBUILT_WHEEL" "$WORK/wheel/"   # a wheel built with exactly these flags
    else
        "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK/src"
        CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || sysctl -n hw.ncpu)} \
            "$PYTHON" -m pip wheel --quiet --no-cache-dir --no-deps "$WORK"/src/llama_cpp_python-*.tar.gz -w "$WORK/wheel"
    fi
    # ggml installs its backend modules (the CPU variants; Metal, BLAS or CUDA when
    # enabled) into a top-level bin/ folder of site-packages, plus headers and CMake
    # files nobody needs. Move the modules beside libggml (llama_cpp/lib), drop the
    # AMX variant, drop the rest. (Backend modules are named .so on macOS too.)
    "$PYTHON" -m pip install --quiet wheel
    "$PYTHON" -m wheel unpack "$WORK"/wheel/*.whl -d "$WORK/unpacked"
    ROOT=$(echo "$WORK"/unpacked/*/)
    for module in "$ROOT"/bin/libggml-*.so; do
        case "$(basename "$module")" in libggml-base*) ;; *) mv "$module" "$ROOT/llama_cpp/lib/" ;; esac
    done
    rm -f "$ROOT"/llama_cpp/lib/libggml-cpu-sapphirerapids*
    rm -rf "${ROOT:?}/bin" "${ROOT:?}/include" "${ROOT:?}/lib"
    ls "$ROOT"/llama_cpp/lib/libggml-cpu-*.so >/dev/null   # the variants are there (x86: x64...zen4, Apple: apple_m1...)
    "$PYTHON" -m wheel pack "$ROOT" -d "$WORK/repacked"
    mkdir -p "$DEST"
    cp "$WORK"/repacked/*.whl "$DEST/"
fi

"$PYTHON" -m pip install --quiet --no-deps --force-reinstall "$DEST"/*.whl
"$PYTHON" -m pip install --quiet "diskcache>=5.6.1" "jinja2>=2.11.3" "numpy>=1.20.0" "typing-extensions>=4.5.0"
"$PYTHON" - "$KEY" <<'PY'
import importlib.metadata as m, pathlib, sys
dist = m.distribution("llama-cpp-python")
(pathlib.Path(dist._path) / "atelier-build-key").write_text(sys.argv[1] + "\n")
PY
echo "llama-cpp-python $VERSION installed (build $KEY)"
