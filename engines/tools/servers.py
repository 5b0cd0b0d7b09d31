"""The MCP servers the user added: ``mcp-servers.json`` beside ``models.json``.

Each record names a server (``time``), how to reach it (a command to run
with its stdio, or a streamable-HTTP URL), whether it is enabled (a
disabled server is never started), how long one call may take, which of
its environment variables are secrets (their values live in the system
keyring, never here: see :mod:`engines.tools.secrets`), and the tools it
listed when last asked, so pickers show them without starting it.

The file is shared by the GUI and CLI commands on one profile, so it
follows the rules of every state file: read through
:func:`engines.storage.read_state` (a damaged file is set aside, never
read as empty and overwritten), changed under
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
from engines.storage import atomic_write_text, file_version, read_state, split_valid, state_lock

FILE_NAME = "mcp-servers.json"
VERSION = 1
WHAT = "The list of tool (MCP) servers"
DEFAULT_CALL_TIMEOUT_S = 60.0  # one tool call; a server that takes longer is told to stop and the chat goes on
BUILTIN_SERVER = "atelier"  # Atelier's own engines offered as tools (engines.tools.builtin)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


@dataclass(frozen=True)
class ListedTool:
    """A tool as its server listed it: the name the model calls, what it does, its arguments' JSON schema."""

    name: str
    description: str = ""
    input_schema: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ToolServer:
    name: str
    command: tuple[str, ...] = ()  # a program and its arguments, run with its stdin/stdout as the MCP channel
    url: str | None = None  # or a streamable-HTTP endpoint
    enabled: bool = True
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    secret_env: tuple[str, ...] = ()  # environment variables whose values are in the keyring
    tools: tuple[ListedTool, ...] = ()  # as the server listed them when last asked
    added_at: float = 0.0
    checked_at: float = 0.0  # when ``tools`` last changed

    @property
    def where(self) -> str:
        """How it is reached, for lists."""
        return self.url if self.url else " ".join(self.command)


class _ToolRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    input_schema: dict = Field(default_factory=dict)


