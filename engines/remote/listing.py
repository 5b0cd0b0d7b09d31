"""The models of the remote servers, as the pickers and ``--model`` see them: ``NAME/MODEL``.

A :class:`RemoteModel` has the fields a picker reads from an installed
model (``id``, ``name``, ``kind``, ``engine``, ``source``, ``description``,
``path``, ``size_bytes``), so the chat page and the Models page list it
beside the local ones, marked remote, without a second code path. Its
``spec`` is what engine "remote" loads.

The list comes from what each server listed when last asked (kept in
``remotes.json``), so it shows at start-up with no connection. A model
the server added since is still reachable by name: ``box/new-model``
resolves to the server ``box``, and loading it asks the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.remote.servers import RemoteServer, RemoteServers
from engines.remote.spec import ENGINE, RemoteSpec

SOURCE = "remote"


@dataclass(frozen=True)
class RemoteModel:
    server: RemoteServer
    model: str

    # What every remote model is, in the words of an installed model's record.
    kind = "chat"  # served through /chat/completions
    engine = ENGINE
    source = SOURCE
    format = "remote"
    size_bytes = 0
    sha256 = None
    base = None
    exists = True  # nothing on disk to lose

    @property
    def id(self) -> str:
        return f"{self.server.name}/{self.model}"

    @property
    def name(self) -> str:
        return f"{self.model} · {self.server.name} (remote)"

    @property
    def path(self) -> str:
        return self.server.base_url

    @property
    def added_at(self) -> float:
        return self.server.added_at

    @property
    def description(self) -> str:
        return f"Runs on the remote server '{self.server.name}' ({self.server.base_url})"

    @property
    def spec(self) -> RemoteSpec:
        return self.server.spec(self.model)


def remote_models(servers: RemoteServers) -> list[RemoteModel]:
    """Every model every server listed when last asked, server by server."""
    return [RemoteModel(server, model) for server in servers.all() for model in server.models]


def find_remote_model(text: str, servers: RemoteServers) -> RemoteModel | None:
    """``NAME/MODEL`` when NAME is a remote server (MODEL may hold slashes itself: ``box/Qwen/Qwen2.5-7B``)."""
    name, slash, model = (text or "").partition("/")
    if not slash or not model.strip():
        return None
    server = servers.get(name)
    return RemoteModel(server, model) if server is not None else None
