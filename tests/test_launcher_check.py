"""The console script names a missing system library instead of Qt's misleading abort (issues 9 and 11).

The GUI start is run for real through ``atelier``: against a copy of
PySide6 (hard links, so it costs no disk) from which the library the xcb
platform plugin links, ``libQt6XcbQpa.so.6``, was removed, Qt really fails
to load the plugin, prints its "xcb-cursor0 or libxcb-cursor0 is needed",
and the check names the library that is really missing instead.
"""

from __future__ import annotations

import ast
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.launcher_check import message
from tests.fixtures.cli_runner import ROOT, cli_env, run_atelier

MISSING = "libQt6XcbQpa.so.6"


@pytest.fixture
def pyside_without_xcb_library(tmp_path) -> Path:
    """A folder for PYTHONPATH with a PySide6 whose xcb plugin cannot load (its ``MISSING`` removed)."""
    import PySide6

    real = Path(PySide6.__file__).parent
    fake = tmp_path / "site"
    try:
        shutil.copytree(real, fake / "PySide6", copy_function=os.link, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM):
            pytest.skip(f"the temporary folder cannot hard-link PySide6 ({exc.strerror}); a copy would be 250 MB")
        raise
    (fake / "PySide6" / "Qt" / "lib" / MISSING).unlink()
    assert (fake / "PySide6" / "Qt" / "plugins" / "platforms" / "libqxcb.so").is_file()
    return fake


def x11_env(**changes):
    """An X11 session on a display that does not exist (so no dialog can open either)."""
    base = {"DISPLAY": ":98765", "WAYLAND_DISPLAY": None, "XDG_SESSION_TYPE": None, "QT_QPA_PLATFORM": None,
            "ATELIER_SKIP_LIBRARY_CHECK": None}
    return cli_env(**{**base, **changes})


def test_the_console_script_names_the_missing_library_instead_of_qt(pyside_without_xcb_library):
    run = run_atelier(env=x11_env(PYTHONPATH=str(pyside_without_xcb_library)))
    assert run.returncode == 1
    assert run.stderr.decode() == f"Atelier needs the system library {MISSING}, which is not installed.\n"


def test_make_setup_names_the_missing_library_when_a_display_is_set(pyside_without_xcb_library):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run = subprocess.run(["make", "--no-print-directory", "check-qt", f"BIN={Path(sys.executable).parent}"], cwd=ROOT,
                         capture_output=True, env=x11_env(PYTHONPATH=str(pyside_without_xcb_library)), timeout=600)
    assert run.returncode != 0
    out = run.stdout.decode().splitlines()
    assert run.stderr.decode().startswith(f"Atelier needs the system library {MISSING}, which is not installed.\n")
    assert out[0] == "On Debian/Ubuntu, Qt's system libraries are:" and "libxcb-icccm4 libxcb-image0" in out[1]


def test_qts_own_words_stay_when_no_library_is_missing():
    """No X server on that display: Qt's message is right then, and the start ends with 1, not an abort."""
    run = run_atelier(env=x11_env())
    text = run.stderr.decode()
    assert run.returncode == 1, text
    assert "qt.qpa.xcb: could not connect to display :98765" in text
    assert "no Qt platform plugin could be initialized" in text and "Atelier needs" not in text


@pytest.mark.slow
def test_the_console_script_opens_the_window_offscreen():
    run = run_atelier(env=cli_env(QT_QPA_PLATFORM="offscreen", ATELIER_QUIT_AFTER_SHOW="300",
                                  ATELIER_REPORT_STARTUP="1"))
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().startswith("window shown after ")


def test_the_message_names_the_debian_packages():
    assert message(["libxcb-cursor.so.0"]) == (
        "Atelier needs the system library libxcb-cursor.so.0 (Debian/Ubuntu package libxcb-cursor0)."
        "\nInstall it with: sudo apt install libxcb-cursor0"
        "\n(On other distributions, install the package that provides it.)")
    assert message(["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]) == (
        "Atelier needs these system libraries, which are not installed:"
        "\n  libxcb-icccm.so.4  (Debian/Ubuntu package libxcb-icccm4)"
        "\n  libxcb-keysyms.so.1  (Debian/Ubuntu package libxcb-keysyms1)"
        "\nInstall them with: sudo apt install libxcb-icccm4 libxcb-keysyms1"
        "\n(On other distributions, install the package that provides each library named above.)")


def test_the_readme_and_the_makefile_install_every_library_the_xcb_plugin_links():
    """Their apt lists cover what Qt's xcb platform links, per the check's own table of packages."""
    from desktop.launcher_check import DEBIAN_PACKAGES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("sudo apt-get install libegl1", 1)[1].split("```", 1)[0]
    readme_packages = set(("libegl1 " + block).replace("\\", " ").split())
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    make_block = makefile.split("QT_APT_PACKAGES :=", 1)[1].split("\n\n", 1)[0]
    make_packages = set(make_block.replace("\\", " ").split())
    assert readme_packages == make_packages
    needed = ["libxcb.so.1", "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-image.so.0", "libxcb-keysyms.so.1",
              "libxcb-randr.so.0", "libxcb-render-util.so.0", "libxcb-shape.so.0", "libxcb-util.so.1",
              "libxcb-xkb.so.1", "libxkbcommon-x11.so.0", "libX11-xcb.so.1", "libEGL.so.1", "libfontconfig.so.1"]
    missing = {DEBIAN_PACKAGES[soname] for soname in needed} - readme_packages - {"libxcb1"}  # libxcb1: pulled in by all
    assert not missing, missing


def test_the_check_needs_only_the_standard_library():
    """Packaging scripts import it with a system Python that has none of the app's packages."""
    tree = ast.parse((ROOT / "desktop" / "launcher_check.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
