"""Durable files: one way to write a file atomically, and to lock state shared by processes.

Every state file (settings, the model registry, the download queue, the
image-engine install record), every export and every generated image goes
through :func:`atomic_write_bytes`, so a crash, a kill or a full disk leaves
either the old file or the new one, never half of one. Files that two
processes may write (the GUI and a CLI command on one profile) are changed
under :func:`state_lock`.
"""

from engines.storage.atomic import atomic_write_bytes, atomic_write_text, fsync_folder
from engines.storage.lock import LockTimeout, state_lock

__all__ = ["LockTimeout", "atomic_write_bytes", "atomic_write_text", "fsync_folder", "state_lock"]
