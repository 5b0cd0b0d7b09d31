"""The remote servers the user added: ``remotes.json`` beside ``models.json``.

Each record names a server (``box``), its API base URL, where its key is
(never the key itself: see :mod:`engines.remote.keys`), how long to wait
for it, and the models it listed when last asked, so the pickers can show
``box/MODEL`` without a connection at start-up. The file is shared by the
GUI and CLI commands on one profile, so it follows the rules of every
state file: read through :func:`engines.storage.read_state` (a damaged file
is set aside, never read as empty and overwritten), changed under
:func:`engines.storage.state_lock` with an atomic replace, records
validated one by one, and fields from a newer Atelier kept.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engines.errors import EngineError, ErrorKind
from engines.remote.spec import DEFAULT_READ_TIMEOUT_S, RemoteSpec
from engines.storage import atomic_write_text, file_version, read_state, split_valid, state_lock

FILE_NAME = "remotes.json"
VERSION = 1
WHAT = "The list of remote servers"
# The prefixes of installed models' ids ("local/qwen", "demo/gemma..."): a server of that name would shadow them.
RESERVED_NAMES = frozenset({"local", "folder", "download", "demo", "remote"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


@dataclass(frozen=True)
class RemoteServer:
    name: str
    base_url: str
    api_key_env: str | None = None
    key_in_keyring: bool = False
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    models: tuple[str, ...] = ()  # as the server listed them when last asked
    added_at: float = 0.0
    checked_at: float = 0.0  # when ``models`` last changed

    def spec(self, model: str) -> RemoteSpec:
        return RemoteSpec(self.name, self.base_url, model, self.api_key_env, self.key_in_keyring, self.read_timeout_s)

    @property
    def key_words(self) -> str:
        """Where the key comes from, for lists: never the key."""
        if self.api_key_env:
            return f"key from ${self.api_key_env}"
        return "key in the system keyring" if self.key_in_keyring else "no key"


class _Record(BaseModel):
    """One record of remotes.json; strict, so a wrong type is refused with its reason, not coerced."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str = Field(pattern=_NAME.pattern)
    base_url: str = Field(min_length=8)
    api_key_env: str | None = None
    key_in_keyring: bool = False
    read_timeout_s: float = Field(DEFAULT_READ_TIMEOUT_S, gt=0, le=86_400)
    models: list[str] = Field(default_factory=list)
    added_at: float = 0.0
    checked_at: float = 0.0


def check_name(name: str) -> str:
    """``name`` if it can name a server; EngineError BAD_INPUT saying why not."""
    if not _NAME.match(name or ""):
        raise EngineError(ErrorKind.BAD_INPUT, f"'{name}' cannot name a remote server: use 1 to 32 lower-case letters, "
                          "digits, '.', '_' or '-', starting with a letter or digit (e.g. box).")
    if name in RESERVED_NAMES:
        raise EngineError(ErrorKind.BAD_INPUT, f"'{name}' is taken by Atelier's own model ids ({name}/…): choose "
                          "another name for the server.")
    return name


@dataclass
class _Snapshot:
    records: dict[str, RemoteServer]
    extras: dict[str, dict]  # per server: fields this version does not know
    invalid: list = field(default_factory=list)  # records that failed validation, kept verbatim
    top: dict = field(default_factory=dict)
    writable: bool = True


class RemoteServers:
    """The servers in ``remotes.json``; every change is a locked read-modify-write."""

    def __init__(self, file: str | Path) -> None:
        self._file = Path(file)
        self._lock = threading.Lock()
        self.problem: str | None = None  # what was wrong with the file when last read

    @classmethod
    def beside(cls, models_file: str | Path) -> "RemoteServers":
        """The servers of the profile whose model list is ``models_file`` (both live in the data folder)."""
        return cls(Path(models_file).with_name(FILE_NAME))

    @property
    def file(self) -> Path:
        return self._file

    def all(self) -> list[RemoteServer]:
        with self._lock:
            return sorted(self._read().records.values(), key=lambda s: s.name)

    def get(self, name: str) -> RemoteServer | None:
        with self._lock:
            return self._read().records.get(name)

    def add(self, server: RemoteServer) -> RemoteServer:
        """Record a new server; EngineError BAD_INPUT if the name is taken."""
        check_name(server.name)
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            if server.name in snapshot.records:
                raise EngineError(ErrorKind.BAD_INPUT, f"A remote server called '{server.name}' exists already "
                                  f"({snapshot.records[server.name].base_url}). Remove it first, or choose another name.")
            server = replace(server, added_at=server.added_at or time.time())
            snapshot.records[server.name] = server
            self._write(snapshot)
            return server

    def remove(self, name: str) -> RemoteServer | None:
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            removed = snapshot.records.pop(name, None)
            if removed is not None:
                snapshot.extras.pop(name, None)
                self._write(snapshot)
            return removed

    def set_models(self, name: str, models: list[str] | tuple[str, ...]) -> RemoteServer | None:
        """Remember what the server lists now; None when it was removed meanwhile."""
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            server = snapshot.records.get(name)
            if server is None:
                return None
            if tuple(models) == server.models:  # nothing new: no write (a chat asks at every load)
                return server
            server = replace(server, models=tuple(models), checked_at=time.time())
            snapshot.records[name] = server
            self._write(snapshot)
            return server

    # ---- the file --------------------------------------------------------

    def _read(self) -> _Snapshot:
        state = read_state(self._file, WHAT, _check_shape)
        items = state.data.get("servers", [])
        valid, invalid, reasons = split_valid(items, _Record, "server")
        problems = [state.problem] if state.problem else []
        if reasons:
            problems.append(f"{len(reasons)} of the remote servers in {self._file.name} could not be read and "
                            f"{'was' if len(reasons) == 1 else 'were'} left as written: {'; '.join(reasons[:3])}.")
        self.problem = " ".join(problems) or None
        records, extras = {}, {}
        for record in valid:
            known = record.model_dump(include=set(_FIELDS))
            known["models"] = tuple(known["models"])
            records[record.name] = RemoteServer(**known)
            extras[record.name] = dict(record.model_extra or {})
        top = {key: value for key, value in state.data.items() if key != "servers"}
        return _Snapshot(records, extras, invalid, top, state.writable)

    def _write(self, snapshot: _Snapshot) -> None:
        if not snapshot.writable:
            raise EngineError(ErrorKind.BAD_INPUT, self.problem or f"{self._file} cannot be changed.")
        servers = [{**snapshot.extras.get(s.name, {}), **asdict(s), "models": list(s.models)}
                   for s in snapshot.records.values()]
        payload = {**snapshot.top, "version": max(VERSION, file_version(snapshot.top)),
                   "servers": servers + snapshot.invalid}
        atomic_write_text(self._file, json.dumps(payload, indent=2, ensure_ascii=False))


_FIELDS = tuple(f.name for f in fields(RemoteServer))


def _check_shape(data: dict) -> None:
    if not isinstance(data.get("servers", []), list):
        raise ValueError(f'its "servers" is {type(data["servers"]).__name__}, not a list')
