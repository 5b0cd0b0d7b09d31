"""``atelier upscale IN``: an image made 2 or 4 times larger by an ESRGAN-family upscaler.

The upscaler runs in an engine host through the one scheduler, like every
engine (``esrgan``: :mod:`engines.diffusion.upscale`), tiled so memory is
bounded at any size. Bad input (the image, the model, ``--out``) is
refused with one ``error:`` line and exit 2 before the engine starts. The
result keeps the source's generation parameters and records the upscale
step; it gets Content Credentials that name the source as its parent
(unless ``--no-credentials``). Without ``--out`` it is written beside the
source as ``NAME-x4.png``, never over an existing file. Ctrl-C stops the
upscale (exit 130) and writes nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from desktop.cli_contract import EXIT_FAILED, CliError
from desktop.cli_output import clean, print_json
from engines.errors import EngineError

ROLE = "cli-upscale"  # the engine host's log name (engine-host-cli-upscale.log)


def add_parser(sub) -> None:
    from engines.diffusion.upscale_types import MAX_TILE, MIN_TILE, SCALES

    up = sub.add_parser("upscale", help="make an image larger with an ESRGAN upscaler (Real-ESRGAN and kin)")
    up.add_argument("input_image", metavar="IN", help="the image to upscale (PNG, JPEG, WebP or BMP)")
    up.add_argument("--scale", type=int, choices=SCALES,
                    help="how many times larger on each side (default: the upscaler's own, e.g. 4)")
    up.add_argument("--model", help="an installed upscaler's id or an ESRGAN .safetensors file "
                                    "(default: the installed upscaler that fits --scale best)")
    up.add_argument("--out", help="where to write the PNG (default: IN's folder, as NAME-x4.png)")
    up.add_argument("--tile", type=int, default=0,
                    help=f"tile edge in source pixels, {MIN_TILE}-{MAX_TILE} (default: chosen from free memory)")
    up.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    up.add_argument("--no-credentials", action="store_true",
                    help="leave out the Content Credentials (the signed C2PA manifest) for this run")
    up.add_argument("--json", action="store_true", help="print one JSON line with the result")


def run_upscale(args) -> int:
    from engines.diffusion.upscale import ENGINE
    from engines.diffusion.upscale_types import UpscaleRequest
    from engines.images.upscale_job import run_upscale
    from engines.images.init_image import read_init_image
    from engines.workspace import open_workspace

    source = Path(args.input_image).expanduser()
    try:
        data = read_init_image(source, role="image to upscale")
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    request = UpscaleRequest(image=data, scale=args.scale, tile=args.tile, source_name=source.name)
    problems = request.validate()
    if problems:
        raise CliError("; ".join(problems))
    workspace = open_workspace()
    model_path, model_name = _choose_model(args.model, args.scale, workspace.models)
    target = _target(args.out, source, args.scale, model_path)
    scheduler = workspace.scheduler(idle_unload_s=None, roles={ENGINE: ROLE})
    host = scheduler.host_for("cli")
    tty = sys.stderr.isatty() and not args.json
    try:
        with _ctrl_c_cancels(host):
            info, result = run_upscale(host, model_path, request, args.precision, _progress if tty else None)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    finally:
        scheduler.shutdown()
        if tty:
            sys.stderr.write("\r\x1b[K")
    png, signed, notices = _credentials(result, data, workspace, args.no_credentials)
    for notice in notices:
        print(f"warning: {clean(notice)}", file=sys.stderr, flush=True)
    _write(target, png)
    if args.json:
        print_json({"path": str(target), "width": result.width, "height": result.height, "scale": result.scale,
                    "source_width": result.source_width, "source_height": result.source_height,
                    "model": model_name, "passes": result.passes, "tiles": result.tiles, "tile": result.tile,
                    "device": result.device, "dtype": result.dtype, "seconds": result.seconds,
                    "layout": getattr(info, "layout", None), "credentials": signed})
    else:
        print(f"{clean(str(target))}  ({result.source_width}×{result.source_height} → "
              f"{result.width}×{result.height}, {clean(result.model_name)})", flush=True)
    return 0


def _choose_model(text: str | None, scale: int | None, models) -> tuple[Path, str]:
    """The upscaler file ``--model`` names, or the installed one whose own scale suits ``scale`` best."""
    from engines.library.resolve import resolve_model

    if text:
        try:
            found = resolve_model(text, models, kind="upscaler")
            path = found.local_path()
        except EngineError as exc:
            raise CliError.from_engine(exc) from None
        return path, found.installed.id if found.installed is not None else path.name
    installed = models.runnable("upscaler")
    if not installed:
        raise CliError("no upscaler is installed: pass --model with an ESRGAN .safetensors file, or add one with "
                       "'atelier models import FILE' (see 'atelier models list --catalog' for Real-ESRGAN)")

    from engines.library.upscaler_choice import best_upscaler  # the one choice, shared with the Images page

    best = best_upscaler(installed, scale)
    return Path(best.path), best.id


def _target(out: str | None, source: Path, scale: int | None, model_path: Path) -> Path:
    """``--out`` checked as ``atelier image`` checks it; else ``NAME-xS.png`` beside the source, never over a file."""
    from desktop.commands.image import output_paths

    if out:
        return output_paths(Path(out).expanduser(), 1)[0]
    if scale is None:
        from engines.library.upscaler_choice import upscaler_scale

        scale = upscaler_scale(model_path)
    base = source.with_name(f"{source.stem}-x{scale}.png")
    candidate, n = base, 2
    while candidate.exists() or candidate.is_symlink():
        candidate, n = base.with_name(f"{base.stem}-{n}.png"), n + 1
    return output_paths(candidate, 1)[0]


def _progress(message: str) -> None:
    sys.stderr.write(f"\r{message}   ")
    sys.stderr.flush()


def _credentials(result, source: bytes, workspace, off: bool) -> tuple[bytes, bool, tuple[str, ...]]:
    """The PNG signed as an edit of ``source`` (engines.images.upscale_job, shared with the Images page)."""
    from engines.images.upscale_job import sign_upscaled

    signed = sign_upscaled(result, source, workspace.paths.config, off)
    return signed.png, signed.signed, signed.notices


def _write(target: Path, png: bytes) -> None:
    from engines.storage import atomic_write_bytes

    try:
        atomic_write_bytes(target, png)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}", EXIT_FAILED) from None


@contextlib.contextmanager
def _ctrl_c_cancels(host):
    """The first Ctrl-C stops the upscale (the engine stops within a block); a second one quits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = threading.Event()

    def on_sigint(_signum, _frame) -> None:
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()
        host.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
