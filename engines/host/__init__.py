"""The engine host: engines run in their own process, started as a plain process, never forked.

A native crash (a llama.cpp abort, a segfault, an out-of-memory kill) ends
the host, not the window or the CLI. See :mod:`engines.host.client` for the
parent side, :mod:`engines.host.standalone` and :mod:`engines.host.process`
for the host side, and :mod:`engines.host.protocol` for what they say.

``EngineHost`` is imported on first use: the host process imports this
package too, and has no use for the parent's side.
"""

__all__ = ["EngineHost"]


def __getattr__(name: str):
    if name == "EngineHost":
        from engines.host.client import EngineHost

        return EngineHost
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
