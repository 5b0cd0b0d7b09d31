"""The small message protocol between a parent and its engine host.

Parent to host: :class:`Load`, :class:`Generate`, :class:`Shutdown`. Both
requests carry an id. Cancelling is not a message: a message would wait
behind the busy load or generation, so the parent raises a shared
"cancelled up to" request id instead (:mod:`engines.host.cancel`), which
the engine polls at every token and at every step of a load.

Host to parent: :class:`Ready`, :class:`Loaded`, :class:`Event`,
:class:`Done` and :class:`Failed`. Every message is a picklable dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ---- parent -> host ------------------------------------------------------


@dataclass(frozen=True)
class Load:
    engine: str  # registry name, e.g. "llama_cpp"
    spec: Any  # the engine's load spec (TextLoadSpec for text engines)
    request_id: int = 0


@dataclass(frozen=True)
class Generate:
    request_id: int
    request: Any


@dataclass(frozen=True)
class Shutdown:
    pass


# ---- host -> parent ------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Loaded:
    info: Any
    request_id: int = 0


@dataclass(frozen=True)
class Event:
    request_id: int | None
    event: Any


@dataclass(frozen=True)
class Done:
    request_id: int | None
    result: Any


@dataclass(frozen=True)
class Failed:
    request_id: int | None
    kind: str
    message: str
