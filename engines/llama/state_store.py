"""The prompt cache on disk: saved context states in a size-bounded folder.

A saved state outlives the engine host that made it: the scheduler ends a
host when its model is unloaded (after an idle time, or to make room), and
the app may be restarted; a long conversation then resumes without reading
its thousands of tokens again.

Layout: ``<cache>/prompt-states/<model key>/<token hash>.state``. The model
key hashes everything that makes a state usable (the model file's path,
size and modification time, the KV cache type, flash attention, the
llama.cpp build), so a state is never offered to a context that cannot
take it; a changed model file simply gets a new folder, and the old one
ages out. Each file holds its tokens before the state bytes, so the index
(which token prefixes exist) is read without reading the states.

Bounds: all models together keep at most ``min(2 GiB, 10% of the disk's
free space)``; the least recently used files go first (a read touches the
file's time). 2 GiB holds about 27 Gemma 3 270M conversations of 4,000
tokens (74 MB each) or two of an 8B model at 8,000 tokens (1 GB each): the
conversations a person switches between, not an archive; and a cache must
never be what fills the user's disk.

Files are written with :func:`engines.storage.atomic_write_bytes` on a
background thread, so the reply that follows never waits for the disk.
Each file is immutable once written, and every process only adds whole
files or removes them, so two processes (the GUI's host and a server's)
can share the folder without a lock; a file that vanishes between the
index and the read is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.llama.context_state import SavedState
from engines.storage import atomic_write_bytes

log = logging.getLogger(__name__)

FOLDER_NAME = "prompt-states"
MAX_DISK_BYTES = 2 << 30
DISK_SHARE_OF_FREE = 0.10
_MAGIC = b"ATLKV\x00\x02\x00"
_HEADER = struct.Struct("<8sIII")  # magic, token count, floor, key length (then the key, the tokens, the state)
_MAX_TOKENS = 1 << 24
_STALE_TMP_S = 600.0  # a temporary file this old was left by a killed process


@dataclass(frozen=True)
class DiskEntry:
    path: Path
    tokens: np.ndarray
    key: str | None
    nbytes: int
    floor: int = 0  # as SavedState.floor


def model_key(model_path: str, cache_type: str, flash_attention: bool) -> str:
    """A name for everything that must match for a saved state to fit a context."""
    import llama_cpp

    path = Path(model_path).resolve()
    stat = path.stat()
    identity = {
        "path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "cache_type": cache_type, "flash_attention": flash_attention,
        "llama_cpp": getattr(llama_cpp, "__version__", "?"), "format": 1,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


class StateStore:
    """One model's saved states on disk, with the index of their token prefixes."""

    def __init__(self, root: Path, key: str, max_bytes: int | None = None) -> None:
        self._root = root
        self._folder = root / key
        self._max_bytes = max_bytes
        self._entries: dict[Path, DiskEntry] = {}
        self._scanned_mtime: int | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return self._folder

    # ---- index -----------------------------------------------------------

    def entries(self) -> list[DiskEntry]:
        """The states on disk for this model, rescanned when the folder changed (another process wrote)."""
        try:
            mtime = self._folder.stat().st_mtime_ns
        except OSError:
            return []
        with self._lock:
            if mtime != self._scanned_mtime:
                self._scanned_mtime = mtime
                self._entries = {e.path: e for e in (_read_header(p) for p in self._folder.glob("*.state")) if e}
            return list(self._entries.values())

    def load(self, entry: DiskEntry) -> SavedState | None:
        """The state of ``entry``, or None when it is gone or damaged (it is then removed)."""
        try:
            with open(entry.path, "rb") as handle:
                head = handle.read(_HEADER.size)
                _, count, _, key_size = _HEADER.unpack(head)
                handle.seek(_HEADER.size + key_size + 4 * count)
                blob = bytearray(os.fstat(handle.fileno()).st_size - handle.tell())
                if handle.readinto(blob) != len(blob) or not blob:
                    raise ValueError("truncated")
            os.utime(entry.path)  # least recently used goes first
        except (OSError, ValueError, struct.error) as exc:
            log.info("saved state %s unusable (%s)", entry.path.name, exc)
            self.remove(entry.path)
            return None
        return SavedState(entry.tokens, blob, entry.key, entry.floor)

    def discard(self, tokens: np.ndarray) -> None:
        """Remove the file of the state of ``tokens``, if there is one."""
        self.remove(self._folder / _file_name(np.ascontiguousarray(tokens, dtype="<i4")))

    def remove(self, path: Path) -> None:
        with self._lock:
            self._entries.pop(path, None)
        try:
            path.unlink()
        except OSError:
            pass

    # ---- writing ---------------------------------------------------------

    def save_later(self, state: SavedState, subsumed: list[np.ndarray] = ()) -> None:
        """Write ``state`` on the background thread, and drop files whose tokens it extends."""
        self._queue.put((state, list(subsumed)))
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_loop, name="prompt-state-writer", daemon=True)
            self._writer.start()

    def save_now(self, state: SavedState, subsumed: list[np.ndarray] = ()) -> None:
        """Write ``state`` before returning (at unload: the host is about to end)."""
        self._write(state, list(subsumed))

    def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for queued writes; what is left is lost (it is only a cache)."""
        deadline = time.monotonic() + timeout
        while self._writer is not None and self._writer.is_alive() and not self._queue.empty():
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    def _write_loop(self) -> None:
        while True:
            try:
                state, subsumed = self._queue.get(timeout=5.0)
            except queue.Empty:
                return
            try:
                self._write(state, subsumed)
            except Exception:  # a full or read-only disk: the cache stays in memory only
                log.warning("could not write a saved prompt state to %s", self._folder, exc_info=True)

    def _write(self, state: SavedState, subsumed: list[np.ndarray]) -> None:
        self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = (state.key or "").encode("utf-8")[:1024]
        tokens = np.ascontiguousarray(state.tokens, dtype="<i4")
        path = self._folder / _file_name(tokens)
        atomic_write_bytes(path, b"".join((_HEADER.pack(_MAGIC, len(tokens), state.floor, len(key)), key, tokens.tobytes(),
                                           state.blob)))
        for old in subsumed:
            if _file_name(np.ascontiguousarray(old, dtype="<i4")) != path.name:
                self.discard(old)
        self._trim()

    def _trim(self) -> None:
        """Keep every model's states together under the disk budget, oldest use first."""
        files = []
        now = time.time()
        for path in self._root.glob("*/*"):
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.name.endswith(".tmp"):
                if now - stat.st_mtime > _STALE_TMP_S:
                    _unlink(path)
            elif path.suffix == ".state":
                files.append((stat.st_mtime, stat.st_size, path))
        used = sum(size for _, size, _ in files)
        budget = self._budget(used)
        for _, size, path in sorted(files):
            if used <= budget:
                break
            if path.parent == self._folder:
                self.remove(path)
            else:
                _unlink(path)
            used -= size

    def _budget(self, used: int) -> int:
        if self._max_bytes is not None:
            return self._max_bytes
        try:
            free = shutil.disk_usage(self._root).free
        except OSError:
            return 0
        return int(min(MAX_DISK_BYTES, DISK_SHARE_OF_FREE * (free + used)))


def _file_name(tokens: np.ndarray) -> str:
    return hashlib.sha256(tokens.tobytes()).hexdigest()[:24] + ".state"


def _read_header(path: Path) -> DiskEntry | None:
    try:
        with open(path, "rb") as handle:
            magic, count, floor, key_size = _HEADER.unpack(handle.read(_HEADER.size))
            if magic != _MAGIC or not 0 < count <= _MAX_TOKENS or floor >= count or key_size > 1024:
                raise ValueError("not a saved state")
            key = handle.read(key_size).decode("utf-8", errors="replace") or None
            tokens = np.frombuffer(handle.read(4 * count), dtype="<i4")
            if len(tokens) != count:
                raise ValueError("truncated")
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return None  # gone meanwhile, or unreadable: not ours to judge
    except (ValueError, struct.error):
        _unlink(path)  # damaged: a cache file, so it goes
        return None
    tokens = tokens.astype(np.int32)
    tokens.setflags(write=False)
    return DiskEntry(path, tokens, key, size, floor)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
