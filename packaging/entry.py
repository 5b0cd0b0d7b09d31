"""The entry script of the frozen app (PyInstaller), on every platform.

1. ``multiprocessing.freeze_support()`` comes first: the engine host is a
   *spawned* process, and in a frozen app it is this very executable started
   again with ``--multiprocessing-fork``. freeze_support() turns that start
   into the engine host and exits, before any GUI code runs.
2. On Linux, when the GUI is asked for (no arguments), check that the system
   libraries the bundled Qt needs are there, and name the missing ones in
   words instead of Qt's "could not load the Qt platform plugin" abort.
3. Then the same ``main`` as the ``atelier`` console script.
"""

import multiprocessing

multiprocessing.freeze_support()

import sys  # noqa: E402


def _gui_requested() -> bool:
    return len(sys.argv) <= 1


if __name__ == "__main__":
    if sys.platform.startswith("linux") and _gui_requested():
        try:
            import launcher_check  # packaging/linux/launcher_check.py, bundled by the Linux spec
        except ImportError:
            launcher_check = None
        if launcher_check is not None and launcher_check.check() != 0:
            sys.exit(1)

    from desktop.cli import main

    sys.exit(main())
