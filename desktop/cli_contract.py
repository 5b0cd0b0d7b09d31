"""The ``atelier`` command's contract with scripts: exit codes and the one error type.

Every command follows it, so a script can tell "fix your command line"
from "something failed" without reading the message:

* 0: done;
* 2 (``EXIT_BAD_INPUT``): what the user typed or pointed at is wrong (a
  bad option, a file that is not a model, a prompt too long for the
  context); one ``error:`` line on stderr;
* 1 (``EXIT_FAILED``): the request was right but could not be carried out
  (no network, a full disk, not enough memory, an engine missing or
  crashed, a bug); one ``error:`` line on stderr;
* 130 (``EXIT_INTERRUPTED``): Ctrl-C, as shells report SIGINT;
* 141: the reader of stdout went away (``| head``); nothing is printed, and
  the status is the one a shell shows for any tool ended by SIGPIPE there.

Commands raise :class:`CliError`; ``desktop.cli`` prints it. An
:class:`~engines.errors.EngineError` becomes a ``CliError`` through
:meth:`CliError.from_engine`, whose exit code comes from the one table
below, so no command decides on its own which kinds are failures. This
module imports nothing but ``engines.errors``: commands import it, and
``desktop.cli`` imports the commands, never the reverse.
"""

from __future__ import annotations

from engines.errors import EngineError, ErrorKind

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# Every ErrorKind, once (tests/test_cli_contract.py checks that none is missing).
EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.BAD_INPUT: EXIT_BAD_INPUT,
    ErrorKind.MODEL_FILE: EXIT_BAD_INPUT,
    ErrorKind.UNSUPPORTED: EXIT_BAD_INPUT,
    ErrorKind.CONTEXT_OVERFLOW: EXIT_BAD_INPUT,
    ErrorKind.NOT_FOUND: EXIT_BAD_INPUT,
    ErrorKind.MEMORY: EXIT_FAILED,
    ErrorKind.WONT_FIT: EXIT_FAILED,
    ErrorKind.UNAVAILABLE: EXIT_FAILED,
    ErrorKind.CRASHED: EXIT_FAILED,
    ErrorKind.INTERNAL: EXIT_FAILED,
    ErrorKind.NETWORK: EXIT_FAILED,
    ErrorKind.GATED: EXIT_FAILED,
    ErrorKind.OFFLINE: EXIT_FAILED,
    ErrorKind.DISK_FULL: EXIT_FAILED,
    ErrorKind.DISK_SPACE: EXIT_FAILED,
    ErrorKind.NO_PYTHON: EXIT_FAILED,
    ErrorKind.INSTALL_FAILED: EXIT_FAILED,
    ErrorKind.BROKEN: EXIT_FAILED,
    ErrorKind.BUSY: EXIT_FAILED,
    ErrorKind.CANCELLED: EXIT_INTERRUPTED,
}


def exit_code_for(kind: str) -> int:
    """The exit code for an error kind; a kind this version does not know is a failure, not the user's fault."""
    return EXIT_CODES.get(kind, EXIT_FAILED)  # type: ignore[call-overload]  # a StrEnum hashes as its string


class CliError(Exception):
    """One line for the user, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def from_engine(cls, error: EngineError, prefix: str = "") -> "CliError":
        """The engine's own sentence, with the exit code its kind maps to."""
        return cls(prefix + error.message, exit_code_for(error.kind))
