"""The entry script of the frozen app (PyInstaller), on every platform.

1. ``multiprocessing.freeze_support()`` comes first: the engine host is a
   *spawned* process, and in a frozen app it is this very executable started
   again with ``--multiprocessing-fork``. freeze_support() turns that start
   into the engine host and exits, before any GUI code runs.
2. Then the same ``main`` as the ``atelier`` console script. When Qt cannot
   start its window, that names the missing system library and its package
   (``desktop/gui_start.py`` and ``desktop/launcher_check.py``) instead of
   Qt's "could not load the Qt platform plugin" abort.
"""

import multiprocessing

multiprocessing.freeze_support()

import sys  # noqa: E402

if __name__ == "__main__":
    from desktop.cli import main

    sys.exit(main())
