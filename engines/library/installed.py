"""The installed-model store: what is on disk, where, and where it came from.

Kept apart from the catalog (what a model *is*) and from the user's
per-model preferences (how to run it). One JSON file, ``models.json``,
shared by every Atelier process on the profile (the GUI, CLI commands),
kept by :class:`engines.storage.named_records.NamedRecords` like every
state file of named records (here named by ``id``, listed in the order they
came in):

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

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.errors import EngineError, ErrorKind
from engines.storage.named_records import NamedRecords, RecordsFormat

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


def _refused(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


class InstalledModels(NamedRecords[InstalledModel]):
    """The models in ``models.json``; every change is a locked read-modify-write."""

    format = RecordsFormat("models.json", WHAT, "models", ModelRecord, lambda known: InstalledModel(**known),
                           _refused, VERSION, list_key="models", key="id", item="model", sort_by_key=False)

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
        """Record ``model``, in place of the one with its id if there is one (a model imported again)."""
        if not model.added_at:
            model = replace(model, added_at=time.time())
        return self._put(model)

    def unique_id(self, prefix: str, stem: str) -> str:
        base = f"{prefix}/{re.sub(r'[^A-Za-z0-9._-]+', '-', stem).strip('-').lower() or 'model'}"
        existing = {m.id for m in self.all()}
        candidate, n = base, 2
        while candidate in existing:
            candidate, n = f"{base}-{n}", n + 1
        return candidate
