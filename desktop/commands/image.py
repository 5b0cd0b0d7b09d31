"""``atelier image`` and ``atelier convert onnx``: images from a terminal.

The model runs in an engine host like chat does, so torch, diffusers and
onnxruntime are imported only there. Bad input (``--out`` and the init
image included) is refused with exit code 2 and one ``error:`` line before
anything is generated. Each image is written the moment the engine
finishes it, ``--out`` first and then the gallery, so Ctrl-C, a crash or an
unwritable gallery never costs a finished image; the command says what it
kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import tempfile
import threading
from pathlib import Path

from desktop.cli_contract import EXIT_FAILED, EXIT_INTERRUPTED, CliError, exit_code_for
from desktop.cli_output import clean, print_json
from engines.errors import EngineError


def add_parsers(sub) -> None:
    image = sub.add_parser("image", help="make an image from a prompt (txt2img or img2img)")
    image.add_argument("--model", required=True, help="a diffusers or ONNX model folder, or an installed model id")
    image.add_argument("--prompt", required=True)
    image.add_argument("--negative", default="", help="the negative prompt")
    image.add_argument("--steps", type=int, default=20)
    image.add_argument("--guidance", type=float, default=7.0)
    image.add_argument("--width", type=int, default=512)
    image.add_argument("--height", type=int, default=512)
    image.add_argument("--seed", type=int)
    image.add_argument("--scheduler", default="Euler", help="Euler, 'Euler a', 'DPM++ 2M Karras', DDIM or LCM")
    image.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"))
    image.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    image.add_argument("--batch", type=int, default=1, help="how many images, with consecutive seeds")
    image.add_argument("--init-image", help="an image to start from (img2img)")
    image.add_argument("--strength", type=float, default=0.75, help="img2img: how much of the init image to replace")
    image.add_argument("--out", help="where to write the PNG (default: the gallery folder)")
    image.add_argument("--json", action="store_true", help="print one JSON line with the result")

    convert = sub.add_parser("convert", help="convert a model to another format")
    kinds = convert.add_subparsers(dest="target", required=True)
    onnx = kinds.add_parser("onnx", help="a diffusers folder to an ONNX Runtime folder")
    onnx.add_argument("src")
    onnx.add_argument("dst")


def _resolve(model: str) -> tuple[Path, str | None]:
    """The model folder for ``--model`` and, when it names an installed model, that model's id.

    The one resolver (``engines.library.resolve``): ids, unique prefixes and paths, as every command takes them.
    """
    from engines.library.resolve import resolve_model
    from engines.workspace import open_workspace

    try:
        found = resolve_model(model, open_workspace().models, kind="image")
        return found.local_path(), (found.installed.id if found.installed is not None else None)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None


def output_paths(out: Path, count: int) -> list[Path]:
    """Where ``--out`` puts each image of the batch, checked before anything is generated.

    One image goes to ``out`` itself, a batch to ``<stem>-1.png``,
    ``<stem>-2.png``... The folder is created and a probe file written and
    removed, so a path that cannot be written (a read-only folder,
    ``/proc/self/x.png``, a folder where a file should be) fails now, not
    after minutes of generating.
    """
    if out.suffix.lower() != ".png":
        raise CliError(f"--out must name a .png file (got {out})")
    targets = [out] if count == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, count + 1)]
    for target in targets:
        if target.is_dir():
            raise CliError(f"--out {target} is a folder; name a .png file inside it")
        if target.exists() and not target.is_file():
            raise CliError(f"--out {target} exists and is not a regular file")
    folder = out.parent
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--out {out} is inside {folder}, which is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".atelier-probe-", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CliError(f"cannot write to the folder {folder} of --out: {exc.strerror or exc}") from None
    return targets


class ImageKeeper:
    """Saves each image the moment the engine reports it: ``--out`` first, then the gallery.

    The gallery is a convenience here, the image is the point: a gallery
    whose database cannot be used (corrupt, read-only) still gets the PNG
    file, and a gallery that cannot be written at all (a full data disk)
    costs a warning when ``--out`` has the image, never the image.
    """

    def __init__(self, workspace, targets: list[Path], record: dict, announce) -> None:
        from engines.images.gallery import open_gallery

        self.images_dir = workspace.paths.data / "images"
        self.targets = targets
        self.record = record
        self.announce = announce  # called with each kept image's summary, as it is kept
        self.kept: list[dict] = []
        self.lost: list[str] = []  # one sentence per image that could not be written anywhere asked for
        self._warned: set[str] = set()
        self.gallery = open_gallery(workspace.paths.database, self.images_dir)
        if self.gallery.problem:
            where = f"--out and {self.images_dir}" if targets else str(self.images_dir)
            self.warn(f"{self.gallery.problem}; images are written to {where} without a gallery entry")

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            print(f"warning: {clean(message)}", file=sys.stderr, flush=True)

    def keep(self, image, index: int, model_name: str, backend: str) -> None:
        from engines.images.gallery import NotIndexed
        from engines.storage import atomic_write_bytes

        path = None
        if self.targets:
            target = self.targets[index]
            try:
                path = atomic_write_bytes(target, image.png)
            except OSError as exc:
                self.lost.append(f"could not write {target}: {exc.strerror or exc}")
        stored = None
        try:
            stored = Path(self.gallery.save(image.png, self.record, seed=image.seed, width=image.width,
                                            height=image.height, model=model_name, backend=backend).path)
        except NotIndexed as exc:
            stored = exc.path
            self.warn(f"the gallery index could not be updated ({exc.cause}); the image files are kept")
        except (sqlite3.Error, OSError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc)
            if self.targets:
                self.warn(f"the image could not be added to the gallery ({detail})")
            else:
                self.lost.append(f"could not write the image to {self.images_dir}: {detail}")
        path = path or stored
        if path is None:
            return
        item = {"path": str(path), "seed": image.seed, "width": image.width, "height": image.height}
        if self.targets and stored is not None:
            item["gallery_path"] = str(stored)
        self.kept.append(item)
        self.announce(item)

    def close(self) -> None:
        self.gallery.close()


def run_image(args) -> int:
    from engines.api import FinishedEvent
    from engines.images.init_image import read_init_image
    from engines.diffusion.types import ImageDoneEvent, ImageLoadSpec, ImageRequest, StepEvent
    from engines.images.gallery import request_record
    from engines.workspace import open_workspace

    init = None
    if args.init_image is not None:
        try:
            init = read_init_image(Path(args.init_image).expanduser())
        except EngineError as exc:
            raise CliError(exc.message) from None
    request = ImageRequest(
        prompt=args.prompt, negative_prompt=args.negative, width=args.width, height=args.height, steps=args.steps,
        guidance=args.guidance, scheduler=args.scheduler, seed=args.seed, batch_count=args.batch,
        init_image=init, strength=args.strength, preview_every=0,
    )
    problems = request.validate()
    if problems:
        raise CliError("; ".join(problems))
    targets = output_paths(Path(args.out).expanduser(), request.batch_count) if args.out else []
    workspace = open_workspace()
    model_path, model_id = _resolve(args.model)
    spec = ImageLoadSpec(str(model_path), backend=args.backend, dtype=args.precision)
    tty = sys.stderr.isatty() and not args.json

    def announce(item: dict) -> None:
        if tty:
            sys.stderr.write("\r\x1b[K")  # clear the progress line before the path is printed
        if not args.json:
            print(f"{clean(item['path'])}  (seed {item['seed']})", flush=True)

    keeper = ImageKeeper(workspace, targets, request_record(request, spec.model_path, spec.backend, model_id), announce)
    # Through the scheduler like every front end (the private image engine's Python when one is installed).
    scheduler = workspace.scheduler(idle_unload_s=None, roles={"diffusers": "cli-image", "onnxruntime": "cli-image"})
    host = scheduler.host_for("cli")
    interrupted = threading.Event()
    result = info = None
    try:
        info = host.load("diffusers", spec)
        with _ctrl_c_cancels(host, interrupted):
            try:
                for event in host.generate(request):
                    if isinstance(event, ImageDoneEvent):
                        keeper.keep(event.image, event.image_index, info.name, info.backend)
                    elif isinstance(event, StepEvent) and tty:
                        eta = f", {event.eta_s:.0f} s left" if event.eta_s else ""
                        sys.stderr.write(f"\rimage {event.image_index + 1}/{event.batch_count}: "
                                         f"step {event.step}/{event.total}{eta}   ")
                        sys.stderr.flush()
                    elif isinstance(event, FinishedEvent):
                        result = event.result
            except EngineError:
                if not interrupted.is_set():  # Ctrl-C reached the engine process too, and ended it
                    raise
    except EngineError as exc:
        raise CliError(_with_kept(exc.message, keeper), exit_code_for(exc.kind)) from None
    finally:
        scheduler.shutdown()
        keeper.close()
        if tty:
            sys.stderr.write("\n")
    cancelled = interrupted.is_set() or result is None or result.cancelled
    if args.json:
        print_json({
            "images": keeper.kept, "backend": info.backend, "device": getattr(result, "device", info.device),
            "dtype": getattr(result, "dtype", info.dtype), "model": info.name,
            "seconds": round(result.seconds, 3) if result else None,
            "seconds_per_step": round(result.seconds_per_step, 4) if result else None,
            "steps": request.steps, "scheduler": request.scheduler, "cancelled": cancelled,
        })
    if keeper.lost:
        raise CliError(_with_kept("; ".join(keeper.lost), keeper), EXIT_FAILED)
    if cancelled:
        raise CliError(_with_kept(f"interrupted after {len(keeper.kept)} of {request.batch_count} images", keeper),
                       EXIT_INTERRUPTED)
    return 0


def _with_kept(message: str, keeper: ImageKeeper) -> str:
    """``message`` plus which finished images were kept, so an error line never hides saved work."""
    if not keeper.kept:
        return message
    paths = ", ".join(item["path"] for item in keeper.kept)
    return f"{message}; kept {len(keeper.kept)} finished image{'s' if len(keeper.kept) != 1 else ''}: {paths}"


@contextlib.contextmanager
def _ctrl_c_cancels(host, interrupted: threading.Event):
    """While images are made, the first Ctrl-C cancels the run (finished images are kept); a second one quits.

    The engine stops within a step and every image it finished has already
    been written, so nothing made is lost. Only the main thread can own
    signal handlers; elsewhere Ctrl-C keeps its usual meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(_signum, _frame) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        host.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_convert(args) -> int:
    from engines.diffusion.convert import convert_to_onnx

    try:
        convert_to_onnx(Path(args.src).expanduser(), Path(args.dst).expanduser())
    except EngineError as exc:
        raise CliError(exc.message, exit_code_for(exc.kind)) from None
    print(f"Wrote an ONNX Runtime model to {clean(args.dst)}")
    return 0
