"""The entry script of the frozen app (PyInstaller), on every platform.

1. ``multiprocessing.freeze_support()`` comes first, so that anything started
   with multiprocessing's spawn runs as the child it is, not as the app. (The
   engine host is this very executable started again with ``--engine-host``,
   which ``main`` turns into the host before any GUI code runs:
   engines/host/launch.py.)
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
