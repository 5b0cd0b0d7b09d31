"""``atelier image`` and ``atelier convert onnx``: images from a terminal.

The model runs in an engine host like chat does, so torch, diffusers and
onnxruntime are imported only there. Bad input (``--out`` and the init
image included) is refused with exit code 2 and one ``error:`` line before
anything is generated. The run itself is the image job service's
(:mod:`engines.images.jobs`, shared with the Images page): each image gets
its Content Credentials (unless ``--no-credentials``) and is written the
moment the engine finishes it, ``--out`` first and then the gallery, so
Ctrl-C, a crash or an unwritable gallery never costs a finished image; this
module only says what was kept, in lines a terminal or a script reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from desktop.cli_contract import EXIT_FAILED, EXIT_INTERRUPTED, CliError, exit_code_for
from desktop.cli_output import clean, print_json
from engines.durations import format_duration
from engines.errors import EngineError


def add_parsers(sub) -> None:
    image = sub.add_parser("image", help="make an image from a prompt (txt2img, img2img, inpainting, outpainting)")
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
    image.add_argument("--mask", help="inpainting: an image of the init image's size, white where to repaint")
    image.add_argument("--outpaint", metavar="left=128,right=128",
                       help="outpainting: pixels to add on the left, right, top and/or bottom of the init image "
                            "(multiples of 8), which are then painted in")
    image.add_argument("--lora", action="append", default=[], metavar="FILE_OR_ID:WEIGHT",
                       help="apply a LoRA (.safetensors, kohya or diffusers/PEFT layout) with a weight (default 1); "
                            "repeatable")
    image.add_argument("--vae", default="full", metavar="tiny|full|PATH",
                       help="the final decode: the model's own VAE (full), the installed tiny VAE of its family "
                            "(tiny: TAESD or TAESDXL, several times faster, slightly less detail), or a tiny VAE "
                            "folder")
    image.add_argument("--deep-cache", type=int, default=0, metavar="N",
                       help="faster, slight quality loss: the UNet runs in full every N steps (2 to 5) and reuses "
                            "its deep features in between (PyTorch backend)")
    image.add_argument("--vary", action="append", default=[], metavar="SETTING=V1,V2,...",
                       help="an experiment grid (X/Y plot): vary seed, steps, guidance, sampler, lora (a LoRA's "
                            "weight) or prompt (search and replace the first value's text); give it twice for "
                            "rows and columns. Numbers also take A1111's ranges: 1-4, 4-16 (+4), 3-9 (+1.5), "
                            "10-5 (-3) (down), 1-10 [5] (5 values evenly spaced); quote them in a shell. Each cell "
                            "goes to the gallery, and so does the labelled grid (--out names the grid's file)")
    image.add_argument("--out", help="where to write the PNG (default: the gallery folder)")
    image.add_argument("--no-credentials", action="store_true",
                       help="leave out the Content Credentials (the signed C2PA manifest) for this run")
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


def _loras(texts: list[str]) -> tuple:
    """``--lora FILE_OR_ID[:WEIGHT]``, each resolved by the one resolver as a LoRA (a pickle or another kind refused)."""
    from engines.diffusion.types import LoraSpec
    from engines.library.resolve import resolve_model
    from engines.workspace import open_workspace

    loras = []
    for text in texts:
        name, sep, weight = text.rpartition(":")
        if not sep:
            name, weight = text, "1"
        try:
            value = float(weight)
        except ValueError:
            raise CliError(f"--lora {text}: the weight after the last ':' must be a number "
                           "(e.g. --lora style.safetensors:0.8)") from None
        if not name:
            raise CliError(f"--lora {text}: give a LoRA file or an installed LoRA's id before the ':'")
        try:
            path = resolve_model(name, open_workspace().models, kind="lora").local_path()
        except EngineError as exc:
            raise CliError.from_engine(exc) from None
        loras.append(LoraSpec(str(path), value))
    return tuple(loras)


def _outpaint(text: str | None) -> tuple[int, int, int, int]:
    """``--outpaint left=128,right=128`` → (left, right, top, bottom); the numbers are checked by ImageRequest."""
    from engines.diffusion.inpaint import OUTPAINT_SIDES

    if text is None:
        return (0, 0, 0, 0)
    sides = dict.fromkeys(OUTPAINT_SIDES, 0)
    for part in (p.strip() for p in text.split(",")):
        side, sep, value = part.partition("=")
        side = side.strip().lower()
        if not sep or side not in sides:
            raise CliError(f"--outpaint {text}: write SIDE=PIXELS for left, right, top or bottom, separated by "
                           "commas (e.g. --outpaint left=128,right=128)")
        try:
            sides[side] = int(value.strip())
        except ValueError:
            raise CliError(f"--outpaint {text}: the pixels after '{side}=' must be a whole number") from None
    return tuple(sides.values())


def _vae(choice: str, model_path: Path, workspace) -> str:
    """``--vae tiny|full|PATH`` → the request's ``vae`` (engines.images.vae_choice), refused before any engine starts."""
    from engines.images.vae_choice import resolve_vae

    try:
        return resolve_vae(choice, model_path, workspace.models, workspace.paths.models)
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


