"""The tools one chat turn offers, and how each is run.

A :class:`ToolSet` maps the name the model calls to where the tool lives:
a tool of an MCP server (started on first use through
:func:`engines.tools.manage.connect`, kept for the turn, stopped by
:meth:`ToolSet.close`) or a built-in one (a Python callable, such as
Atelier's image engine). Two servers offering the same name keep both:
the second becomes ``SERVER_NAME``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from engines.api import ToolFunction
from engines.errors import EngineError
from engines.tools.connection import Progress, ToolOutcome
from engines.tools.servers import ListedTool, ToolServer

BuiltinRun = Callable[[dict, Progress | None], ToolOutcome]


@dataclass(frozen=True)
class OfferedTool:
    name: str  # what the model calls
    server: str  # the MCP server's name, or "atelier" for a built-in tool
    listed: ListedTool  # the tool as its server listed it (its own name, description, schema)
    run_builtin: BuiltinRun | None = None


class ToolSet:
    def __init__(self) -> None:
        self._tools: dict[str, OfferedTool] = {}
        self._servers: dict[str, ToolServer] = {}
        self._connections: dict = {}
        self.problems: list[str] = []  # servers that could not list their tools: one line each

    @classmethod
    def open(cls, servers: Sequence[ToolServer], connect=None) -> "ToolSet":
        """The tools of ``servers``, asked of each now; one that fails is a line in ``problems``, not an error."""
        from engines.tools.manage import connect as default_connect

        toolset = cls()
        for server in servers:
            if not server.enabled:  # a disabled server is never started
                toolset.problems.append(f"The tool server '{server.name}' is disabled; its tools are not offered.")
                continue
            try:
                connection = (connect or default_connect)(server)
                tools = connection.list_tools()
            except EngineError as exc:
                toolset.problems.append(f"{exc.message} Its tools are not offered in this reply.")
                continue
            toolset._connections[server.name] = connection
            toolset.add_server_tools(server, tools)
        return toolset

    def add_server_tools(self, server: ToolServer, tools: Sequence[ListedTool]) -> None:
        self._servers[server.name] = server
        for tool in tools:
            name = self._free_name(tool.name, server.name)
            self._tools[name] = OfferedTool(name, server.name, tool)

    def add_builtin(self, tool: ListedTool, run: BuiltinRun, server: str = "atelier") -> None:
        name = self._free_name(tool.name, server)
        self._tools[name] = OfferedTool(name, server, tool, run)

    def __bool__(self) -> bool:
        return bool(self._tools)

    def get(self, name: str) -> OfferedTool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def definitions(self) -> tuple[ToolFunction, ...]:
        """What the model is told: name, description, argument schema."""
        return tuple(ToolFunction(name, tool.listed.description, tool.listed.input_schema or {"type": "object"})
                     for name, tool in self._tools.items())

    def listed_by_name(self) -> dict[str, ListedTool]:
        """Model-facing names and the schemas their arguments are checked against."""
        return {name: tool.listed for name, tool in self._tools.items()}

    def run(self, name: str, arguments: dict, on_progress: Progress | None = None) -> ToolOutcome:
        """Run a checked call; ToolServerError (one line) when the server fails."""
        tool = self._tools[name]
        if tool.run_builtin is not None:
            return tool.run_builtin(arguments, on_progress)
        connection = self._connections.get(tool.server)
        if connection is None:
            from engines.tools.manage import connect

            connection = self._connections[tool.server] = connect(self._servers[tool.server])
        return connection.call(tool.listed.name, arguments, on_progress)

    def close(self) -> None:
        """Stop every server this set started."""
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.close()

    def __enter__(self) -> "ToolSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _free_name(self, name: str, server: str) -> str:
        """The name the model calls: letters, digits and ``_.-`` only (it goes into chat templates), never taken twice."""
        from engines.llama.tool_templates import clean_name

        name = clean_name(name)
        if name not in self._tools:
            return name
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}_{name}")[:64]
