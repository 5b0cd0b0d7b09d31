"""``atelier chat``: one turn with a model, streamed to stdout.

``--image FILE`` (repeatable) attaches images to the message for a vision
model: the model's projector (``mmproj``) is found beside it
(:func:`engines.library.probes.projector.find_projector`) and loaded with it.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from desktop.cli_contract import EXIT_FAILED, CliError
from desktop.cli_output import model_text_filter, print_json, print_note
from desktop.commands.chat_docs import citations_json, ground_chat, print_sources
from engines.api import ChatMessage, FinishedEvent, NoticeEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineError
from engines.library.demo import DEMO_ID
from engines.library.resolve import resolve_model
from engines.remote import RemoteServers
from engines.workspace import Workspace, open_workspace

# Said whenever the demo is used for a chat: it is a base model, so it continues the prompt instead
# of answering it, which reads as nonsense to anyone expecting an assistant (issue 9).
DEMO_NOTE = ("the demo model (Gemma 3 270M) is a small base model for trying Atelier out: it continues "
             "text rather than following instructions. For real answers, install an instruction-tuned "
             "model: 'atelier models list --catalog' lists them, 'atelier models pull ID' downloads one.")


def read_prompt(args) -> str:
    """``--prompt``, else stdin, which must be UTF-8 (read as bytes, so no locale can mangle it)."""
    if args.prompt is not None:
        return args.prompt
    if sys.stdin is None:
        return ""
    if sys.stdin.isatty():
        print("Type the prompt, then Ctrl-D on a new line:", file=sys.stderr, flush=True)
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8-sig")  # a BOM, as Windows editors write it, is not part of the prompt
    except UnicodeDecodeError as exc:
        raise CliError(f"the text on stdin is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                       "convert it first, e.g. with 'iconv -f latin1 -t utf-8'") from None


def read_images(args) -> tuple[bytes, ...]:
    """The ``--image`` files, each checked (readable, a PNG/JPEG/WebP/BMP within the pixel cap)."""
    from engines.image_input import read_image_file

    paths = getattr(args, "image", None) or []
    if paths and args.raw:
        raise CliError("--image needs the chat template: it cannot be used with --raw")
    try:
        return tuple(read_image_file(Path(p).expanduser(), f"The image {p}") for p in paths)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None


def projector_for(model_path: Path, name: str) -> str:
    """The vision projector beside ``model_path``, or a CliError that says the model cannot see images."""
    from engines.library.probes.projector import find_projector

    found = find_projector(model_path)
    if found is None:
        raise CliError(f"{name} cannot see images: no vision projector (an mmproj .gguf file made for it) is "
                       f"beside it in {model_path.parent}. Use a vision model, or leave out --image.")
    return str(found)


def build_request(args, prompt: str, images: tuple[bytes, ...] = ()) -> TextRequest:
    if not prompt.strip() and not images:
        raise CliError("the prompt is empty: pass --prompt TEXT or pipe the text on stdin")
    sampling = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    from desktop.commands.chat_tools import check_tool_options

    check_tool_options(args)
    if args.json_schema and args.tools:
        raise CliError("--json-schema and --tools cannot be combined: a reply that calls tools is not one JSON answer")
    if args.raw and (args.json_schema or args.tools):
        raise CliError("--raw completes the prompt as it is; --json-schema and --tools need chat mode")
    if args.raw:
        request = TextRequest(sampling=sampling, raw_prompt=prompt)
    else:
        messages = ([ChatMessage("system", args.system)] if args.system.strip() else []) + [
            ChatMessage("user", prompt, images=images)]
        request = TextRequest(tuple(messages), sampling, overflow="drop_oldest" if args.drop_oldest else "stop")
    if args.json_schema:
        from desktop.commands.chat_tools import read_json_schema

        request = replace(request, json_schema=read_json_schema(args.json_schema))
    problems = request.validate()
    if problems:
        raise CliError("; ".join(problems))
    if args.ctx < 64:
        raise CliError("--ctx must be at least 64")
    return request


def is_demo(workspace: Workspace, model_path: Path) -> bool:
    """Whether ``model_path`` is the bundled demo's file, however the user named it (id, prefix or path)."""
    demo = workspace.models.get(DEMO_ID)
    if demo is None:
        return False
    try:
        return Path(demo.path).resolve() == model_path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: not the demo, and the load says what is wrong
        return False


