"""The MCP servers the user added: ``mcp-servers.json`` beside ``models.json``.

Each record names a server (``time``), how to reach it (a command to run
with its stdio, or a streamable-HTTP URL), whether it is enabled (a
disabled server is never started), how long one call may take, which of
its environment variables are secrets (their values live in the system
keyring, never here: see :mod:`engines.tools.secrets`), and the tools it
listed when last asked, so pickers show them without starting it.

The file is shared by the GUI and CLI commands on one profile, so it
follows the rules of every state file, kept by
:class:`engines.storage.named_records.NamedRecords` as for the remote
servers: a damaged file is set aside, never read as empty and
overwritten; changes are locked and atomic; records are validated one by
one; fields from a newer Atelier are kept.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, Field

from engines.errors import EngineError, ErrorKind
from engines.storage.named_records import NamedRecords, RecordsFormat, as_tuples

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


def _server(known: dict) -> ToolServer:
    tools = tuple(ListedTool(t["name"], t["description"], t["input_schema"]) for t in known["tools"])
    return ToolServer(**{**as_tuples(known, "command", "secret_env"), "tools": tools})


def _refused(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


class ToolServers(NamedRecords[ToolServer]):
    """The servers in ``mcp-servers.json``; every change is a locked read-modify-write."""

    format = RecordsFormat(FILE_NAME, WHAT, "tool servers", _Record, _server, _refused, VERSION)

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
        return self._insert(replace(server, added_at=server.added_at or time.time()),
                            lambda there: f"A tool server called '{server.name}' exists already ({there.where}). "
                                          "Remove it first, or choose another name.")

    def set_enabled(self, name: str, enabled: bool) -> ToolServer | None:
        return self._update(name, lambda s: replace(s, enabled=enabled))

    def set_tools(self, name: str, tools: list[ListedTool] | tuple[ListedTool, ...]) -> ToolServer | None:
        """Remember what the server lists now; None when it was removed meanwhile. No write when nothing changed."""
        tools = tuple(tools)
        return self._update(name, lambda s: s if s.tools == tools else replace(s, tools=tools, checked_at=time.time()))
