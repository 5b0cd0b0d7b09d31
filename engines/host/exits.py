"""Why an engine host process ended, in words for the user."""

from __future__ import annotations

import signal

# The host's Python cannot speak the protocol (msgspec is missing: an environment installed by an older
# Atelier). EX_PROTOCOL from sysexits.h; the parent turns it into "installed by another version".
EXIT_ANOTHER_VERSION = 76

_REASONS = {
    "SIGSEGV": "it crashed (segmentation fault)",
    "SIGABRT": "it aborted, usually a failed check inside llama.cpp",
    "SIGKILL": "it was killed, most likely because the system ran out of memory",
    "SIGBUS": "it crashed (bus error), often a model file that changed or vanished while loaded",
    "SIGILL": "it used a CPU instruction this processor does not have",
    "SIGTERM": "it was terminated",
}
# Windows lacks SIGKILL and SIGBUS: keep only the signals this platform has.
_SIGNAL_REASONS = {getattr(signal, name): words for name, words in _REASONS.items() if hasattr(signal, name)}


def describe_exit(exitcode: int | None, log_tail: str = "") -> str:
    """A sentence for the user about why the host process ended."""
    if exitcode is None:
        reason = "it stopped answering"
    elif exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
            reason = _SIGNAL_REASONS.get(sig, f"it was stopped by signal {sig.name}")
        except ValueError:
            reason = f"it was stopped by signal {-exitcode}"
    else:
        reason = f"it exited with code {exitcode}"
    detail = _interesting_line(log_tail)
    message = f"The engine stopped unexpectedly: {reason}."
    if detail:
        message += f" Last message: {detail}"
    return message


def _interesting_line(log_tail: str) -> str:
    keys = ("GGML_ASSERT", "error", "Error", "failed", "Killed", "Fatal")
    for line in reversed(log_tail.splitlines()):
        if any(key in line for key in keys):
            return line.strip()[:300]
    return ""
