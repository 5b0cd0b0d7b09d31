"""``atelier serve``: the OpenAI- and Anthropic-compatible API, headless.

It needs no display and never imports Qt: it is the engines' scheduler and
:class:`engines.server.ApiServer`, run until Ctrl-C or SIGTERM. ``--model``
preloads models (with their saved load settings, ``--ctx`` overriding the
context length) before the first request, so the first answer does not
wait for a load. Each request is printed on stderr as one line without its
text; uvicorn's own messages go to ``server.log`` in the logs folder.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from desktop.cli_contract import EXIT_FAILED, CliError
from desktop.cli_output import clean, print_note
from engines.errors import EngineError

PRELOAD_CLIENT = "serve"


def add_parser(sub) -> None:
    from engines.server.config import DEFAULT_HOST, DEFAULT_PORT
    from engines.server.token import TOKEN_ENV

    serve = sub.add_parser("serve", help="serve the OpenAI and Anthropic APIs to other apps (headless)",
                           description="Serve the installed models over OpenAI's and Anthropic's HTTP APIs. "
                           "Loopback only and a token required unless told otherwise.")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this "
                       "machine only; 0.0.0.0 reaches the network and needs the token)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--model", action="append", default=[], metavar="ID",
                       help="load this model before serving (repeatable); any installed model is served anyway")
    serve.add_argument("--ctx", type=int, help="context length for the chat models (default: each model's saved one)")
    serve.add_argument("--api-key-env", default=TOKEN_ENV, metavar="VAR",
                       help=f"environment variable holding the API token (default {TOKEN_ENV}); when it is "
                       "unset, a generated token kept in the config folder is used")
    serve.add_argument("--show-token", action="store_true", help="print the API token and exit")
    serve.add_argument("--no-token", action="store_true",
                       help="accept requests without a token (loopback only: any program on this machine can use it)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let web pages from this exact origin call the API, e.g. http://localhost:3000 "
                       "(repeatable; never *)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="another name clients use for this machine in the Host header (repeatable)")
    serve.add_argument("--max-queue", type=int, default=16, metavar="N",
                       help="requests that may wait for their turn; more get 429 with Retry-After (default 16)")


def run_serve(args) -> int:
    from engines.server import api_token
    from engines.workspace import open_workspace

    workspace = open_workspace()
    try:
        token, token_source = api_token(workspace.paths.config, args.api_key_env)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    if args.show_token:
        print(token)
        return 0
    config = _config(args, None if args.no_token else token)
    if args.ctx is not None and args.ctx < 64:
        raise CliError("--ctx must be at least 64")
    if args.max_queue < 1:
        raise CliError("--max-queue must be at least 1")
    _log_to(workspace.paths.logs / "server.log")
    directory = _directory(workspace, args.ctx)
    preloads = [_preload_target(workspace, directory, text) for text in args.model]

    scheduler = workspace.scheduler(max_queue=args.max_queue)
    stop = threading.Event()
    try:
        for served in preloads:
            _preload(scheduler, served)
        from engines.server import ApiServer

        server = ApiServer(scheduler, directory, config=config)
        try:
            server.start()
        except EngineError as exc:
            raise CliError.from_engine(exc) from None
        _announce(server, token_source, args)
        with _stops_on_signals(stop):
            while not stop.wait(0.5):
                pass
        print_note("stopping")
        server.stop()
    finally:
        scheduler.shutdown()
    return 0


def _config(args, token: str | None):
    from engines.server import ServerConfig

    config = ServerConfig(host=args.host, port=args.port, token=token, extra_hosts=tuple(args.allow_host),
                          cors_origins=tuple(args.cors_origin))
    try:
        config.validate()
    except EngineError as exc:
        raise CliError(exc.message) from None
    return config


def _directory(workspace, ctx: int | None):
    from engines.remote import RemoteServers
    from engines.server import ModelDirectory

    return ModelDirectory(workspace.models, workspace.settings, context_length=ctx,
                          remotes=RemoteServers.beside(workspace.models.file))


def _preload_target(workspace, directory, text: str):
    """The served model ``--model TEXT`` names (the one resolver: id, prefix, or an installed model's path)."""
    from engines.library.resolve import resolve_model
    from engines.server.errors import ApiError

    try:
        resolved = resolve_model(text, workspace.models)
    except EngineError as exc:
        raise CliError.from_engine(exc, "--model: ") from None
    if resolved.installed is None and resolved.path is not None:
        raise CliError(f"--model: {clean(text)} is not an installed model; add it first with "
                       f"'atelier models import {clean(text)}', then serve it by its id")
    name = resolved.installed.id if resolved.installed is not None else text
    try:
        return directory.find(name, resolved.installed.kind if resolved.installed is not None else "chat")
    except ApiError as exc:
        raise CliError(f"--model: {exc.message}") from None


def _preload(scheduler, served) -> None:
    from engines.scheduler import Work

    print_note(f"loading {clean(served.id)}")
    ticket = scheduler.submit(Work(served.engine, served.spec), PRELOAD_CLIENT, bounded=False)
    try:
        ticket.wait()
    except EngineError as exc:
        raise CliError.from_engine(exc, f"cannot load {served.id}: ") from None
    except KeyboardInterrupt:
        ticket.cancel()
        raise


def _announce(server, token_source: str, args) -> None:
    from engines.server.config import is_loopback, network_warning

    print(f"Atelier API at {server.url}  (OpenAI and Anthropic clients: use it as the base URL)", flush=True)
    if server.token is None:
        print_note("no token: any program on this machine can use the API")
    elif token_source.startswith("$"):
        print(f"API token: from {token_source}", flush=True)
    else:
        print(f"API token: in {clean(token_source)}; 'atelier serve --show-token' prints it", flush=True)
    if not is_loopback(args.host):
        print_note(network_warning(clean(args.host)))
    for origin in args.cors_origin:
        print_note(f"web pages from {clean(origin)} may call the API")
    print("Ctrl-C stops the server.", file=sys.stderr, flush=True)


class _RequestLines(logging.Formatter):
    """The request log's one line per request, and any other message without its traceback (that goes to the file)."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(record.getMessage())


def _log_to(log_file) -> None:
    """Request lines on stderr; uvicorn's and the server's details (tracebacks included) in ``log_file``."""
    try:
        details = logging.FileHandler(log_file, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write the server log {clean(log_file)}: {exc.strerror or exc}", EXIT_FAILED) from None
    details.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_RequestLines())
    for name, level, handlers in (("atelier.server", logging.INFO, (stderr, details)),
                                  ("uvicorn", logging.WARNING, (details,)),
                                  ("engines", logging.INFO, (details,))):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        for handler in handlers:
            logger.addHandler(handler)


class _stops_on_signals:
    """Within the block, SIGINT (Ctrl-C) and SIGTERM set ``stop`` instead of killing the process."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, lambda *_: self._stop.set())
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
