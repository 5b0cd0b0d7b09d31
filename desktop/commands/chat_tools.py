"""``atelier chat --tools SERVER[,SERVER]``: one reply with the tool loop, and ``--json-schema FILE``.

The reply streams to stdout as the model writes it; each call goes to
stderr as it happens (``tool: time.convert_time {...}``, then its status
and the first line of its result), so a pipe gets the answer alone. On a
terminal each call is asked for ("Allow? [y]es once, [a]lways for this
tool, [n]o"); in a non-interactive run ``--allow-tools`` allows them, and
without it every call is refused with a note saying so. A model whose chat
template defines tools calls them in its own syntax (``ModelInfo.tool_format``,
engines.tools.call_formats); any other uses the JSON-grammar fallback
(engines.tools.fallback). The first note names which.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from desktop.cli_contract import CliError
from desktop.cli_output import clean, print_note
from engines.api import NoticeEvent, TokenEvent

NON_INTERACTIVE_REFUSAL = ("The user did not allow this call (a non-interactive run: 'atelier chat --allow-tools' "
                           "allows tool calls).")


def read_json_schema(path: str) -> dict:
    """``--json-schema FILE`` as a JSON object; one ``error:`` line when it is not one."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"--json-schema {clean(path)}: {exc.strerror or exc}") from None
    try:
        schema = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"--json-schema {clean(path)} is not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise CliError(f"--json-schema {clean(path)} must hold a JSON object (a schema), not {type(schema).__name__}")
    return schema


def check_tool_options(args) -> None:
    from engines.tools.loop import MAX_CALLS_PER_TURN

    if not args.tools and (args.allow_tools or args.tool_choice != "auto" or args.max_tool_calls != MAX_CALLS_PER_TURN):
        raise CliError("--allow-tools, --tool-choice and --max-tool-calls need --tools SERVER[,SERVER]")
    if not 1 <= args.max_tool_calls <= MAX_CALLS_PER_TURN:
        raise CliError(f"--max-tool-calls must be between 1 and {MAX_CALLS_PER_TURN}")


def tool_servers(workspace, names: str):
    """(the enabled servers named by ``--tools a,b``, the image model when ``atelier`` is named, else None).

    ``atelier`` is Atelier's own image engine as a tool (engines.images.image_tool), with the Images
    page's model. One ``error:`` line for an unknown or disabled server, or no image model.
    """
    from engines.tools.servers import BUILTIN_SERVER, ToolServers

    servers = ToolServers.beside(workspace.models.file)
    chosen, image = [], None
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name == BUILTIN_SERVER:
            image = _image_model(workspace)
            continue
        server = servers.require(name)
        if not server.enabled:
            raise CliError(f"the tool server '{name}' is disabled; 'atelier tools enable {name}' lets it run")
        chosen.append(server)
    if not chosen and image is None:
        raise CliError("--tools needs at least one server name (see 'atelier tools list')")
    return chosen, image


def _image_model(workspace):
    """(ImageLoadSpec, installed id) of the Images page's model."""
    from engines.diffusion.types import ImageLoadSpec
    from engines.library.resolve import resolve_model

    prefs = workspace.settings.images
    if not prefs.model_id:
        raise CliError("the image tool (--tools atelier) uses the Images page's model, and none is chosen yet: pick "
                       "one on the Images page")
    found = resolve_model(prefs.model_id, workspace.models, kind="image")
    return ImageLoadSpec(str(found.local_path()), backend=prefs.backend), (
        found.installed.id if found.installed is not None else None)


def run_tool_reply(args, host, request, chosen, show, workspace=None, image_host=None, tool_format=None):
    """The loop's outcome, with the reply streamed through ``show`` unless ``--json``.

    ``chosen``: what :func:`tool_servers` returned; ``image_host()`` gives the host the image tool runs on;
    ``tool_format``: the loaded model's own tool-call family (``ModelInfo.tool_format``), None for the fallback.
    """
    servers, image = chosen
    from engines.tools.loop import REFUSED_RESULT, Approvals, ToolCallEvent, run_tool_turn
    from engines.tools.toolset import ToolSet

    interactive = _interactive()
    approvals = Approvals(_ask if interactive else None, allow_all=args.allow_tools,
                          refusal=REFUSED_RESULT if interactive else NON_INTERACTIVE_REFUSAL)

    def on_event(event) -> None:
        if isinstance(event, TokenEvent) and not args.json:
            sys.stdout.write(show(event.text))
            sys.stdout.flush()
        elif isinstance(event, NoticeEvent):
            print_note(event.message)
        elif isinstance(event, ToolCallEvent):
            _show_call(event.call)

    with ToolSet.open(servers) as toolset:
        if image is not None:
            from engines.images.image_tool import add_image_tool

            add_image_tool(toolset, image_host(), workspace.paths, workspace.settings.images, *image)
        for problem in toolset.problems:
            print_note(problem)
        from engines.tools.call_formats import mode_name
        from engines.tools.fallback import FALLBACK_NAME

        if not args.json:
            print_note(f"tools: {', '.join(toolset.names()) or 'none'}. {mode_name(tool_format) or FALLBACK_NAME}.")
        return run_tool_turn(host.generate, request, toolset, approvals, on_event,
                             first_choice=args.tool_choice, max_calls=args.max_tool_calls, tool_format=tool_format)


def calls_json(calls) -> list[dict]:
    return [{"id": c.call_id, "round": c.round, "server": c.server, "tool": c.name, "arguments": c.arguments,
             "status": c.status, "result": c.result} for c in calls]


def _show_call(call) -> None:
    where = f"{call.server}.{call.name}" if call.server else call.name
    if call.status == "pending":
        line = f"tool: {where} {call.arguments_json}"
    elif call.status == "running":
        return
    else:
        line = f"tool: {where} {call.status}: {' '.join(call.result.split())[:200]}"
    try:
        print(clean(line), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _ask(call) -> str:
    where = f"{call.server}.{call.name}" if call.server else call.name
    while True:
        print(clean(f"Allow {where} {call.arguments_json}?"), "[y]es once, [a]lways for this tool, [n]o: ",
              end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer in ("y", "yes"):
            return "once"
        if answer in ("a", "always"):
            return "always"
        if answer in ("n", "no", ""):
            return "refuse"
