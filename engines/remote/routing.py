"""One host for the chat page until the scheduler serves every engine: local models and remote ones.

The chat worker drives one engine-host-like object. :class:`WithRemote`
is that object: engine "remote" goes to a :class:`RemoteHost` (no
process), every other engine to the local engine host it wraps. Stop,
``model_info`` and closing follow whichever ran last, so a Stop reaches
the reply that is streaming, wherever it comes from. The local host keeps
its model loaded while a remote one is used, so switching back is quick;
"Unload" closes both.

The scheduler's ``ScheduledHost`` does the same job for every engine; the
chat page switches to it without changing anything else (see
/tmp/design12.md, "Remote engines").
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from engines.api import EngineEvent
from engines.remote.host import RemoteHost
from engines.remote.spec import ENGINE


class WithRemote:
    def __init__(self, local, remote: RemoteHost | None = None) -> None:
        self.local = local
        self.remote = remote or RemoteHost()
        self._active = local

    @property
    def model_info(self) -> Any:
        return self._active.model_info

    @property
    def pid(self) -> int | None:
        return getattr(self._active, "pid", None)

    @property
    def is_running(self) -> bool:
        return bool(getattr(self._active, "is_running", False))

    def load(self, engine: str, spec: Any, on_event: Callable[[EngineEvent], None] | None = None) -> Any:
        self._active = self.remote if engine == ENGINE else self.local
        return self._active.load(engine, spec, on_event)

    def generate(self, request: Any) -> Iterator[EngineEvent]:
        return self._active.generate(request)

    def cancel(self) -> None:
        self._active.cancel()

    def kill(self) -> None:
        self.remote.close()
        kill = getattr(self.local, "kill", None)
        if kill is not None:
            kill()

    def close(self) -> None:
        self.remote.close()
        self.local.close()

    unload = close
