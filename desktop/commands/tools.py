"""``atelier tools …``: the MCP servers whose tools a chat may call.

``add NAME -- COMMAND [ARGS...]`` (a program spoken to over its stdio) or
``add NAME --url URL`` (streamable HTTP) starts the server, lists its
tools, and only then records it; ``list`` shows the servers and the tools
each listed when last asked (``--refresh`` asks them again); ``call
SERVER TOOL JSON_ARGS`` runs one tool, with its arguments checked against
the tool's schema first, exactly as a chat would; ``remove NAME`` forgets
a server and its secrets; ``enable``/``disable`` choose which servers may
run at all.
"""

from __future__ import annotations

import argparse
import json
import sys

from desktop.cli_contract import CliError
from desktop.cli_output import clean, model_text_filter, print_json
from engines.errors import EngineError
from engines.workspace import open_workspace


def add_parser(sub) -> None:
    tools = sub.add_parser("tools", help="MCP servers whose tools chats may call")
    verbs = tools.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="start a server, list its tools, and add it",
                           usage="atelier tools add NAME [options] (--url URL | -- COMMAND [ARGS...])")
    add.add_argument("name", help="a short name for the server, e.g. time")
    add.add_argument("--url", help="a streamable-HTTP MCP endpoint, e.g. http://127.0.0.1:3001/mcp")
    add.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="how long one call may take before the server is stopped (default: 60)")
    add.add_argument("--secret-env", action="append", default=[], metavar="VAR",
                     help="a variable of this environment the server needs (a token): its value goes to the keyring")
    add.add_argument("--json", action="store_true")
    # The server's own command comes after '--' and is never parsed as options (split_server_command).
    add.add_argument("stray", nargs="*", help=argparse.SUPPRESS)
    listing = verbs.add_parser("list", help="the servers added and their tools")
    listing.add_argument("--refresh", action="store_true", help="start each enabled server and ask for its tools again")
    listing.add_argument("--json", action="store_true")
    call = verbs.add_parser("call", help="call one tool with JSON arguments, e.g. '{\"timezone\": \"UTC\"}'")
    call.add_argument("server")
    call.add_argument("tool")
    call.add_argument("arguments", nargs="?", default="{}", metavar="JSON_ARGS")
    call.add_argument("--json", action="store_true")
    for verb, words in (("remove", "forget a server (and its secrets in the keyring)"),
                        ("enable", "let a server run again"), ("disable", "never start a server until enabled")):
        verbs.add_parser(verb, help=words).add_argument("name")


