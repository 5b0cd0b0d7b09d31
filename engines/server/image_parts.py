"""Images in API requests: OpenAI's ``image_url`` parts as ``data:`` URLs, Anthropic's base64 ``image`` blocks.

A vision model served by Atelier reads the images a client sends the way
OpenAI's API takes them (``{"type": "image_url", "image_url": {"url":
"data:image/png;base64,..."}}``) and Anthropic's does (``{"type": "image",
"source": {"type": "base64", "media_type": ..., "data": ...}}``). Only inline images are taken: the server
never fetches an image from the network (it may be offline, and a URL is a
way to make it connect anywhere). Each image is checked as the chat
window checks a dropped one (:func:`engines.image_input.check_image`:
format, bytes and pixel cap), and a bad one is a 400 that names the part.
"""

from __future__ import annotations

import base64
import binascii

from engines.errors import EngineError
from engines.image_input import check_image
from engines.server.errors import ApiError


def image_of(part: dict, param: str) -> bytes:
    """The checked bytes of one ``image_url`` part; ApiError(400) in words otherwise."""
    source = part.get("image_url")
    url = source.get("url") if isinstance(source, dict) else source
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"'{param}' is an image_url part without a URL.", param=param)
    head, comma, payload = url.partition(",")
    if not (url.startswith("data:") and comma and head.endswith(";base64")):
        raise ApiError(400, f"'{param}' names an image by URL; send it inline as a data: URL "
                            "(data:image/png;base64,...): Atelier does not fetch images from the network.", param=param)
    return _checked(payload, f"'{param}'", param)


def anthropic_image_of(block: dict, param: str) -> bytes:
    """The checked bytes of one Anthropic ``image`` block (a base64 source); ApiError(400) in words otherwise."""
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64" or not isinstance(source.get("data"), str):
        raise ApiError(400, f"{param}: an image must come as a base64 source; Atelier does not fetch images from "
                            "the network.", param=param)
    return _checked(source["data"], param, param)


def _checked(payload: str, where: str, param: str) -> bytes:
    """Decode and check an inline image; ``where`` names it in the sentences."""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where} is not valid base64.", param=param) from None
    try:
        check_image(data, f"The image in {where}")
    except EngineError as exc:
        raise ApiError(400, exc.message, param=param) from None
    return data
