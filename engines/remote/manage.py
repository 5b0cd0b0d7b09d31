"""Adding, checking and removing remote servers: what ``atelier remote`` and "Add remote server…" do.

Both front ends call these, so a server is checked, named and refused
the same way in the window and on the command line. A server is added
only once it answered ``GET /models`` (so a typo in the URL is caught at
once, with the reason), and its key is stored in the keyring before the
record is written, so a record never points at a key that is not there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engines.errors import EngineError, ErrorKind
from engines.remote.http import ListedModel, fetch_models
from engines.remote.keys import check_env_name, forget_key, read_key, save_key
from engines.remote.servers import RemoteServer, RemoteServers, check_name
from engines.remote.spec import DEFAULT_READ_TIMEOUT_S
from engines.remote.urls import normalise_base_url, require_allowed


@dataclass(frozen=True)
class Added:
    server: RemoteServer
    models: list[ListedModel]

    def summary(self) -> str:
        """One line: what was added and what it serves."""
        ids = [m.id for m in self.models]
        if not ids:
            return (f"Added '{self.server.name}' ({self.server.base_url}). It lists no models yet; they appear as "
                    f"{self.server.name}/MODEL once it does.")
        shown = ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
        noun = "model" if len(ids) == 1 else "models"
        return (f"Added '{self.server.name}' ({self.server.base_url}): {len(ids)} {noun}, {shown}. "
                f"Use them as {self.server.name}/MODEL, e.g. {self.server.name}/{ids[0]}.")


def check_server(name: str, url: str, *, api_key_env: str | None = None, key: str | None = None,
                 timeout_s: float | None = None) -> list[ListedModel]:
    """Ask the server what it lists, with the key it would use; EngineError (KeyRefused for 401/403) in words."""
    base_url = normalise_base_url(url)
    require_allowed(name, base_url)
    if api_key_env:
        key = read_key(name, check_env_name(api_key_env), False)
    return fetch_models(name, base_url, key or None, timeout_s)


def add_server(servers: RemoteServers, name: str, url: str, *, api_key_env: str | None = None,
               key: str | None = None, timeout_s: float = DEFAULT_READ_TIMEOUT_S,
               listed: list[ListedModel] | None = None) -> Added:
    """Check the server, keep its key in the keyring (when given one), and record it.

    ``listed`` is what :func:`check_server` found a moment ago with the same
    arguments (the GUI checks on a pool thread, then saves only if the user
    is still waiting for it); without it the server is asked now.
    """
    check_new_name(servers, name)
    if api_key_env and key:
        raise EngineError(ErrorKind.BAD_INPUT, "Give the key one way: from an environment variable, or typed in.")
    if not timeout_s or timeout_s <= 0:
        raise EngineError(ErrorKind.BAD_INPUT, "The timeout must be more than 0 seconds.")
    base_url = normalise_base_url(url)
    if listed is None:
        listed = check_server(name, base_url, api_key_env=api_key_env, key=key, timeout_s=min(timeout_s, 60.0))
    key = (key or "").strip() or None
    if key:
        save_key(name, key)
    record = RemoteServer(name, base_url, api_key_env=api_key_env or None, key_in_keyring=bool(key),
                          read_timeout_s=float(timeout_s), models=tuple(m.id for m in listed), checked_at=time.time())
    try:
        server = servers.add(record)
    except BaseException:
        if key:
            forget_key(name)
        raise
    return Added(server, listed)


def check_new_name(servers: RemoteServers, name: str) -> None:
    """Refuse a name that cannot be used or is taken, before any connection: the name is the user's to change."""
    check_name(name)
    if servers.get(name) is not None:
        raise EngineError(ErrorKind.BAD_INPUT, f"A remote server called '{name}' exists already. Remove it first "
                          f"('atelier remote remove {name}'), or choose another name.")


def remove_server(servers: RemoteServers, name: str) -> RemoteServer:
    """Forget the server and its key; EngineError BAD_INPUT naming the servers there are when it is unknown."""
    removed = servers.remove(name)
    if removed is None:
        raise EngineError(ErrorKind.BAD_INPUT, unknown_server(servers, name))
    if removed.key_in_keyring:
        forget_key(name)
    return removed


def refresh_server(servers: RemoteServers, name: str) -> list[ListedModel]:
    """Ask the server again what it lists, and remember it."""
    server = servers.get(name)
    if server is None:
        raise EngineError(ErrorKind.BAD_INPUT, unknown_server(servers, name))
    require_allowed(server.name, server.base_url)
    key = read_key(server.name, server.api_key_env, server.key_in_keyring)
    listed = fetch_models(server.name, server.base_url, key, min(server.read_timeout_s, 60.0))
    servers.set_models(name, [m.id for m in listed])
    return listed


def unknown_server(servers: RemoteServers, name: str) -> str:
    names = [s.name for s in servers.all()]
    known = f" The remote servers are: {', '.join(names)}." if names else " No remote server has been added."
    return f"No remote server is called '{name}'.{known}"
