"""The ``atelier`` command: the GUI with no arguments, headless commands otherwise.

Bad input exits with code 2 and one ``error:`` line on stderr; a crashed
engine exits with code 1 and one line. Nothing here imports Qt unless the
GUI is asked for.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    from engines.kv_cache import CACHE_TYPES, DEFAULT_CACHE_TYPE

    cache_help = ", ".join(f"{name} ({info.description})" for name, info in CACHE_TYPES.items())
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier: a private, offline AI studio.")
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

    from desktop.commands.library import add_parser as add_models_parser

    add_models_parser(sub)
    from desktop.commands.image import add_parsers as add_image_parsers

    add_image_parsers(sub)

    doctor = sub.add_parser("doctor", help="describe this machine and the engines available")
    doctor.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from desktop.app import run_gui

        return run_gui()
    if argv == ["--selftest"]:
        try:
            from desktop.commands.selftest import run_selftest

            return run_selftest()
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.code
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "chat":
            from desktop.commands.chat import run_chat

            return run_chat(args)
        if args.command == "models":
            from desktop.commands.library import run_models

            return run_models(args)
        if args.command == "image":
            from desktop.commands.image import run_image

            return run_image(args)
        if args.command == "convert":
            from desktop.commands.image import run_convert

            return run_convert(args)
        if args.command == "doctor":
            from desktop.commands.doctor import run_doctor

            return run_doctor(args)
        parser.print_help()
        return EXIT_BAD_INPUT
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback in the log
        log_file = _log_unexpected()
        print(f"error: unexpected {type(exc).__name__}: {exc} (details in {log_file})", file=sys.stderr)
        return EXIT_FAILED


def _log_unexpected() -> str:
    import traceback

    from engines.paths import app_paths

    path = app_paths().logs / "cli.log"
    with open(path, "a", encoding="utf-8") as log:
        log.write(traceback.format_exc() + "\n")
    return str(path)


def print_json(data: dict) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    sys.exit(main())
