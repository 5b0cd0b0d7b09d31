"""Which system library keeps Qt from starting, named with its Debian/Ubuntu package.

PySide6 ships Qt, but Qt's platform plugins link system libraries
(libxcb-*, libxkbcommon, libGL, libEGL, fontconfig...) that a desktop
normally has and a minimal system may not. When one is missing, Qt prints
"Could not load the Qt platform plugin "xcb"" and aborts, often naming the
wrong library ("xcb-cursor0 or libxcb-cursor0 is needed"), which tells the
user nothing. :func:`check` loads the platform plugin Qt would use and, when
that fails, names each missing library and the package that provides it.

Who runs it:

* the GUI's start (``desktop.gui_start``), for the ``atelier`` console
  script of a virtualenv and the packaged app alike, once Qt has failed to
  start, so a working start pays nothing;
* ``make setup`` (``python -m desktop.launcher_check``), when a display is set;
* the packaging scripts (``unbundle.py`` and ``chroot_smoke.sh`` read
  :data:`DEBIAN_PACKAGES`).

It lives in the app package so they all share this one copy, and it
imports only the standard library: packaging runs it with a system Python.
The slow path (``ldd``) runs only when loading the plugin fails.

Run it by hand with ``python -m desktop.launcher_check [QT_PARENT_DIR]``
(exit code 0 when nothing is missing; by default it checks the PySide6 of
the Python that runs it, or the bundle's in the frozen app).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# soname -> Debian/Ubuntu package. The libraries the PySide6 6.x platform plugins link.
DEBIAN_PACKAGES = {
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-dri3.so.0": "libxcb-dri3-0",
    "libxcb-present.so.0": "libxcb-present0",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libXext.so.6": "libxext6",
    "libXrender.so.1": "libxrender1",
    "libXi.so.6": "libxi6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
    "libGLdispatch.so.0": "libglvnd0",
    "libgbm.so.1": "libgbm1",
    "libdrm.so.2": "libdrm2",
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libharfbuzz.so.0": "libharfbuzz0b",
    "libpng16.so.16": "libpng16-16",
    "libexpat.so.1": "libexpat1",
    "libz.so.1": "zlib1g",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libgio-2.0.so.0": "libglib2.0-0",
    "libgomp.so.1": "libgomp1",
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)
_DLERROR = re.compile(r"([\w.+-]+\.so[\w.]*): cannot open shared object file")


def qt_dir(bundle: Path) -> Path | None:
    for candidate in (bundle / "PySide6" / "Qt", bundle / "_internal" / "PySide6" / "Qt"):
        if (candidate / "plugins" / "platforms").is_dir():
            return candidate
    return None


def candidate_platforms(env=os.environ) -> list[str]:
    """The platform plugins Qt would try, in order (only the ones worth checking)."""
    forced = env.get("QT_QPA_PLATFORM", "").strip()
    if forced:
        names = [part.split(":")[0].strip() for part in forced.split(";") if part.strip()]
        return [name for name in names if name] or ["xcb"]
    names = []
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        names.append("wayland")
    names.append("xcb")
    return names


def _plugin(qt: Path, platform: str) -> Path | None:
    path = qt / "plugins" / "platforms" / f"libq{platform}.so"
    return path if path.exists() else None


def _loads(path: Path) -> str | None:
    """None when the library and all it links load; otherwise the loader's message."""
    try:
        ctypes.CDLL(str(path), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        return None
    except OSError as exc:
        return str(exc)


def missing_libraries(path: Path, load_error: str = "") -> list[str]:
    """Every library ``path`` needs, directly or not, that the system cannot find."""
    # ldd runs with our environment on purpose: the bundle's LD_LIBRARY_PATH (set by the
    # PyInstaller bootloader) is how the libraries it carries itself are found at run time.
    ldd = shutil.which("ldd") or ("/usr/bin/ldd" if os.path.exists("/usr/bin/ldd") else None)
    names: list[str] = []
    if ldd:
        try:
            out = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=20,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
            names = _NOT_FOUND.findall(out)
        except (OSError, subprocess.SubprocessError):
            names = []
    if not names:
        names = _DLERROR.findall(load_error)
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


def message(missing: list[str]) -> str:
    packages = []
    lines = []
    for soname in missing:
        package = DEBIAN_PACKAGES.get(soname)
        if package:
            lines.append(f"  {soname}  (Debian/Ubuntu package {package})")
            if package not in packages:
                packages.append(package)
        else:
            lines.append(f"  {soname}")
    if len(missing) == 1:
        head = f"Atelier needs the system library {missing[0]}"
        head += f" (Debian/Ubuntu package {packages[0]})." if packages else ", which is not installed."
        text = head
    else:
        text = "Atelier needs these system libraries, which are not installed:\n" + "\n".join(lines)
    if packages:
        text += f"\nInstall {'it' if len(packages) == 1 else 'them'} with: sudo apt install {' '.join(packages)}"
        text += ("\n(On other distributions, install the package that provides "
                 + ("it.)" if len(missing) == 1 else "each library named above.)"))
    return text


def _system_env() -> dict:
    """The environment without the bundle's library path (for system tools like zenity)."""
    env = dict(os.environ)
    if getattr(sys, "frozen", False):
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is not None:
            env["LD_LIBRARY_PATH"] = original
        else:
            env.pop("LD_LIBRARY_PATH", None)
    return env


def show(text: str, dialog: bool = True) -> None:
    """Print it; when no terminal is watching (started from the menu), also show a dialog."""
    print(text, file=sys.stderr, flush=True)
    if not dialog:
        return
    if sys.stderr is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    for command in (
        ["zenity", "--error", "--title=Atelier", "--no-markup", f"--text={text}"],
        ["kdialog", "--title", "Atelier", "--error", text],
        ["xmessage", "-center", text],
        ["notify-send", "-u", "critical", "Atelier cannot start", text],
    ):
        if shutil.which(command[0]):
            try:
                subprocess.run(command, timeout=600, env=_system_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                return
            except (OSError, subprocess.SubprocessError):
                continue


def qt_parent() -> Path | None:
    """The folder that holds ``PySide6/Qt`` for this process, found without importing PySide6.

    In the frozen app, the bundle's own folder; in a virtualenv, its site-packages.
    """
    if getattr(sys, "frozen", False):
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


def check(bundle: Path | None = None, platforms: list[str] | None = None, dialog: bool = True) -> int:
    """0 when Qt can start (or the check does not apply); 1 after telling the user what is missing.

    ``dialog=False`` only prints (a build tool or a person at a terminal ran it).
    """
    if os.environ.get("ATELIER_SKIP_LIBRARY_CHECK"):
        return 0
    if bundle is None:
        bundle = qt_parent()
        if bundle is None:
            return 0
    qt = qt_dir(Path(bundle))
    if qt is None:
        return 0  # not a folder with its own Qt: nothing to check
    names = candidate_platforms() if platforms is None else platforms
    platforms = [name for name in names if _plugin(qt, name) is not None]
    if not platforms:
        return 0  # a platform we do not ship (or a typo): let Qt say so
    errors: dict[str, str] = {}
    for name in platforms:
        error = _loads(_plugin(qt, name))
        if error is None:
            return 0
        errors[name] = error
    # None of them loads. Explain the one that matters most: xcb under X11, else the first.
    name = "xcb" if "xcb" in errors and os.environ.get("DISPLAY") else platforms[0]
    missing = missing_libraries(_plugin(qt, name), errors[name])
    if not missing:
        show(f"Atelier cannot start its window: the Qt platform plugin '{name}' failed to load:\n  {errors[name]}",
             dialog)
    else:
        show(message(missing), dialog)
    return 1


if __name__ == "__main__":
    sys.exit(check(Path(sys.argv[1]) if len(sys.argv) > 1 else None, dialog=False))