def run_image(args) -> int:
    from engines.diffusion.types import ImageLoadSpec, ImageRequest, StepEvent
    from engines.images.gallery import open_gallery
    from engines.images.init_image import read_init_image
    from engines.images.jobs import ImageJob, ImageJobs, ImageKept, Notice
    from engines.workspace import open_workspace

    init = None
    if args.init_image is not None:
        try:
            init = read_init_image(Path(args.init_image).expanduser())
        except EngineError as exc:
            raise CliError(exc.message) from None
    mask = None
    if args.mask is not None:
        try:
            mask = read_init_image(Path(args.mask).expanduser(), role="mask")
        except EngineError as exc:
            raise CliError(exc.message) from None
    request = ImageRequest(
        prompt=args.prompt, negative_prompt=args.negative, width=args.width, height=args.height, steps=args.steps,
        guidance=args.guidance, scheduler=args.scheduler, seed=args.seed, batch_count=args.batch,
        init_image=init, strength=args.strength, preview_every=0, deep_cache=args.deep_cache, loras=_loras(args.lora),
        mask=mask, outpaint=_outpaint(args.outpaint),
    )
    problems = request.validate()
    if problems:
        raise CliError("; ".join(problems))
    targets = output_paths(Path(args.out).expanduser(), request.batch_count) if args.out else []
    workspace = open_workspace()
    model_path, model_id = _resolve(args.model)
    if args.vae != "full":
        from dataclasses import replace

        request = replace(request, vae=_vae(args.vae, model_path, workspace))
    job = ImageJob(ImageLoadSpec(str(model_path), backend=args.backend, dtype=args.precision), request,
                   model_id=model_id, targets=tuple(targets), credentials=not args.no_credentials)
    grid = None
    if args.vary:  # an experiment grid: its axes are checked now, before any engine starts
        from desktop.commands.image_grid import GridCommand

        grid = GridCommand(args, job, tty=sys.stderr.isatty() and not args.json)
    images_dir = workspace.paths.data / "images"
    jobs = ImageJobs(lambda: open_gallery(workspace.paths.database, images_dir), images_dir, workspace.paths.config)
    tty = sys.stderr.isatty() and not args.json
    if jobs.gallery.problem:
        where = f"--out and {images_dir}" if targets else str(images_dir)
        _warn(f"{jobs.gallery.problem}; images are written to {where} without a gallery entry")

    def on_event(event) -> None:
        if isinstance(event, ImageKept):
            if tty:
                sys.stderr.write("\r\x1b[K")  # clear the progress line before the path is printed
            if not args.json:
                print(f"{clean(str(event.path))}  (seed {event.seed})", flush=True)
        elif isinstance(event, Notice):
            if tty:
                sys.stderr.write("\r\x1b[K")
            _warn(event.message)
        elif isinstance(event, StepEvent) and tty:
            eta = f", {format_duration(event.eta_s, precise=True)} left" if event.eta_s else ""
            sys.stderr.write(f"\rimage {event.image_index + 1}/{event.batch_count}: "
                             f"step {event.step}/{event.total}{eta}   ")
            sys.stderr.flush()

    # Through the scheduler like every front end (the private image engine's Python when one is installed).
    scheduler = workspace.scheduler(idle_unload_s=None, roles={"diffusers": "cli-image", "onnxruntime": "cli-image"})
    try:
        with _ctrl_c_cancels(jobs):
            host = scheduler.host_for("cli")
            outcome = jobs.run(host, job, on_event) if grid is None else grid.run(jobs, host, on_event)
    finally:
        scheduler.shutdown()
        jobs.close()
        if tty:
            sys.stderr.write("\n")
    if grid is not None:
        return grid.report(outcome)
    kept = [_kept_item(image, bool(targets)) for image in outcome.kept]
    if outcome.error is not None:
        raise CliError(_with_kept(outcome.error.message, kept), exit_code_for(outcome.error.kind))
    result, info = outcome.result, outcome.info
    if args.json:
        print_json({
            "images": kept, "backend": getattr(info, "backend", None),
            "device": getattr(result, "device", getattr(info, "device", None)),
            "dtype": getattr(result, "dtype", getattr(info, "dtype", None)), "model": getattr(info, "name", None),
            "seconds": round(result.seconds, 3) if result else None,
            "seconds_per_step": round(result.seconds_per_step, 4) if result else None,
            "steps": request.steps, "scheduler": request.scheduler, "cancelled": outcome.cancelled,
            "credentials": all(image.signed for image in outcome.kept) if outcome.kept else not args.no_credentials,
        })
    if outcome.lost:
        raise CliError(_with_kept("; ".join(outcome.lost), kept), EXIT_FAILED)
    if outcome.cancelled:
        raise CliError(_with_kept(f"interrupted after {len(kept)} of {request.batch_count} images", kept),
                       EXIT_INTERRUPTED)
    return 0


def _warn(message: str) -> None:
    print(f"warning: {clean(message)}", file=sys.stderr, flush=True)


def _kept_item(image, to_out: bool) -> dict:
    """What --json says of one kept image (``gallery_path`` beside ``path`` when --out had it first)."""
    item = {"path": str(image.path), "seed": image.seed, "width": image.width, "height": image.height,
            "credentials": image.signed}
    if to_out and image.entry is not None:
        item["gallery_path"] = image.entry.path
    return item


def _with_kept(message: str, kept: list[dict]) -> str:
    """``message`` plus which finished images were kept, so an error line never hides saved work."""
    if not kept:
        return message
    paths = ", ".join(item["path"] for item in kept)
    return f"{message}; kept {len(kept)} finished image{'s' if len(kept) != 1 else ''}: {paths}"


@contextlib.contextmanager
def _ctrl_c_cancels(jobs):
    """While images are made, the first Ctrl-C cancels the run (finished images are kept); a second one quits.

    The engine stops within a step and every image it finished has already
    been written, so nothing made is lost. Only the main thread can own
    signal handlers; elsewhere Ctrl-C keeps its usual meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(_signum, _frame) -> None:
        if jobs.cancelled:
            raise KeyboardInterrupt
        jobs.cancel()

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
