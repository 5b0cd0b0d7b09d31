"""The installed-model store: what is on disk, where, and where it came from.

Kept apart from the catalog (what a model *is*) and from the user's
per-model preferences (how to run it). One JSON file, ``models.json``,
shared by every Atelier process on the profile (the GUI, CLI commands):

- every change is a read-modify-write under the file's ``state_lock`` and
  an atomic, fsynced replace, so two processes adding models at once
  keep both (defect D15);
- a file that is not a readable JSON object is set aside as
  ``models.unreadable-<time>.json`` and :attr:`InstalledModels.problem`
  says so, instead of being read as empty and overwritten (defect D3);
- each record is validated on its own: an invalid one is skipped with a
  logged reason and written back untouched, never dropped with the rest;
- fields and a ``version`` from a newer Atelier are kept on every write.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.errors import EngineError, ErrorKind
from engines.storage import atomic_write_text, file_version, read_state, split_valid, state_lock

log = logging.getLogger(__name__)

Source = Literal["demo", "import", "download", "folder"]
VERSION = 1
WHAT = "The model list"
_KIND_OF_FORMAT = {"gguf": "chat", "diffusers": "image", "onnx": "image"}


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
    kind: str = ""  # "chat", "embedding", "image" (the probe registry's kinds); derived from format when empty
    base: str | None = None  # the family: "sd1", "sdxl", "llama"...

    def __post_init__(self) -> None:
        if not self.kind:  # records written before kinds existed
            object.__setattr__(self, "kind", _KIND_OF_FORMAT.get(self.format, "unknown"))

    @property
    def exists(self) -> bool:
        return Path(self.path).exists()


class ModelRecord(BaseModel):
    """The schema of one record in models.json; strict, so ``"size_bytes": "big"`` is refused, not coerced."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str = Field(min_length=1)
    name: str
    path: str = Field(min_length=1)
    size_bytes: int = Field(ge=0)
    engine: str  # empty for what no engine runs
    format: str = Field(min_length=1)
    source: Source
    sha256: str | None = None
    description: str = ""
    added_at: float = 0.0
    kind: str = ""
    base: str | None = None


_FIELDS = tuple(f.name for f in fields(InstalledModel))


@dataclass
class _Snapshot:
    """models.json as read: the records, and everything in it this version must write back as it was."""

    records: dict[str, InstalledModel]
    extras: dict[str, dict]  # per record id: fields this version does not know
    invalid: list  # records that failed validation, kept verbatim
    top: dict  # the file's other top-level keys (and its version)
    writable: bool = True


class InstalledModels:
    def __init__(self, file: Path) -> None:
        self._file = Path(file)
        self._lock = threading.Lock()
        self._set_aside: str | None = None  # sticky: the user must hear about it once at least
        self._invalid: str | None = None
        self._logged: set[str] = set()

    @property
    def file(self) -> Path:
        return self._file

    @property
    def problem(self) -> str | None:
        """What is wrong with models.json, for the GUI and the CLI to show; None when all is well."""
        parts = [p for p in (self._set_aside, self._invalid) if p]
        return " ".join(parts) or None

    def all(self) -> list[InstalledModel]:
        with self._lock:
            return list(self._read().records.values())

    def get(self, model_id: str) -> InstalledModel | None:
        with self._lock:
            return self._read().records.get(model_id)

    def find_by_path(self, path: str | Path) -> InstalledModel | None:
        """The record for this file or folder, however the path is spelled (links resolved; loops tolerated)."""
        from engines.library.probes.files import real_path

        target = real_path(path)
        return next((m for m in self.all() if real_path(m.path) == target), None)

    def runnable(self, kind: str) -> list[InstalledModel]:
        """The models a picker for ``kind`` offers: "chat" for the chat page, "image" for the Images page.

        The chat picker once listed image folders, which llama.cpp then refused;
        each picker asks for its own kind.
        """
        return [m for m in self.all() if m.kind == kind and m.engine]

    def add(self, model: InstalledModel) -> InstalledModel:
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            if not model.added_at:
                model = replace(model, added_at=time.time())
            snapshot.records[model.id] = model
            self._write(snapshot)
            return model

    def remove(self, model_id: str) -> InstalledModel | None:
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            removed = snapshot.records.pop(model_id, None)
            if removed is not None:
                self._write(snapshot)
            return removed

    def unique_id(self, prefix: str, stem: str) -> str:
        base = f"{prefix}/{re.sub(r'[^A-Za-z0-9._-]+', '-', stem).strip('-').lower() or 'model'}"
        existing = {m.id for m in self.all()}
        candidate, n = base, 2
        while candidate in existing:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    # -- the file ---------------------------------------------------------------

    def _read(self) -> _Snapshot:
        state = read_state(self._file, WHAT, _check_shape)
        if state.problem:
            self._set_aside = state.problem
        data = state.data
        items = data.get("models", [])
        valid, invalid, reasons = split_valid(items, ModelRecord, "record")
        self._invalid = None
        if reasons:
            self._invalid = (
                f"{len(reasons)} {'record' if len(reasons) == 1 else 'records'} in {self._file.name} could not be "
                f"read and {'was' if len(reasons) == 1 else 'were'} left in the file as {'it is' if len(reasons) == 1 else 'they are'}: {'; '.join(reasons[:3])}{' …' if len(reasons) > 3 else ''}."
            )
            for reason in reasons:
                if reason not in self._logged:
                    self._logged.add(reason)
                    log.info("%s: skipping an invalid record: %s", self._file, reason)
        records, extras = {}, {}
        for record in valid:
            known = record.model_dump(include=set(_FIELDS))
            records[record.id] = InstalledModel(**known)
            extras[record.id] = dict(record.model_extra or {})
        top = {key: value for key, value in data.items() if key != "models"}
        return _Snapshot(records, extras, invalid, top, state.writable)

    def _write(self, snapshot: _Snapshot) -> None:
        if not snapshot.writable:
            raise EngineError(ErrorKind.BAD_INPUT, self._set_aside or f"{self._file} cannot be changed.")
        models = [{**snapshot.extras.get(m.id, {}), **asdict(m)} for m in snapshot.records.values()]
        payload = {**snapshot.top, "version": max(VERSION, file_version(snapshot.top)), "models": models + snapshot.invalid}
        atomic_write_text(self._file, json.dumps(payload, indent=2, ensure_ascii=False))


def _check_shape(data: dict) -> None:
    """A models.json whose ``models`` is not a list cannot be read record by record: set it aside."""
    if not isinstance(data.get("models", []), list):
        raise ValueError(f'its "models" is {type(data["models"]).__name__}, not a list')
