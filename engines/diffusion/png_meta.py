"""Generation parameters inside the PNG, readable by Atelier and by other tools.

Two chunks are written:

* ``parameters`` (tEXt) in AUTOMATIC1111's format, which A1111, ComfyUI
  importers, Civitai and most image viewers already understand::

      <prompt>
      Negative prompt: <negative>
      Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model: name

  LoRAs are written into the prompt line as A1111 writes them,
  ``<lora:name:weight>``, and read back out of it.

* ``atelier`` (iTXt, UTF-8 JSON) with the full request, the seed of this
  image and how it ran (backend, device, dtype), so Atelier can reproduce
  it exactly. The init image of an img2img run is not embedded (it could be
  large and private); its sha256 is, so the source can be recognised. An
  inpainting's mask is kept the same way (``mask_sha256``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, fields
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engines.diffusion.types import ImageRequest, LoraSpec
from engines.errors import EngineError, ErrorKind

ATELIER_KEY = "atelier"
PARAMETERS_KEY = "parameters"
FORMAT_VERSION = 1
# AUTOMATIC1111's own pattern for "Key: value" pairs (values with commas are JSON-quoted).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_LORA_TAG = re.compile(r"\s*<lora:([^:<>]+):([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)>")  # A1111's <lora:name:weight>


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',\n:"') else text


def _number(value: float) -> str:
    return f"{value:g}"


def format_parameters(request: ImageRequest, extra: dict) -> str:
    """The A1111 ``parameters`` text for one image (``extra["seed"]`` is this image's seed)."""
    tags = "".join(f" <lora:{lora.label}:{_number(lora.weight)}>" for lora in request.loras)
    lines = [request.prompt + tags]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    pairs = [
        ("Steps", str(request.steps)),
        ("Sampler", request.scheduler),
        ("CFG scale", _number(request.guidance)),
        ("Seed", str(extra.get("seed", request.seed))),
        ("Size", "{}x{}".format(*request.output_size)),  # the image's own size (outpainting adds margins)
    ]
    if extra.get("model"):
        pairs.append(("Model", str(extra["model"])))
    if request.init_image is not None:
        pairs.append(("Denoising strength", _number(request.strength)))
    if request.inpainting:  # "Mask blur", "Inpaint area", "Outpaint" (engines.diffusion.inpaint)
        from engines.diffusion.inpaint import parameters_pairs

        pairs.extend(parameters_pairs(request))
    if request.vae != "full":  # A1111 names the VAE a run used by its file name; here, the tiny VAE's folder
        pairs.append(("VAE", Path(request.vae).name))
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)


def atelier_record(request: ImageRequest, extra: dict) -> dict:
    """The JSON stored in the ``atelier`` chunk."""
    data = asdict(request)
    init = data.pop("init_image")
    data["init_image_sha256"] = hashlib.sha256(init).hexdigest() if init is not None else None
    mask = data.pop("mask")  # like the init image: its hash, never its pixels
    data["mask_sha256"] = hashlib.sha256(mask).hexdigest() if mask is not None else None
    data["outpaint"] = list(request.outpaint)
    record = {"version": FORMAT_VERSION, "request": data}
    record.update({k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool, type(None)))})
    return record


def encode_png(image: Image.Image, request: ImageRequest, extra: dict) -> bytes:
    """Encode ``image`` as PNG with both metadata chunks. ``extra``: seed, model, backend, device, dtype."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, format_parameters(request, extra))
    info.add_itxt(ATELIER_KEY, json.dumps(atelier_record(request, extra), ensure_ascii=False))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


def parse_parameters(text: str) -> dict:
    """Parse A1111 ``parameters`` text (the same way A1111's own parser does)."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # no settings line: it is all prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    settings = {}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        settings[key.strip()] = value
    text = "\n".join(prompt)
    loras = [{"name": name.strip(), "weight": float(weight)} for name, weight in _LORA_TAG.findall(text)]
    result: dict = {"prompt": _LORA_TAG.sub("", text), "negative_prompt": "\n".join(negative), "settings": settings,
                    "loras": loras}
    for key, name, cast in (("Steps", "steps", int), ("Sampler", "sampler", str), ("CFG scale", "cfg_scale", float),
                            ("Seed", "seed", int), ("Model", "model", str),
                            ("Denoising strength", "denoising_strength", float)):
        if key in settings:
            try:
                result[name] = cast(settings[key])
            except ValueError:
                pass
    size = _SIZE.match(settings.get("Size", ""))
    if size:
        result["width"], result["height"] = int(size.group(1)), int(size.group(2))
    return result


def read_png_parameters(source: bytes | str | Path) -> dict:
    """Read both chunks back: the A1111 fields, ``parameters`` (raw text) and ``atelier`` (dict or None).

    A PNG without generation metadata gives ``{"parameters": None, "atelier": None}``.
    """
    try:
        handle = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source))
        with handle as image:
            if image.format != "PNG":
                raise EngineError(ErrorKind.BAD_INPUT, f"This is a {image.format} image, not a PNG.")
            text = dict(getattr(image, "text", {}) or {})
    except (OSError, UnidentifiedImageError) as exc:
        raise EngineError(ErrorKind.BAD_INPUT, f"The image could not be read as a PNG ({exc}).")
    raw = text.get(PARAMETERS_KEY)
    result: dict = parse_parameters(raw) if raw else {}
    result["parameters"] = str(raw) if raw is not None else None
    atelier = text.get(ATELIER_KEY)
    try:
        result[ATELIER_KEY] = json.loads(str(atelier)) if atelier else None
    except json.JSONDecodeError:
        result[ATELIER_KEY] = None
    return result


def request_from_metadata(meta: dict) -> ImageRequest:
    """An :class:`ImageRequest` that reproduces the image ("reuse parameters").

    Atelier's own record is exact; a PNG from another tool is read from its
    A1111 fields. The init image is never embedded, so img2img comes back as
    txt2img with the same settings.
    """
    record = (meta.get(ATELIER_KEY) or {}).get("request")
    if record:
        # The init image and mask are not embedded, so an inpainting comes back as txt2img with the same settings.
        known = {f.name for f in fields(ImageRequest)} - {"init_image", "mask", "outpaint"}
        values = {k: v for k, v in record.items() if k in known}
        if meta[ATELIER_KEY].get("seed") is not None:
            values["seed"] = meta[ATELIER_KEY]["seed"]
        values["loras"] = tuple(LoraSpec(**{k: v for k, v in lora.items() if k in ("path", "weight", "name")})
                                for lora in values.get("loras") or () if isinstance(lora, dict))
        values["batch_count"] = 1
        return ImageRequest(**values)
    if not meta.get("prompt"):
        raise EngineError(ErrorKind.BAD_INPUT, "This image carries no generation parameters.")
    return ImageRequest(
        prompt=meta["prompt"],
        negative_prompt=meta.get("negative_prompt", ""),
        width=meta.get("width", 512),
        height=meta.get("height", 512),
        steps=meta.get("steps", 20),
        guidance=meta.get("cfg_scale", 7.0),
        scheduler=meta.get("sampler", "Euler"),
        seed=meta.get("seed"),
        # Another tool names its LoRAs without files: the front end finds them in the library by name.
        loras=tuple(LoraSpec("", lora["weight"], lora["name"]) for lora in meta.get("loras", ())),
    )
