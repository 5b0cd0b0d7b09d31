"""``atelier chat``: one turn with a model, streamed to stdout."""

from __future__ import annotations

import sys

from desktop.cli import EXIT_BAD_INPUT, EXIT_FAILED, CliError, print_json
from desktop.commands.models import resolve_model_path
from engines.api import ChatMessage, FinishedEvent, NoticeEvent, SamplingParams, TextLoadSpec, TextRequest, TokenEvent
from engines.errors import EngineError, ErrorKind
from engines.host import EngineHost
from engines.workspace import open_workspace

_FAILURE_KINDS = {ErrorKind.CRASHED, ErrorKind.INTERNAL}


def run_chat(args) -> int:
    prompt = args.prompt if args.prompt is not None else (sys.stdin.read() if sys.stdin is not None else "")
    if not prompt.strip():
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
    if args.raw:
        request = TextRequest(sampling=sampling, raw_prompt=prompt)
    else:
        messages = ([ChatMessage("system", args.system)] if args.system.strip() else []) + [ChatMessage("user", prompt)]
        request = TextRequest(tuple(messages), sampling, overflow="drop_oldest" if args.drop_oldest else "stop")
    problems = request.validate()
    if problems:
        raise CliError("; ".join(problems))
    if args.ctx < 64:
        raise CliError("--ctx must be at least 64")

    workspace = open_workspace()
    try:
        model_path = resolve_model_path(workspace, args.model, kind="chat")
    except EngineError as exc:  # an unknown id, a model of another kind, a file that is not a model
        raise CliError(exc.message, EXIT_FAILED if exc.kind in _FAILURE_KINDS else EXIT_BAD_INPUT) from None
    except Exception as exc:  # the demo package failed to assemble its file
        raise CliError(f"cannot prepare the model: {exc}", EXIT_FAILED) from None
    spec = TextLoadSpec(str(model_path), context_length=args.ctx, threads=args.threads, gpu_layers=args.gpu_layers,
                        cache_type=args.cache_type)
    host = EngineHost(workspace.engine_log("cli"), role="cli")
    try:
        loaded = host.load("llama_cpp", spec)
        result = None
        for event in host.generate(request):
            if isinstance(event, TokenEvent) and not args.json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, NoticeEvent):
                print(f"note: {event.message}", file=sys.stderr)
            elif isinstance(event, FinishedEvent):
                result = event.result
    except KeyboardInterrupt:
        host.cancel()
        raise
    except EngineError as exc:
        code = EXIT_FAILED if exc.kind in _FAILURE_KINDS else EXIT_BAD_INPUT
        raise CliError(exc.message, code) from None
    finally:
        host.close()
    if args.json:
        data = result.to_dict()
        data["model"] = str(model_path)
        data["template_source"] = "none" if args.raw else loaded.template_source
        data["cache_type"] = loaded.cache_type
        data["flash_attention"] = loaded.flash_attention
        data["kv_cache_bytes"] = loaded.kv_cache_bytes
        print_json(data)
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0
