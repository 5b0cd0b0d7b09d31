"""Remove from a staged bundle the system libraries that a package's Depends provide.

    python packaging/linux/unbundle.py BUNDLE_INTERNAL_DIR PACKAGE [PACKAGE...]

PyInstaller copies every non-core system library the bundle links (libX11,
libxcb-*, libxkbcommon, glib, dbus...) from the build machine. That is right
for the portable builds (the AppImage, a tarball): they run where those
libraries may be missing. A .deb declares them in ``Depends`` instead, so the
user's system copies, which get security updates, are the ones loaded. This
drops the bundled copy of each library whose Debian package is in the list,
then anything only those copies needed (libsystemd behind libdbus, ...).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

from common_spec import _elf_needed  # noqa: E402
from desktop.launcher_check import DEBIAN_PACKAGES  # noqa: E402  (standard library only)

# Always kept even when their package is listed: the bundle's Python and C++ runtime.
KEEP = ("libpython", "libstdc++", "libgcc_s")


def soname_of(name: str) -> str:
    """libfoo.so.1.2.3 -> libfoo.so.1 for the lookup in DEBIAN_PACKAGES."""
    if ".so." not in name:
        return name
    stem, _, version = name.partition(".so.")
    return f"{stem}.so.{version.split('.')[0]}"


def _is_extension_module(name: str) -> bool:
    return ".cpython-" in name or name.endswith(".abi3.so")


def main() -> int:
    internal = Path(sys.argv[1])
    packages = set(sys.argv[2:])
    removed = []
    for path in sorted(internal.iterdir()):
        if path.is_dir() or path.name.startswith(KEEP):
            continue
        if DEBIAN_PACKAGES.get(soname_of(path.name)) in packages:
            path.unlink()
            removed.append(path.name)
    # Then top-level libraries nothing left links (the dependencies of what went).
    while True:
        needed: set[str] = set()
        for dirpath, _dirs, files in os.walk(internal):
            for name in files:
                full = os.path.join(dirpath, name)
                if ".so" in name and not os.path.islink(full):
                    needed.update(_elf_needed(full))
        orphans = [p for p in internal.iterdir()
                   if not p.is_dir() and ".so" in p.name and not p.name.startswith(KEEP) and p.name not in needed
                   and not _is_extension_module(p.name)]
        if not orphans:
            break
        for path in orphans:
            path.unlink()
            removed.append(path.name)
    print(f"unbundled {len(removed)} system libraries provided by Depends: {' '.join(sorted(removed))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
