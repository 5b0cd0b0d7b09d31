"""The gallery: generated PNGs on disk, indexed in the app's SQLite database.

Every finished image is written to ``<data>/images/<yyyy-mm-dd>/`` the
moment the engine reports it (an ``ImageDoneEvent``), before the next one
starts, and then indexed. The file comes first and is durable on its own:
the PNG carries its parameters (see ``engines.diffusion.png_meta``), so
"use these settings again" works even for a file whose index row was lost,
and a database that cannot be written (corrupt, full disk) costs the index
row, never the image (:func:`write_image_file` works without a database).
The gallery's one table lives beside the chat tables in the app database;
``CREATE TABLE IF NOT EXISTS`` is its whole schema management so far.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from engines.storage import atomic_write_bytes

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gallery_images (
        id TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        created_at REAL NOT NULL,
        prompt TEXT NOT NULL,
        negative_prompt TEXT NOT NULL DEFAULT '',
        seed INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        steps INTEGER NOT NULL,
        guidance REAL NOT NULL,
        scheduler TEXT NOT NULL,
        model TEXT NOT NULL,
        backend TEXT NOT NULL,
        request_json TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS gallery_created ON gallery_images(created_at DESC)",
)


class NotIndexed(OSError):
    """The PNG was written to ``path``, but the database would not take its row (``entry`` describes it)."""

    def __init__(self, path: Path, cause: BaseException, entry: "GalleryImage | None" = None) -> None:
        super().__init__(f"{path} was saved, but the gallery index could not be updated ({cause})")
        self.path = Path(path)
        self.cause = cause
        self.entry = entry


@dataclass(frozen=True)
class GalleryImage:
    id: str
    path: str
    created_at: float
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    model: str
    backend: str
    request: dict  # the full request as JSON data, this image's seed included

    @property
    def exists(self) -> bool:
        return Path(self.path).exists()


def request_record(request, model_path: str | None = None, backend_choice: str | None = None,
                   model_id: str | None = None) -> dict:
    """An ``ImageRequest`` as the JSON data a gallery row keeps (the init image itself is not stored).

    Besides the request fields it records which model folder and backend
    choice produced the image, so "use these settings again" can restore them.
    """
    data = asdict(request)
    data.pop("init_image", None)
    data["img2img"] = request.init_image is not None
    data.pop("mask", None)  # like the init image, the mask is not stored (nor JSON)
    data["inpaint"] = bool(getattr(request, "inpainting", False))
    if model_path:
        data["model_path"] = str(model_path)
    if backend_choice:
        data["backend_choice"] = backend_choice
    if model_id:
        data["model_id"] = model_id
    return data


def write_image_file(images_dir: Path, png: bytes, seed: int, image_id: str | None = None,
                     when: float | None = None) -> Path:
    """Write one PNG into the gallery folder (atomic, fsynced) and return its path; no database involved.

    Named ``<yyyy-mm-dd>/<hhmmss>-<seed>-<id>.png`` so files sort by time
    and never collide.
    """
    now = time.time() if when is None else when
    image_id = image_id or uuid.uuid4().hex[:12]
    folder = Path(images_dir) / time.strftime("%Y-%m-%d", time.localtime(now))
    path = folder / f"{time.strftime('%H%M%S', time.localtime(now))}-{seed}-{image_id}.png"
    return atomic_write_bytes(path, png)


class Gallery:
    problem = ""  # why the index cannot be used: never, here (see FilesOnlyGallery)

    def __init__(self, db_path: Path, images_dir: Path) -> None:
        self._images = Path(images_dir)
        self._lock = threading.Lock()
        self._unindexed: dict[str, GalleryImage] = {}  # saved as files this session, their rows refused
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, timeout=10)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            with self._db:
                for statement in SCHEMA:
                    self._db.execute(statement)
        except sqlite3.Error:  # not a database, read-only, full disk: the caller decides what to say
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save(self, png: bytes, request: dict, *, seed: int, width: int, height: int, model: str, backend: str) -> GalleryImage:
        """Write the PNG (fsynced, atomic), then index it; returns the new entry.

        When indexing fails the file stays where it is (the error says so
        through :class:`NotIndexed`), because the image matters more than its row.
        """
        entry = _write(self._images, png, request, seed, width, height, model, backend)
        record, path = entry.request, Path(entry.path)
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT INTO gallery_images VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (entry.id, entry.path, entry.created_at, entry.prompt, entry.negative_prompt, seed, width, height,
                     entry.steps, entry.guidance, entry.scheduler, model, backend, json.dumps(record)),
                )
        except sqlite3.Error as exc:
            with self._lock:
                self._unindexed[entry.id] = entry
            raise NotIndexed(path, exc, entry) from exc
        return entry

    def list(self, limit: int = 500) -> list[GalleryImage]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM gallery_images ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
            unindexed = list(self._unindexed.values())
        entries = [_entry(row) for row in rows]
        if unindexed:
            entries = sorted(entries + unindexed, key=lambda e: e.created_at, reverse=True)[:limit]
        return entries

    def get(self, image_id: str) -> GalleryImage | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM gallery_images WHERE id = ?", (image_id,)).fetchone()
            return _entry(row) if row else self._unindexed.get(image_id)

    def delete(self, image_id: str) -> None:
        entry = self.get(image_id)
        if entry is None:
            return
        Path(entry.path).unlink(missing_ok=True)
        with self._lock, self._db:
            self._unindexed.pop(image_id, None)
            self._db.execute("DELETE FROM gallery_images WHERE id = ?", (image_id,))

    def remember(self, entry: GalleryImage) -> None:
        """An image saved through another connection (the worker's). Normally its row is in the database
        already; one whose row could not be written (:class:`NotIndexed`) is listed for this session."""
        if self.get(entry.id) is None:
            with self._lock:
                self._unindexed[entry.id] = entry


class FilesOnlyGallery:
    """The gallery when its database cannot be opened (damaged, read-only, a full disk): images still get saved.

    Each image is written as a file exactly where :class:`Gallery` would
    put it, and listed for this session only; ``problem`` says why in
    words, for the page or the command to show. Nothing is lost: the PNGs
    carry their parameters, and they stay in the gallery folder.
    """

    def __init__(self, images_dir: Path, problem: str) -> None:
        self._images = Path(images_dir)
        self.problem = problem
        self._entries: dict[str, GalleryImage] = {}
        self._lock = threading.Lock()

    def save(self, png: bytes, request: dict, *, seed: int, width: int, height: int, model: str, backend: str) -> GalleryImage:
        entry = _write(self._images, png, request, seed, width, height, model, backend)
        self.remember(entry)
        return entry

    def remember(self, entry: GalleryImage) -> None:
        with self._lock:
            self._entries[entry.id] = entry

    def list(self, limit: int = 500) -> list[GalleryImage]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.created_at, reverse=True)[:limit]

    def get(self, image_id: str) -> GalleryImage | None:
        with self._lock:
            return self._entries.get(image_id)

    def delete(self, image_id: str) -> None:
        with self._lock:
            entry = self._entries.pop(image_id, None)
        if entry is not None:
            Path(entry.path).unlink(missing_ok=True)

    def close(self) -> None:
        pass


def open_gallery(db_path: Path, images_dir: Path) -> Gallery | FilesOnlyGallery:
    """The gallery, or, when its database cannot be used, a :class:`FilesOnlyGallery` that says why."""
    try:
        return Gallery(db_path, images_dir)
    except (sqlite3.Error, OSError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        return FilesOnlyGallery(images_dir, f"the gallery's index ({db_path}) cannot be used: {detail}")


def _write(images_dir: Path, png: bytes, request: dict, seed: int, width: int, height: int, model: str,
           backend: str) -> GalleryImage:
    """Write the PNG (the part that must never be lost) and describe it as a gallery entry."""
    image_id = uuid.uuid4().hex[:12]
    now = time.time()
    path = write_image_file(images_dir, png, seed, image_id, now)
    record = dict(request, seed=seed)
    return GalleryImage(
        image_id, str(path), now, request.get("prompt", ""), request.get("negative_prompt", ""), seed, width, height,
        int(request.get("steps", 0)), float(request.get("guidance", 0)), request.get("scheduler", ""), model, backend,
        record,
    )


def _entry(row) -> GalleryImage:
    *head, request_json = row
    return GalleryImage(*head, json.loads(request_json))