def split_server_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``tools add NAME [options] -- COMMAND ARGS...``: (what argparse parses, the command as typed).

    argparse's own '--' handling does not reach into a subcommand's positionals, and the server's
    arguments often look like options (``--local-timezone UTC``), so the command is cut off first.
    """
    if argv[:2] == ["tools", "add"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, None


def run_tools(args) -> int:
    from engines.tools.servers import ToolServers

    workspace = open_workspace()  # sets offline mode from the settings
    servers = ToolServers.beside(workspace.models.file)
    handlers = {"add": _add, "list": _list, "call": _call, "remove": _remove, "enable": _enable, "disable": _enable}
    try:
        return handlers[args.verb](servers, args)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None


def _add(servers, args) -> int:
    from engines.tools.manage import add_server
    from engines.tools.servers import DEFAULT_CALL_TIMEOUT_S

    if args.stray:
        raise CliError(f"put the server's command after '--': atelier tools add {args.name} -- "
                       f"{' '.join(args.stray)}")
    command = list(getattr(args, "server_command", None) or [])
    if args.url and command:
        raise CliError("give the server either as --url URL or as a command after '--', not both")
    if not args.url and not command:
        raise CliError("no server given: 'atelier tools add NAME -- COMMAND [ARGS...]' or "
                       "'atelier tools add NAME --url URL'")
    timeout = args.timeout if args.timeout is not None else DEFAULT_CALL_TIMEOUT_S
    if timeout <= 0:
        raise CliError("--timeout must be more than 0 seconds")
    added = add_server(servers, args.name, command=command or None, url=args.url, secret_env=args.secret_env,
                       timeout_s=timeout)
    if args.json:
        print_json(_server_dict(added))
    else:
        names = ", ".join(t.name for t in added.tools) or "no tools yet"
        count = len(added.tools)
        print(clean(f"Added '{added.name}' ({added.where}): {count} tool{'' if count == 1 else 's'}, {names}."))
    return 0


def _list(servers, args) -> int:
    from engines.tools.manage import refresh_tools

    found = servers.all()
    if servers.problem:
        print(f"warning: {clean(servers.problem)}", file=sys.stderr)
    failures = {}
    if args.refresh:
        for server in found:
            if server.enabled:
                try:
                    refresh_tools(servers, server)
                except EngineError as exc:
                    failures[server.name] = exc.message
                    print(f"warning: {clean(exc.message)}", file=sys.stderr)
        found = servers.all()
    if args.json:
        print_json({"servers": [{**_server_dict(s), "error": failures.get(s.name)} for s in found]})
        return 0
    if not found:
        print("No tool servers. Add one with 'atelier tools add NAME -- COMMAND [ARGS...]', e.g. "
              "atelier tools add time -- uvx mcp-server-time")
        return 0
    for server in found:
        state = "enabled" if server.enabled else "disabled"
        print(clean(f"{server.name}  {server.where}  ({state}; calls time out after {server.timeout_s:g} s)"))
        for tool in server.tools:
            print(clean(f"  {tool.name}: {_first_line(tool.description)}"))
        if not server.tools:
            print("  (it listed no tools)")
    return 0


def _call(servers, args) -> int:
    from engines.tools.arguments import parse_arguments_json
    from engines.tools.manage import connect

    server = servers.require(args.server)
    if not server.enabled:
        raise CliError(f"the tool server '{server.name}' is disabled; 'atelier tools enable {server.name}' lets it run")
    arguments = parse_arguments_json(args.arguments)
    with connect(server) as connection:
        from engines.tools.arguments import check_call

        tool = check_call(args.tool, arguments, {t.name: t for t in connection.list_tools()}, server.name)
        outcome = connection.call(tool.name, arguments,
                                  on_progress=None if args.json else _show_progress)
    if args.json:
        print_json({"server": server.name, "tool": args.tool, "arguments": arguments, "is_error": outcome.is_error,
                    "text": outcome.text, "structured": outcome.structured})
    else:
        print(model_text_filter(sys.stdout)(outcome.text))  # the tool's output, as the user asked for it
    if outcome.is_error:
        raise CliError(f"the tool '{args.tool}' reported an error (above)")
    return 0


def _remove(servers, args) -> int:
    from engines.tools.manage import remove_server

    removed = remove_server(servers, args.name)
    secrets = "; its secrets were removed from the keyring" if removed.secret_env else ""
    print(clean(f"Removed '{removed.name}' ({removed.where}){secrets}."))
    return 0


def _enable(servers, args) -> int:
    server = servers.require(args.name)
    on = args.verb == "enable"
    servers.set_enabled(server.name, on)
    print(clean(f"'{server.name}' is {'enabled' if on else 'disabled: it will not be started'}."))
    return 0


def _show_progress(value: float, total: float | None, message: str | None) -> None:
    amount = f"{value:g}/{total:g}" if total else f"{value:g}"
    print(clean(f"progress: {amount}{' ' + message if message else ''}"), file=sys.stderr, flush=True)


def _server_dict(server) -> dict:
    return {"name": server.name, "command": list(server.command) or None, "url": server.url,
            "enabled": server.enabled, "timeout_s": server.timeout_s, "secret_env": list(server.secret_env),
            "tools": [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                      for t in server.tools],
            "checked_at": server.checked_at or None}


def _first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "(no description)"
