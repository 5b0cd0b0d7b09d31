"""Durable files: one way to write a file atomically, and to lock state shared by processes.

Every state file (settings, the model registry, the download queue, the
image-engine install record), every export and every generated image goes
through :func:`atomic_write_bytes`, so a crash, a kill or a full disk leaves
either the old file or the new one, never half of one. Files that two
processes may write (the GUI and a CLI command on one profile) are changed
under :func:`state_lock`. A state file is read with :func:`read_state`,
which sets a damaged one aside instead of reading it as empty.
"""

from engines.storage.atomic import atomic_write_bytes, atomic_write_text, fsync_folder
from engines.storage.lock import LockTimeout, held_elsewhere, state_lock, try_hold
from engines.storage.state_file import StateRead, file_version, read_state, set_aside, split_valid

__all__ = [
    "LockTimeout",
    "StateRead",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_version",
    "fsync_folder",
    "held_elsewhere",
    "read_state",
    "set_aside",
    "split_valid",
    "state_lock",
    "try_hold",
]
