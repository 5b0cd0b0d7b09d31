"""Tools for chat: MCP servers the user plugs in, and how a chat turn calls them.

The GUI (Settings, the chat panel) and the CLI (``atelier tools``,
``atelier chat --tools``) use this package only; nothing here imports Qt.

Servers (``engines.tools.servers``, ``engines.tools.manage``)
    ``ToolServers.beside(workspace.models.file)`` is the profile's
    ``mcp-servers.json``: ``all()``, ``get(name)``, ``require(name)``,
    ``set_enabled(name, on)``, and the ``tools`` each listed when last
    asked (``ToolServer.tools``: ``ListedTool(name, description,
    input_schema)``), so a picker shows them without starting anything.
    ``manage.add_server(servers, name, command=[...] | url=...,
    secret_env=[...])`` starts the server, lists its tools and only then
    records it (secret values go to the keyring, see
    ``engines.tools.secrets``); ``manage.refresh_tools`` asks again;
    ``manage.remove_server`` forgets it. Every failure is an
    ``EngineError`` whose message is one line for the user.

Connections (``engines.tools.connection``)
    ``manage.connect(server)`` gives an ``McpConnection`` (a context
    manager; the server starts on first use and stops at ``close()``):
    ``list_tools()`` and ``call(tool, arguments, on_progress, timeout_s)``
    → ``ToolOutcome(text, is_error, structured)``. A server that is not
    installed, crashes, hangs (each call has the server's timeout) or
    answers garbage raises ``ToolServerError`` (its ``.server`` and one
    ``.message`` line): the chat shows the line and goes on.

Checking calls (``engines.tools.arguments``)
    ``check_call(name, arguments, tools_by_name)`` refuses an unknown tool
    or arguments that do not match the tool's JSON schema (``jsonschema``)
    before anything is sent; model output is parsed as JSON, never run.
"""
