"""The ``atelier`` command: the GUI with no arguments, headless commands otherwise.

Every command, ``--selftest`` included, runs under one guard that keeps the
contract of :mod:`desktop.cli_contract`: one ``error:`` line and exit 2 for
bad input, exit 1 for a failure, 130 for Ctrl-C, a quiet end when the
reader of stdout goes away (``| head``), and never a traceback (it goes to
``cli.log`` when the log folder can take it). Nothing here imports Qt
unless the GUI is asked for. This module imports the commands; the commands
import only ``cli_contract`` and ``cli_output``, never this module.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from typing import Callable

from desktop.cli_contract import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, CliError, exit_code_for
from desktop.cli_output import clean, print_error
from engines.errors import EngineError

# Options that name files or folders: any bytes are a valid name on Linux, so they may hold
# undecodable bytes. Every other text option must be valid UTF-8 (it becomes a prompt, an id, a URL).
_PATH_OPTIONS = frozenset({"model", "path", "src", "dst", "out", "embedding_model", "init_image", "input_image", "json_schema", "vae"})


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line and exit 2, like every other bad input."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    from engines.kv_cache import CACHE_TYPES, DEFAULT_CACHE_TYPE

    cache_help = ", ".join(f"{name} ({info.description})" for name, info in CACHE_TYPES.items())
    parser = _Parser(prog="atelier", description="Atelier: a private, offline AI studio. "
                     "With no arguments, opens the window; '--selftest' checks the install.")
    sub = parser.add_subparsers(dest="command")

    chat = sub.add_parser("chat", help="chat with a GGUF model and stream the reply to stdout")
    chat.add_argument("--model", required=True, help="a .gguf file, or the id of an installed model (e.g. demo)")
    chat.add_argument("--prompt", help="the message; read from stdin when absent")
    chat.add_argument("--system", default="", help="a system prompt")
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--temperature", type=float, default=0.7)
    chat.add_argument("--top-p", type=float, default=0.95)
    chat.add_argument("--top-k", type=int, default=40)
    chat.add_argument("--min-p", type=float, default=0.05)
    chat.add_argument("--repeat-penalty", type=float, default=1.1)
    chat.add_argument("--seed", type=int)
    chat.add_argument("--ctx", type=int, default=4096, help="context length in tokens")
    chat.add_argument("--cache-type", choices=list(CACHE_TYPES), default=DEFAULT_CACHE_TYPE,
                      help=f"the context cache: {cache_help}; a quantized cache turns on flash attention")
    chat.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    chat.add_argument("--gpu-layers", type=int, help="layers to offload to the GPU (default: all when possible)")
    chat.add_argument("--raw", action="store_true", help="complete the prompt as it is, without the chat template")
    chat.add_argument("--json", action="store_true", help="print one JSON line with the reply and its figures")
    chat.add_argument("--drop-oldest", action="store_true", help="(with a long --system) drop what does not fit instead of stopping")
    chat.add_argument("--docs", metavar="NAME", help="answer from this document collection ('atelier docs add'), with its sources")
    chat.add_argument("--json-schema", metavar="FILE", help="the reply must be JSON matching this JSON schema "
                      "(enforced token by token by a llama.cpp grammar)")
    chat.add_argument("--tools", metavar="SERVER[,SERVER]", help="let the model call the tools of these MCP servers "
                      "('atelier tools list')")
    chat.add_argument("--allow-tools", action="store_true", help="allow every tool call without asking (needed to "
                      "allow calls in a non-interactive run)")
    chat.add_argument("--tool-choice", choices=("auto", "required"), default="auto",
                      help="'required': the model's first step must call a tool (default: it decides)")
    chat.add_argument("--max-tool-calls", type=int, default=8, metavar="N",
                      help="at most N tool calls in the reply (1 to 8; default 8), then the model must answer")
    chat.add_argument("--image", action="append", metavar="FILE",
                      help="attach an image (PNG, JPEG, WebP, BMP) for a vision model, whose mmproj file is beside it; repeatable")

    from desktop.commands.library import add_parser as add_models_parser

    add_models_parser(sub)
    from desktop.commands.image import add_parsers as add_image_parsers

    add_image_parsers(sub)
    from desktop.commands.upscale import add_parser as add_upscale_parser

    add_upscale_parser(sub)
    from desktop.commands.remote import add_parser as add_remote_parser

    add_remote_parser(sub)

    from desktop.commands.tools import add_parser as add_tools_parser

    add_tools_parser(sub)

    from desktop.commands.serve import add_parser as add_serve_parser

    add_serve_parser(sub)

    from desktop.commands.docs import add_parser as add_docs_parser

    add_docs_parser(sub)

    doctor = sub.add_parser("doctor", help="describe this machine and the engines available")
    doctor.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--engine-host"]:  # the frozen app starting its own engine host (engines/host/launch.py)
        from engines.host.standalone import main as engine_host_main

        return engine_host_main(argv[1:])
    if not argv:
        return _run_gui()
    _never_fail_on_unprintable_text()
    if argv == ["--selftest"]:
        return _guarded(_selftest)
    return _guarded(lambda: _dispatch(argv))


def _run_gui() -> int:
    from desktop.app import run_gui  # first: its start-up clock includes creating the application
    from desktop.gui_start import create_application

    create_application(sys.argv)  # a missing system library is named in words, not in Qt's misleading ones
    return run_gui()


def _selftest() -> int:
    _require_profile()
    from desktop.commands.selftest import run_selftest

    return run_selftest()


def _dispatch(argv: list[str]) -> int:
    from desktop.commands.tools import split_server_command

    parser = build_parser()
    argv, server_command = split_server_command(argv)  # 'tools add NAME -- COMMAND...': the command is not parsed
    args = parser.parse_args(argv)
    args.server_command = server_command
    if args.command is None:
        raise CliError(f"no command given (see '{parser.prog} --help')")
    _require_utf8_text(args, parser)
    _require_profile()
    if args.command == "chat":
        from desktop.commands.chat import run_chat

        return run_chat(args)
    if args.command == "models":
        from desktop.commands.library import run_models

        return run_models(args)
    if args.command == "image":
        from desktop.commands.image import run_image

        return run_image(args)
    if args.command == "upscale":
        from desktop.commands.upscale import run_upscale

        return run_upscale(args)
    if args.command == "convert":
        from desktop.commands.image import run_convert

        return run_convert(args)
    if args.command == "remote":
        from desktop.commands.remote import run_remote

        return run_remote(args)
    if args.command == "tools":
        from desktop.commands.tools import run_tools

        return run_tools(args)
    if args.command == "serve":
        from desktop.commands.serve import run_serve

        return run_serve(args)
    if args.command == "docs":
        from desktop.commands.docs import run_docs

        return run_docs(args)
    from desktop.commands.doctor import run_doctor

    return run_doctor(args)


def _guarded(command: Callable[[], int]) -> int:
    """Run a command under the contract; whatever it raises becomes one line and an exit code."""
    try:
        code = command()
        sys.stdout.flush()  # a reader that went away shows up here, not in the interpreter's exit
        return code
    except CliError as exc:
        print_error(str(exc))
        return exc.code
    except EngineError as exc:  # a command let one through: its kind still decides the exit code
        print_error(exc.message)
        return exit_code_for(exc.kind)
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if _stdout_reader_gone():
            return _end_like_a_unix_tool()
        return _failed(exc)
    except Exception as exc:  # OSError (a folder we cannot write, a file that vanished) or a bug
        return _failed(exc)


def _failed(exc: BaseException) -> int:
    """One line for the user; the traceback goes to the log when the log can be written."""
    log_file = _log_traceback()
    where = f" (details in {log_file})" if log_file else ""
    if isinstance(exc, OSError) and exc.strerror:
        names = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
        print_error(f"{names + ': ' if names else ''}{exc.strerror}{where}")  # as Unix tools say it: "path: reason"
    else:
        print_error(f"unexpected {type(exc).__name__}: {exc}{where}")
    return EXIT_FAILED


def _log_traceback() -> str | None:
    """Append the current traceback to ``logs/cli.log``. Best effort: the profile may be what failed."""
    try:
        import traceback

        from engines.paths import app_paths

        path = app_paths().logs / "cli.log"
        with open(path, "a", encoding="utf-8") as log:
            log.write(traceback.format_exc() + "\n")
        return str(path)
    except Exception:  # an unusable ATELIER_HOME or log folder: the one line is all we can give
        return None


def _require_profile() -> None:
    """Create the profile's folders now, so an unusable one is one clear line, not an error deep in a command.

    With ``ATELIER_HOME`` set, the user chose the folder: a bad one is bad input (2). Without it,
    the system's own folders failed: that is a failure (1).
    """
    from engines.paths import HOME_ENV, app_paths

    try:
        app_paths()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        folder = exc.filename if exc.filename is not None else "?"
        home = os.environ.get(HOME_ENV)
        if home:
            raise CliError(f"cannot use {HOME_ENV}={home} for Atelier's files: {folder}: {reason}; "
                           f"set {HOME_ENV} to a folder you can write to", EXIT_BAD_INPUT) from None
        raise CliError(f"cannot create Atelier's folder {folder}: {reason}; set {HOME_ENV} to a folder "
                       "you can write to", EXIT_FAILED) from None


def _require_utf8_text(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Text options must be UTF-8; on Linux, Python keeps undecodable argv bytes as lone surrogates."""
    for name, value in vars(args).items():
        if not isinstance(value, str) or name in _PATH_OPTIONS:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(value[exc.start]) - 0xDC00 if 0xDC80 <= ord(value[exc.start]) <= 0xDCFF else None
            what = f"byte 0x{byte:02x}" if byte is not None else f"character {clean(value[exc.start])}"
            label = name.upper() if name in _positional_names(parser) else f"--{name.replace('_', '-')}"
            raise CliError(f"{label} is not valid UTF-8 text ({what} at position {exc.start}); pass UTF-8 text") from None


def _positional_names(parser: argparse.ArgumentParser) -> set[str]:
    """The arguments given without an option name (``models pull SOURCE``), in every subcommand."""
    names: set[str] = set()
    for action in parser._actions:
        if not action.option_strings:
            names.add(action.dest)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names |= _positional_names(sub)
    return names


def _never_fail_on_unprintable_text() -> None:
    """A terminal or pipe whose encoding cannot show a character gets an escape, never an exception."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # replaced, detached or closed streams
            pass


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reading end was closed, as after ``| head``."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout: trust the error
        return True


def _end_like_a_unix_tool() -> int:
    """The reader of stdout is gone: end at once and quietly, with the status a shell shows for ``cat`` there.

    That status is 141, 128 + SIGPIPE. The process exits with it rather than killing itself with
    the signal, so the interpreter still shuts down properly (its exit handlers run). The command's own
    clean-up (the engine host's shutdown) already ran while the error rose; pointing stdout at
    /dev/null keeps the interpreter from a second failed flush on the way out.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    return 128 + 13  # SIGPIPE is 13 on every Unix; Windows has no SIGPIPE and the code still means "pipe closed"


if __name__ == "__main__":
    sys.exit(main())
