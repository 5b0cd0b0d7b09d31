"""Errors an engine reports to the user.

An :class:`EngineError` carries a *kind* (what went wrong, for code to act
on) and a *message* written for a person. Both cross the process boundary
as plain strings, so the engine host can send them to the GUI or the CLI
unchanged.
"""

from __future__ import annotations


class ErrorKind:
    """The kinds of failure the shell tells apart."""

    BAD_INPUT = "bad_input"  # the request or file is wrong: the user can fix it
    MODEL_FILE = "model_file"  # missing, not a model, truncated, corrupt
    UNSUPPORTED = "unsupported"  # valid file this build cannot run
    MEMORY = "memory"  # would not fit in memory
    CONTEXT_OVERFLOW = "context_overflow"  # prompt longer than the context
    UNAVAILABLE = "unavailable"  # engine not installed
    CRASHED = "crashed"  # the engine process died
    INTERNAL = "internal"  # a bug: the message says where the log is


class EngineError(Exception):
    """A failure with a message fit to show a user as it is."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __reduce__(self):  # keep kind and message when pickled across processes
        return (type(self), (self.kind, self.message))


class EngineCrashed(EngineError):
    """The engine process ended without saying why (segfault, abort, OOM kill)."""

    def __init__(self, kind: str = ErrorKind.CRASHED, message: str = "The engine stopped unexpectedly.") -> None:
        super().__init__(kind, message)
