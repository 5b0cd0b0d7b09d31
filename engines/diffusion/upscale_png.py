"""The upscaled PNG: the source's own text chunks kept as they were, and the upscale step added beside them.

An upscale does not change how an image was made, so the source's
``parameters`` (A1111's text) and ``atelier`` record (the exact request)
are copied unchanged: "use these settings again" on the upscaled image
restores the generation, at the size it was generated at. The step itself
is written the way AUTOMATIC1111's Extras tab writes it, a ``postprocessing``
text chunk (``Postprocess upscale by: 4, Postprocess upscaler: RealESRGAN_x4plus``),
which A1111 and the tools that read its files show; Atelier's own record
keeps every step in order under ``postprocessing``, so an image upscaled
twice says so. A source without metadata (a photo) gets only the step.
"""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from engines.diffusion.png_meta import ATELIER_KEY

POSTPROCESSING_KEY = "postprocessing"  # A1111's chunk for Extras-tab steps


def source_text(image: Image.Image) -> dict[str, str]:
    """The text chunks of an opened source image (PNG tEXt/iTXt/zTXt; empty for a JPEG or WebP)."""
    return {str(k): str(v) for k, v in (getattr(image, "text", None) or {}).items()}


def postprocessing_text(scale: float, upscaler: str) -> str:
    """A1111's words for one upscale: ``Postprocess upscale by: 4, Postprocess upscaler: name``."""
    name = json.dumps(upscaler) if any(c in upscaler for c in ',:"\n') else upscaler
    return f"Postprocess upscale by: {scale:g}, Postprocess upscaler: {name}"


def upscaled_png(image: Image.Image, text: dict[str, str], step: dict) -> bytes:
    """``image`` as PNG with the source's ``text`` chunks and ``step`` (scale, upscaler, sizes...) recorded."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        if key in (ATELIER_KEY, POSTPROCESSING_KEY):
            continue
        _add(info, key, value)
    _add(info, POSTPROCESSING_KEY, postprocessing_text(step["scale"], step["upscaler"]))
    record = _record(text.get(ATELIER_KEY))
    record.setdefault(POSTPROCESSING_KEY, []).append(step)
    info.add_itxt(ATELIER_KEY, json.dumps(record, ensure_ascii=False))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


def _record(raw: str | None) -> dict:
    """The source's Atelier record, or an empty one (none, or not a JSON object)."""
    try:
        record = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    if not isinstance(record.get(POSTPROCESSING_KEY), list):
        record.pop(POSTPROCESSING_KEY, None)
    return record


def _add(info: PngImagePlugin.PngInfo, key: str, value: str) -> None:
    """tEXt when the value is Latin-1 (what A1111 and most readers expect), iTXt (UTF-8) otherwise."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        info.add_itxt(key, value)
    else:
        info.add_text(key, value)