def run_chat(args) -> int:
    images = read_images(args)
    request = build_request(args, read_prompt(args) if args.prompt is not None or not images else "", images)
    workspace = open_workspace()
    servers = RemoteServers.beside(workspace.models.file)
    try:
        resolved = resolve_model(args.model, workspace.models, kind="chat", remotes=servers)
        remote = resolved.remote  # NAME/MODEL on a remote server ('atelier remote add'), or None
        model_path = resolved.local_path() if remote is None else None
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    except Exception as exc:  # the demo package failed to assemble its file
        raise CliError(f"cannot prepare the model: {exc}", EXIT_FAILED) from None
    # A base model is what --raw asks for; in chat mode the user expects an assistant, so say what they have.
    note = DEMO_NOTE if not args.raw and remote is None and is_demo(workspace, model_path) else None
    if note and not args.json:
        print_note(note)
    if remote is not None and images:
        raise CliError(f"--image works with local vision models; '{remote.id}' runs on a remote server")
    if remote is not None:  # the server loads it: --ctx and the other load options are its own
        engine, spec = "remote", remote.spec
    else:
        engine = "llama_cpp"
        name = resolved.installed.id if resolved.installed is not None else model_path.name
        spec = TextLoadSpec(str(model_path), context_length=args.ctx, threads=args.threads,
                            gpu_layers=args.gpu_layers, cache_type=args.cache_type,
                            projector=projector_for(model_path, name) if images else None)
    # Through the scheduler like every front end: the same memory check before loading as the GUI and the server.
    scheduler = workspace.scheduler(idle_unload_s=None, roles={"llama_cpp": "cli"})
    host = scheduler.host_for("cli")
    show = model_text_filter(sys.stdout)
    tools = None
    try:
        if args.tools:
            from desktop.commands.chat_tools import run_tool_reply, tool_servers

            servers = tool_servers(workspace, args.tools)
        grounding, request = ground_chat(args, workspace, scheduler, request) if args.docs else (None, request)
        loaded = host.load(engine, spec)
        result = None
        if args.tools:  # the tool loop: its own steps, the calls on stderr, the answer streamed like any reply
            tools = run_tool_reply(args, host, request, servers, show, workspace,
                                   image_host=lambda: scheduler.host_for("cli-image"),
                                   tool_format=getattr(loaded, "tool_format", None))
            result = tools.result
        for event in host.generate(request) if tools is None else ():
            if isinstance(event, TokenEvent) and not args.json:
                sys.stdout.write(show(event.text))
                sys.stdout.flush()
            elif isinstance(event, NoticeEvent):
                print_note(event.message)
            elif isinstance(event, FinishedEvent):
                result = event.result
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, or the reader of stdout went away (| head)
        host.cancel()
        raise
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    finally:
        scheduler.shutdown()
    if args.json:
        data = result.to_dict()
        if tools is not None:
            from desktop.commands.chat_tools import calls_json

            data.update(text=tools.text, tool_calls=calls_json(tools.calls), tool_mode=tools.mode)
        data["model"] = remote.id if remote is not None else str(model_path)
        if grounding is not None:
            data.update(citations_json(grounding))
        data["template_source"] = "none" if args.raw else loaded.template_source
        data["cache_type"] = loaded.cache_type
        data["flash_attention"] = loaded.flash_attention
        data["kv_cache_bytes"] = loaded.kv_cache_bytes
        if images:
            data["projector"] = spec.projector
        if note:
            data["note"] = note
        print_json(data)
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
        if grounding is not None:
            print_sources(grounding)
    return 0
