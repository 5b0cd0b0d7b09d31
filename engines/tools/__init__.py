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

A turn's tools (``engines.tools.toolset``)
    ``ToolSet.open(servers)`` starts the chosen enabled servers and lists
    their tools (one that fails is a line in ``.problems``; the others are
    offered); ``add_builtin(ListedTool, run)`` adds a Python tool;
    ``close()`` (or ``with``) stops the servers. Atelier's image engine is
    one: ``engines.images.image_tool.add_image_tool(toolset, host, paths,
    prefs, spec, model_id)`` offers ``make_image`` (server ``atelier``);
    its result names the gallery file and ``call.structured["image"]`` is
    its path, for the chat to show the image inline.

The loop (``engines.tools.loop``)
    ``run_tool_turn(host.generate, request, toolset, approvals, on_event,
    first_choice="auto"|"required", max_calls=8, tool_format=None)`` → ``LoopOutcome(text,
    result, calls, messages, mode)``. ``on_event`` gets the engine's events
    (``TokenEvent`` carries only the answer, never the JSON around it) and:
    ``ToolCallEvent(call)`` each time a call appears or changes status
    (``pending`` → while ``Approvals`` decides; ``running``; then ``done``,
    ``error``, ``refused`` or ``invalid``; ``call.arguments_json`` is what
    to show, ``call.result`` what to show collapsed under it), and
    ``ToolProgressEvent(call_id, progress, total, message)``.
    ``Approvals(ask, allow_all=False, always=(), refusal=...)``: ``ask(call)``
    returns ``"once"``, ``"always"`` (remembered per tool name in
    ``approvals.always``) or ``"refuse"``; it is called on the thread that
    runs the turn, so the GUI blocks it on its dialog. ``tool_format`` is
    the loaded model's ``ModelInfo.tool_format``: a model whose chat
    template defines tools ("hermes", "llama3", "mistral"; see
    ``engines.llama.tool_templates``) gets them through that template and
    its calls are read in its own syntax (``engines.tools.call_formats``);
    None runs the JSON-grammar fallback (``engines.tools.fallback``). The
    UI names the mode with ``LoopOutcome.mode`` (or, before a turn,
    ``call_formats.mode_name(tool_format) or fallback.FALLBACK_NAME``).

In the chat (``engines.chat``)
    ``ChatTurn(..., tools=toolset, approvals=approvals)`` runs the loop in
    place of one generation and saves each call as it changes
    (``engines.chat.tool_log``: ``calls_of(store, message_id, version)``
    to draw a reply's calls, ``set_chat_tools``/``chat_tools`` for the
    servers and reply schema a chat has switched on). ``history_for``
    re-sends earlier calls and results in later turns.
"""