class _Record(BaseModel):
    """One record of mcp-servers.json; strict, so a wrong type is refused with its reason, not coerced."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str = Field(pattern=_NAME.pattern)
    command: list[str] = Field(default_factory=list)
    url: str | None = None
    enabled: bool = True
    timeout_s: float = Field(DEFAULT_CALL_TIMEOUT_S, gt=0, le=86_400)
    secret_env: list[str] = Field(default_factory=list)
    tools: list[_ToolRecord] = Field(default_factory=list)
    added_at: float = 0.0
    checked_at: float = 0.0


def check_name(name: str) -> str:
    """``name`` if it can name a tool server; EngineError BAD_INPUT saying why not."""
    if not _NAME.match(name or ""):
        raise EngineError(ErrorKind.BAD_INPUT, f"'{name}' cannot name a tool server: use 1 to 32 lower-case letters, "
                          "digits, '.', '_' or '-', starting with a letter or digit (e.g. time).")
    if name == BUILTIN_SERVER:
        raise EngineError(ErrorKind.BAD_INPUT, f"'{BUILTIN_SERVER}' is the name of Atelier's own tools: choose another "
                          "name for the server.")
    return name


@dataclass
class _Snapshot:
    records: dict[str, ToolServer]
    extras: dict[str, dict]  # per server: fields this version does not know
    invalid: list = field(default_factory=list)  # records that failed validation, kept verbatim
    top: dict = field(default_factory=dict)
    writable: bool = True


class ToolServers:
    """The servers in ``mcp-servers.json``; every change is a locked read-modify-write."""

    def __init__(self, file: str | Path) -> None:
        self._file = Path(file)
        self._lock = threading.Lock()
        self.problem: str | None = None  # what was wrong with the file when last read

    @classmethod
    def beside(cls, models_file: str | Path) -> "ToolServers":
        """The servers of the profile whose model list is ``models_file`` (both live in the data folder)."""
        return cls(Path(models_file).with_name(FILE_NAME))

    @property
    def file(self) -> Path:
        return self._file

    def all(self) -> list[ToolServer]:
        with self._lock:
            return sorted(self._read().records.values(), key=lambda s: s.name)

    def get(self, name: str) -> ToolServer | None:
        with self._lock:
            return self._read().records.get(name)

    def require(self, name: str) -> ToolServer:
        """The server ``name``; EngineError NOT_FOUND naming the ones there are."""
        server = self.get(name)
        if server is None:
            names = ", ".join(s.name for s in self.all()) or "none yet"
            raise EngineError(ErrorKind.NOT_FOUND, f"There is no tool server called '{name}' (added: {names}). "
                              "Add one with 'atelier tools add NAME -- COMMAND' or 'atelier tools add NAME --url URL'.")
        return server

    def add(self, server: ToolServer) -> ToolServer:
        """Record a new server; EngineError BAD_INPUT if the name is taken."""
        check_name(server.name)
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            if server.name in snapshot.records:
                raise EngineError(ErrorKind.BAD_INPUT, f"A tool server called '{server.name}' exists already "
                                  f"({snapshot.records[server.name].where}). Remove it first, or choose another name.")
            server = replace(server, added_at=server.added_at or time.time())
            snapshot.records[server.name] = server
            self._write(snapshot)
            return server

    def remove(self, name: str) -> ToolServer | None:
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            removed = snapshot.records.pop(name, None)
            if removed is not None:
                snapshot.extras.pop(name, None)
                self._write(snapshot)
            return removed

    def set_enabled(self, name: str, enabled: bool) -> ToolServer | None:
        return self._change(name, lambda s: replace(s, enabled=enabled))

    def set_tools(self, name: str, tools: list[ListedTool] | tuple[ListedTool, ...]) -> ToolServer | None:
        """Remember what the server lists now; None when it was removed meanwhile. No write when nothing changed."""
        tools = tuple(tools)
        return self._change(name, lambda s: s if s.tools == tools else replace(s, tools=tools, checked_at=time.time()))

    def _change(self, name: str, change) -> ToolServer | None:
        with self._lock, state_lock(self._file):
            snapshot = self._read()
            server = snapshot.records.get(name)
            if server is None:
                return None
            changed = change(server)
            if changed != server:
                snapshot.records[name] = changed
                self._write(snapshot)
            return changed

    # ---- the file --------------------------------------------------------

    def _read(self) -> _Snapshot:
        state = read_state(self._file, WHAT, _check_shape)
        valid, invalid, reasons = split_valid(state.data.get("servers", []), _Record, "server")
        problems = [state.problem] if state.problem else []
        if reasons:
            problems.append(f"{len(reasons)} of the tool servers in {self._file.name} could not be read and "
                            f"{'was' if len(reasons) == 1 else 'were'} left as written: {'; '.join(reasons[:3])}.")
        self.problem = " ".join(problems) or None
        records, extras = {}, {}
        for record in valid:
            known = record.model_dump(include=set(_FIELDS))
            known["command"] = tuple(known["command"])
            known["secret_env"] = tuple(known["secret_env"])
            known["tools"] = tuple(ListedTool(t["name"], t["description"], t["input_schema"]) for t in known["tools"])
            records[record.name] = ToolServer(**known)
            extras[record.name] = dict(record.model_extra or {})
        top = {key: value for key, value in state.data.items() if key != "servers"}
        return _Snapshot(records, extras, invalid, top, state.writable)

    def _write(self, snapshot: _Snapshot) -> None:
        if not snapshot.writable:
            raise EngineError(ErrorKind.BAD_INPUT, self.problem or f"{self._file} cannot be changed.")
        servers = [{**snapshot.extras.get(s.name, {}), **_as_json(s)} for s in snapshot.records.values()]
        payload = {**snapshot.top, "version": max(VERSION, file_version(snapshot.top)),
                   "servers": servers + snapshot.invalid}
        atomic_write_text(self._file, json.dumps(payload, indent=2, ensure_ascii=False))


_FIELDS = tuple(f.name for f in fields(ToolServer))


def _as_json(server: ToolServer) -> dict:
    data = asdict(server)
    data["command"] = list(server.command)
    data["secret_env"] = list(server.secret_env)
    data["tools"] = [asdict(t) for t in server.tools]
    return data


def _check_shape(data: dict) -> None:
    if not isinstance(data.get("servers", []), list):
        raise ValueError(f'its "servers" is {type(data["servers"]).__name__}, not a list')
