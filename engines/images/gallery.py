"""The gallery: generated PNGs on disk, indexed in the app's SQLite database.

Every finished image is written to ``<data>/images/<yyyy-mm-dd>/`` the
moment it arrives from the engine, before anything else runs, and then
indexed. The PNG itself carries its parameters (see
``engines.diffusion.png_meta``), so "use these settings again" works even
for a file whose index row was lost. The gallery keeps its own schema
version in a table of its own, beside the chat tables in the same file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

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


class Gallery:
    def __init__(self, db_path: Path, images_dir: Path) -> None:
        self._images = Path(images_dir)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        with self._db:
            for statement in SCHEMA:
                self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save(self, png: bytes, request: dict, *, seed: int, width: int, height: int, model: str, backend: str) -> GalleryImage:
        """Write the PNG (fsynced, atomic) and index it; returns the new entry."""
        image_id = uuid.uuid4().hex[:12]
        now = time.time()
        folder = self._images / time.strftime("%Y-%m-%d", time.localtime(now))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%H%M%S', time.localtime(now))}-{seed}-{image_id}.png"
        tmp = path.with_suffix(".png.tmp")
        with open(tmp, "wb") as handle:
            handle.write(png)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        record = dict(request, seed=seed)
        entry = GalleryImage(
            image_id, str(path), now, request.get("prompt", ""), request.get("negative_prompt", ""), seed, width, height,
            int(request.get("steps", 0)), float(request.get("guidance", 0)), request.get("scheduler", ""), model, backend, record,
        )
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO gallery_images VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (entry.id, entry.path, entry.created_at, entry.prompt, entry.negative_prompt, seed, width, height,
                 entry.steps, entry.guidance, entry.scheduler, model, backend, json.dumps(record)),
            )
        return entry

    def list(self, limit: int = 500) -> list[GalleryImage]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM gallery_images ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [_entry(row) for row in rows]

    def get(self, image_id: str) -> GalleryImage | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM gallery_images WHERE id = ?", (image_id,)).fetchone()
        return _entry(row) if row else None

    def delete(self, image_id: str) -> None:
        entry = self.get(image_id)
        if entry is None:
            return
        Path(entry.path).unlink(missing_ok=True)
        with self._lock, self._db:
            self._db.execute("DELETE FROM gallery_images WHERE id = ?", (image_id,))


def _entry(row) -> GalleryImage:
    *head, request_json = row
    return GalleryImage(*head, json.loads(request_json))
