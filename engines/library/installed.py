"""The installed-model store: what is on disk, where, and where it came from.

Kept apart from the catalog (what a model *is*) and from the user's
per-model preferences (how to run it). One JSON file, written atomically.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

Source = Literal["demo", "import", "download", "folder"]


@dataclass(frozen=True)
class InstalledModel:
    id: str
    name: str
    path: str
    size_bytes: int
    engine: str  # registry name, e.g. "llama_cpp"
    format: str  # "gguf", "diffusers", "onnx"
    source: Source
    sha256: str | None = None
    description: str = ""
    added_at: float = 0.0

    @property
    def exists(self) -> bool:
        return Path(self.path).exists()


class InstalledModels:
    def __init__(self, file: Path) -> None:
        self._file = file
        self._lock = threading.Lock()

    def all(self) -> list[InstalledModel]:
        with self._lock:
            return list(self._read().values())

    def get(self, model_id: str) -> InstalledModel | None:
        with self._lock:
            return self._read().get(model_id)

    def find_by_path(self, path: str | Path) -> InstalledModel | None:
        target = str(Path(path).resolve())
        return next((m for m in self.all() if str(Path(m.path).resolve()) == target), None)

    def add(self, model: InstalledModel) -> InstalledModel:
        with self._lock:
            records = self._read()
            if not model.added_at:
                model = replace(model, added_at=time.time())
            records[model.id] = model
            self._write(records)
            return model

    def remove(self, model_id: str) -> InstalledModel | None:
        with self._lock:
            records = self._read()
            removed = records.pop(model_id, None)
            self._write(records)
            return removed

    def unique_id(self, prefix: str, stem: str) -> str:
        base = f"{prefix}/{re.sub(r'[^A-Za-z0-9._-]+', '-', stem).strip('-').lower() or 'model'}"
        existing = {m.id for m in self.all()}
        candidate, n = base, 2
        while candidate in existing:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    def _read(self) -> dict[str, InstalledModel]:
        try:
            raw = json.loads(self._file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        records = {}
        for item in raw.get("models", []):
            try:
                model = InstalledModel(**item)
            except TypeError:
                continue
            records[model.id] = model
        return records

    def _write(self, records: dict[str, InstalledModel]) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_name(self._file.name + ".tmp")
        payload = {"version": 1, "models": [asdict(m) for m in records.values()]}
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(tmp, self._file)
