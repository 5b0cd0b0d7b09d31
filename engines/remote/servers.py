"""The remote servers the user added: ``remotes.json`` beside ``models.json``.

Each record names a server (``box``), its API base URL, where its key is
(never the key itself: see :mod:`engines.remote.keys`), how long to wait
for it, and the models it listed when last asked, so the pickers can show
``box/MODEL`` without a connection at start-up. The file is shared by the
GUI and CLI commands on one profile, so it follows the rules of every
state file, kept by :class:`engines.storage.named_records.NamedRecords` as
for the MCP servers: a damaged file is set aside, never read as empty and
overwritten; changes are locked and atomic; records are validated one by
one; fields from a newer Atelier are kept.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field

from engines.errors import EngineError, ErrorKind
from engines.remote.spec import DEFAULT_READ_TIMEOUT_S, RemoteSpec
from engines.storage.named_records import NamedRecords, RecordsFormat, as_tuples

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


def _refused(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


class RemoteServers(NamedRecords[RemoteServer]):
    """The servers in ``remotes.json``; every change is a locked read-modify-write."""

    format = RecordsFormat(FILE_NAME, WHAT, "remote servers", _Record,
                           lambda known: RemoteServer(**as_tuples(known, "models")), _refused, VERSION)

    def add(self, server: RemoteServer) -> RemoteServer:
        """Record a new server; EngineError BAD_INPUT if the name is taken."""
        check_name(server.name)
        return self._insert(replace(server, added_at=server.added_at or time.time()),
                            lambda there: f"A remote server called '{server.name}' exists already "
                                          f"({there.base_url}). Remove it first, or choose another name.")

    def set_models(self, name: str, models: list[str] | tuple[str, ...]) -> RemoteServer | None:
        """Remember what the server lists now; None when it was removed meanwhile. No write when nothing
        changed (a chat asks at every load)."""
        models = tuple(models)
        return self._update(name, lambda s: s if s.models == models else replace(s, models=models,
                                                                                   checked_at=time.time()))
