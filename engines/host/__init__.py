"""The engine host: engines run in their own process, spawned, never forked.

A native crash (a llama.cpp abort, a segfault, an out-of-memory kill) ends
the host, not the window or the CLI. See :mod:`engines.host.client` for the
parent side and :mod:`engines.host.process` for the child side.
"""

from engines.host.client import EngineHost

__all__ = ["EngineHost"]
