"""A state file that holds a list of named records (the models, the MCP servers, the remote servers), kept one way.

Such a file is shared by the GUI and the CLI commands on one profile, so
it follows the rules of every state file, here once for all of them:

- read through :func:`engines.storage.read_state`: a damaged file is set
  aside, never read as empty and overwritten (and while it cannot be set
  aside, nothing is written over it); :attr:`NamedRecords.problem` keeps
  saying so after later reads, so the GUI or the CLI shows it at least once;
- records validated one by one (:func:`engines.storage.split_valid`): a bad
  record is reported with its reason (and logged once) and written back as
  it was, never dropped with its neighbours;
- fields and top-level keys from a newer Atelier kept, and the file's
  version never lowered;
- every change a read-modify-write under :func:`engines.storage.state_lock`
  (other processes) and a thread lock (this one), written atomically, and
  not written at all when nothing changed.

A kind of record is a subclass that sets :attr:`NamedRecords.format` and
adds its own changes (with its own messages) on :meth:`NamedRecords._insert`,
:meth:`NamedRecords._put` and :meth:`NamedRecords._update`. Records are
frozen dataclasses named by one field (``name`` for servers, ``id`` for
models); the file is ``{"version": N, "<list key>": [...]}``
(``"servers"``, ``"models"``).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Self, TypeVar

from engines.storage.atomic import atomic_write_text
from engines.storage.lock import state_lock
from engines.storage.state_file import file_version, read_state, split_valid

if TYPE_CHECKING:  # pydantic only where records are validated: the image-engine Python has none
    from pydantic import BaseModel

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class RecordsFormat(Generic[R]):
    """What one kind of named-records file is: its name, its words for messages, how a record is read."""

    file_name: str  # "remotes.json", beside models.json
    what: str  # the file for a person: "The list of remote servers"
    noun: str  # its records, plural: "remote servers" (in "2 of the remote servers in remotes.json ...")
    model: type[BaseModel]  # validates one record: strict, extra="allow" (unknown fields are kept)
    build: Callable[[dict], R]  # the record from its known fields, as validated (JSON lists, not tuples)
    # How a refusal is raised: the owner's EngineError(BAD_INPUT, message), as storage knows no error kinds.
    refuse: Callable[[str], Exception]
    version: int = 1
    list_key: str = "servers"  # the top-level key of the list
    key: str = "name"  # the field that names a record (unique in the file)
    item: str = "server"  # one record in a reason: "server #2: it is a number, not an object"
    sort_by_key: bool = True  # all() in key order; False: in the file's order (models: the order they came in)


@dataclass
class _Snapshot(Generic[R]):
    records: dict[str, R]
    extras: dict[str, dict]  # per record: fields this version does not know
    invalid: list = field(default_factory=list)  # records that failed validation, kept verbatim
    top: dict = field(default_factory=dict)
    writable: bool = True


class NamedRecords(Generic[R]):
    """The records of one file; every change is a locked read-modify-write (see the module docstring)."""

    format: ClassVar[RecordsFormat]

    def __init__(self, file: str | Path) -> None:
        self._file = Path(file)
        self._lock = threading.Lock()
        self._set_aside: str | None = None  # sticky: the user must hear about it once at least
        self._invalid: str | None = None  # the records the last read could not use
        self._logged: set[str] = set()  # reasons logged already (the file is read at every call)

    @classmethod
    def beside(cls, models_file: str | Path) -> Self:
        """The records of the profile whose model list is ``models_file`` (both live in the data folder)."""
        return cls(Path(models_file).with_name(cls.format.file_name))

    @property
    def file(self) -> Path:
        return self._file

    @property
    def problem(self) -> str | None:
        """What is wrong with the file, for the GUI and the CLI to show; None when all is well."""
        return " ".join(part for part in (self._set_aside, self._invalid) if part) or None

    def all(self) -> list[R]:
        with self._lock:
            records = list(self._read().records.values())
        if self.format.sort_by_key:
            records.sort(key=self._key)
        return records

    def get(self, name: str) -> R | None:
        with self._lock:
            return self._read().records.get(name)

    def remove(self, name: str) -> R | None:
        """Forget the record ``name``; the removed record, or None when there was none."""
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            removed = snapshot.records.pop(name, None)
            if removed is not None:
                snapshot.extras.pop(name, None)
                self._write(snapshot)
            return removed

    def _insert(self, record: R, taken: Callable[[R], str]) -> R:
        """Store a new record; refused with ``taken(the record there)`` if its name is taken."""
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            existing = snapshot.records.get(self._key(record))
            if existing is not None:
                raise self.format.refuse(taken(existing))
            snapshot.records[self._key(record)] = record
            self._write(snapshot)
            return record

    def _put(self, record: R) -> R:
        """Store ``record`` in place of the one with its name, if any (keeping its unknown fields); no write if same."""
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            if snapshot.records.get(self._key(record)) != record:
                snapshot.records[self._key(record)] = record
                self._write(snapshot)
            return record

    def _update(self, name: str, change: Callable[[R], R]) -> R | None:
        """``change`` applied to the record ``name`` and stored (written only if it differs); None if there is none."""
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            record = snapshot.records.get(name)
            if record is None:
                return None
            changed = change(record)
            if changed != record:
                snapshot.records[name] = changed
                self._write(snapshot)
            return changed

    # ---- the file --------------------------------------------------------

    def _key(self, record: R) -> str:
        return getattr(record, self.format.key)

    def _read(self) -> _Snapshot[R]:
        form = self.format
        state = read_state(self._file, form.what, lambda data: _check_shape(data, form.list_key))
        if state.problem:
            self._set_aside = state.problem
        valid, invalid, reasons = split_valid(state.data.get(form.list_key, []), form.model, form.item)
        self._invalid = None
        if reasons:
            self._invalid = (f"{len(reasons)} of the {form.noun} in {self._file.name} could not be read and "
                             f"{'was' if len(reasons) == 1 else 'were'} left as written: {'; '.join(reasons[:3])}"
                             f"{' …' if len(reasons) > 3 else ''}.")
            for reason in reasons:
                if reason not in self._logged:
                    self._logged.add(reason)
                    log.info("%s: skipping an invalid record: %s", self._file, reason)
        known_fields = set(form.model.model_fields)
        records, extras = {}, {}
        for item in valid:
            record = form.build(item.model_dump(include=known_fields))
            records[self._key(record)] = record
            extras[self._key(record)] = dict(item.model_extra or {})
        top = {key: value for key, value in state.data.items() if key != form.list_key}
        return _Snapshot(records, extras, invalid, top, state.writable)

    def _write(self, snapshot: _Snapshot[R]) -> None:
        if not snapshot.writable:
            raise self.format.refuse(self._set_aside or f"{self._file} cannot be changed.")
        items = [{**snapshot.extras.get(key, {}), **asdict(record)} for key, record in snapshot.records.items()]
        payload = {**snapshot.top, "version": max(self.format.version, file_version(snapshot.top)),
                   self.format.list_key: items + snapshot.invalid}
        atomic_write_text(self._file, json.dumps(payload, indent=2, ensure_ascii=False))


def _check_shape(data: dict, list_key: str) -> None:
    """A file whose list is not a list cannot be read record by record: read_state sets it aside."""
    if not isinstance(data.get(list_key, []), list):
        raise ValueError(f'its "{list_key}" is {type(data[list_key]).__name__}, not a list')


def as_tuples(known: dict, *names: str) -> dict[str, Any]:
    """``known`` with the named JSON lists as tuples (records are frozen, so their sequences are tuples)."""
    return {**known, **{name: tuple(known[name]) for name in names}}
