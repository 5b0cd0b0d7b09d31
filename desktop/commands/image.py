"""``atelier image`` and ``atelier convert onnx``: images from a terminal.

The model runs in an engine host like chat does, so torch, diffusers and
onnxruntime are imported only there. Bad input exits with code 2 and one
``error:`` line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from desktop.cli_contract import CliError
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


def _resolve(model: str) -> Path:
    """The model folder for ``--model``: the one resolver (``engines.library.resolve``), as every command."""
    from engines.library.resolve import resolve_model
    from engines.workspace import open_workspace

    try:
        return resolve_model(model, open_workspace().models, kind="image").local_path()
    except EngineError as exc:
        raise CliError.from_engine(exc) from None


def run_image(args) -> int:
    from engines.api import FinishedEvent
    from engines.diffusion.types import ImageLoadSpec, ImageRequest, StepEvent
    from engines.host import EngineHost
    from engines.images.gallery import Gallery
    from engines.workspace import open_workspace

    init = None
    if args.init_image:
        try:
            init = Path(args.init_image).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the init image {args.init_image}: {exc.strerror or exc}") from None
    request = ImageRequest(
        prompt=args.prompt, negative_prompt=args.negative, width=args.width, height=args.height, steps=args.steps,
        guidance=args.guidance, scheduler=args.scheduler, seed=args.seed, batch_count=args.batch,
        init_image=init, strength=args.strength, preview_every=0,
    )
    problems = request.validate()
    if problems:
        raise CliError("; ".join(problems))
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() != ".png":
        raise CliError("--out must name a .png file")
    workspace = open_workspace()
    spec = ImageLoadSpec(str(_resolve(args.model)), backend=args.backend, dtype=args.precision)
    from engines.envs import image_host_launch

    launch = image_host_launch(workspace) or {}  # the private image engine, when installed
    host = EngineHost(workspace.engine_log("cli-image"), role="cli-image", **launch)
    tty = sys.stderr.isatty() and not args.json
    try:
        info = host.load("diffusers", spec)
        result = None
        for event in host.generate(request):
            if isinstance(event, StepEvent) and tty:
                eta = f", {event.eta_s:.0f} s left" if event.eta_s else ""
                sys.stderr.write(f"\rimage {event.image_index + 1}/{event.batch_count}: step {event.step}/{event.total}{eta}   ")
                sys.stderr.flush()
            elif isinstance(event, FinishedEvent):
                result = event.result
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    finally:
        host.close()
        if tty:
            sys.stderr.write("\n")
    gallery = Gallery(workspace.paths.database, workspace.paths.data / "images")
    written = []
    for index, image in enumerate(result.images):
        entry = gallery.save(image.png, _request_record(request), seed=image.seed, width=image.width, height=image.height,
                             model=info.name, backend=result.backend)
        path = Path(entry.path)
        if out is not None:
            target = out if len(result.images) == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(image.png)
            path = target
        written.append({"path": str(path), "seed": image.seed, "width": image.width, "height": image.height})
    gallery.close()
    if args.json:
        print_json({
            "images": written, "backend": result.backend, "device": result.device, "dtype": result.dtype,
            "model": info.name, "seconds": round(result.seconds, 3), "seconds_per_step": round(result.seconds_per_step, 4),
            "steps": request.steps, "scheduler": request.scheduler,
        })
    else:
        for item in written:
            print(f"{clean(item['path'])}  (seed {item['seed']})")
    return 0


def _request_record(request) -> dict:
    from dataclasses import asdict

    data = asdict(request)
    data.pop("init_image", None)
    data["img2img"] = request.init_image is not None
    return data


def run_convert(args) -> int:
    from engines.diffusion.convert import convert_to_onnx

    try:
        convert_to_onnx(Path(args.src).expanduser(), Path(args.dst).expanduser())
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    print(f"Wrote an ONNX Runtime model to {clean(args.dst)}")
    return 0
