"""Adding, checking, opening and removing tool servers: what ``atelier tools`` and Settings do.

Both front ends call these, so a server is checked and refused the same
way in the window and on the command line. A server is recorded only
after it started and listed its tools (a typo in the command, a program
that is not installed or a URL that answers nothing is caught at once,
with the reason), and its secrets are in the keyring before the record
is written, so a record never names a secret that is not there.
"""

from __future__ import annotations

import os
from dataclasses import replace

from engines.errors import EngineError, ErrorKind
from engines.tools.connection import McpConnection
from engines.tools.secrets import check_env_name, forget_secrets, read_secrets, save_secrets
from engines.tools.servers import DEFAULT_CALL_TIMEOUT_S, ListedTool, ToolServer, ToolServers, check_name


def connect(server: ToolServer) -> McpConnection:
    """A connection to ``server`` (started on first use), with its secrets; EngineError when it may not run."""
    if server.url:
        _require_network_allowed(server)
    return McpConnection(server, env=read_secrets(server.name, server.secret_env))


def add_server(servers: ToolServers, name: str, *, command: list[str] | None = None, url: str | None = None,
               secret_env: list[str] | None = None, timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> ToolServer:
    """Start the server, list its tools, keep its secrets, record it. EngineError in words at the first problem.

    ``secret_env`` names variables of *this* process's environment whose values the server needs
    (``GITHUB_TOKEN=… atelier tools add gh --secret-env GITHUB_TOKEN -- …``): they go to the keyring.
    """
    check_name(name)
    if servers.get(name) is not None:
        raise EngineError(ErrorKind.BAD_INPUT, f"A tool server called '{name}' exists already. Remove it first, or "
                          "choose another name.")
    if bool(command) == bool(url):
        raise EngineError(ErrorKind.BAD_INPUT, "Give the server either as a command (after '--') or as --url URL.")
    if timeout_s <= 0:
        raise EngineError(ErrorKind.BAD_INPUT, "The call timeout must be more than 0 seconds.")
    if url:
        from engines.remote.urls import normalise_base_url

        url = normalise_base_url(url)
    secrets = {}
    for var in secret_env or []:
        value = os.environ.get(check_env_name(var), "")
        if not value:
            raise EngineError(ErrorKind.BAD_INPUT, f"--secret-env {var}: the variable {var} is not set here, so there "
                              "is no value to keep. Set it for this command only, e.g. "
                              f"{var}=... atelier tools add {name} --secret-env {var} -- COMMAND")
        secrets[var] = value
    if command and os.sep in command[0]:  # a path: kept absolute, so the server starts from any folder
        command = [os.path.abspath(command[0]), *command[1:]]
    server = ToolServer(name, tuple(command or ()), url, timeout_s=timeout_s, secret_env=tuple(secrets))
    if server.url:
        _require_network_allowed(server)
    with McpConnection(server, env=secrets) as connection:
        tools = connection.list_tools()
    save_secrets(name, secrets)
    try:
        return servers.add(replace(server, tools=tuple(tools)))
    except EngineError:
        forget_secrets(name, server.secret_env)
        raise


def refresh_tools(servers: ToolServers, server: ToolServer) -> list[ListedTool]:
    """Ask the server what it offers now and remember it."""
    with connect(server) as connection:
        tools = connection.list_tools()
    servers.set_tools(server.name, tools)
    return tools


def remove_server(servers: ToolServers, name: str) -> ToolServer:
    removed = servers.remove(name)
    if removed is None:
        servers.require(name)  # raises NOT_FOUND naming the servers there are
    forget_secrets(name, removed.secret_env)
    return removed


def _require_network_allowed(server: ToolServer) -> None:
    from engines.network import OfflineError, network_allowed
    from engines.remote.urls import is_loopback

    if not is_loopback(server.url) and not network_allowed():
        raise OfflineError(f"Atelier is in offline mode, and the tool server '{server.name}' ({server.url}) is not on "
                           "this computer. Turn offline mode off in Settings to use it; servers on 127.0.0.1 work offline.")
