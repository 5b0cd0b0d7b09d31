"""Errors an engine or a service reports to the user.

An :class:`EngineError` carries a *kind* (what went wrong, for code to act
on) and a *message* written for a person. The kinds are one enum,
:class:`ErrorKind`, for every module: the GUI, the CLI's exit codes
(``desktop.cli_contract.exit_code_for``) and the engine host all decide on
it. It is a ``StrEnum`` so a kind still crosses a process boundary, a JSON
file or a Qt signal as the plain string it always was ("network",
"disk_full", ...), and compares equal to that string.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence

try:
    from enum import StrEnum
except ImportError:  # Python 3.10, which the private image-engine Python may be (engines/envs/installer.py)

    class StrEnum(str, Enum):  # type: ignore[no-redef]
        def __str__(self) -> str:
            return str(self.value)


class ErrorKind(StrEnum):
    """The kinds of failure the front ends tell apart. Add new ones here, never as bare strings."""

    # What the user asked for, or pointed at, is wrong: they can fix it.
    BAD_INPUT = "bad_input"  # the request, an argument or a state file is wrong
    MODEL_FILE = "model_file"  # missing, not a model, truncated, corrupt
    UNSUPPORTED = "unsupported"  # a valid file this build cannot run
    CONTEXT_OVERFLOW = "context_overflow"  # the prompt is longer than the context
    NOT_FOUND = "not_found"  # no such model, repo or file on the Hub / server
    # The request was right, but this machine or the world could not carry it out.
    MEMORY = "memory"  # would not fit in memory, or ran out
    WONT_FIT = "wont_fit"  # a download refused because the model won't fit on this machine
    UNAVAILABLE = "unavailable"  # an engine (or the library it needs) is not installed
    CRASHED = "crashed"  # the engine process died
    INTERNAL = "internal"  # a bug: the message says where the log is
    NETWORK = "network"  # no connection, a server error, a dropped transfer
    GATED = "gated"  # the model needs a Hugging Face token, or access to it
    OFFLINE = "offline"  # offline mode forbids this connection
    DISK_FULL = "disk_full"  # the disk filled up while writing
    DISK_SPACE = "disk_space"  # not enough free space to start (the image-engine installer)
    NO_PYTHON = "no_python"  # the image-engine installer found no usable Python
    INSTALL_FAILED = "install_failed"  # installing the image engine's packages (uv) failed
    BROKEN = "broken"  # the image engine installed but does not load
    BUSY = "busy"  # another process is doing this right now
    CANCELLED = "cancelled"  # the user stopped it


def as_kind(kind: str) -> ErrorKind | str:
    """``kind`` as an :class:`ErrorKind` member; an unknown string (from an older or newer peer) stays as it is."""
    try:
        return ErrorKind(kind)
    except ValueError:
        return kind


class EngineError(Exception):
    """A failure with a message fit to show a user as it is."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = as_kind(kind)
        self.message = message

    def __reduce__(self):  # keep kind and message when pickled; the kind travels as its plain string
        return (type(self), (str(self.kind), self.message))


class EngineCrashed(EngineError):
    """The engine process ended without saying why (segfault, abort, OOM kill)."""

    def __init__(self, kind: str = ErrorKind.CRASHED, message: str = "The engine stopped unexpectedly.") -> None:
        super().__init__(kind, message)


def problems_sentence(problems: Sequence[str], lead: str = "") -> str:
    """A validation's problems as one sentence for a person: "Lead: a; b." or, with no lead, "A; b.".

    Every request and spec reports its problems this way. Only the first letter is raised:
    ``str.capitalize`` would lower all the others ("gpu", "lcm").
    """
    text = "; ".join(problems)
    return f"{lead}: {text}." if lead else text[:1].upper() + text[1:] + "."
