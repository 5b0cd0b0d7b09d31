"""``POST /v1/images/generations`` on the diffusion engines, answered with ``b64_json`` PNGs.

Each PNG is the engine's own, so it carries its parameters (AUTOMATIC1111's
``parameters`` text and Atelier's JSON chunk, see
:mod:`engines.diffusion.png_meta`): an image saved by a client can be
reproduced. ``size`` is OpenAI's ``WIDTHxHEIGHT``; ``negative_prompt``,
``steps``, ``guidance_scale``, ``sampler`` and ``seed`` are extensions, with
the Images page's defaults. Each image's seed is returned beside it.
"""

from __future__ import annotations

import base64
import re
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engines.diffusion.types import ImageRequest
from engines.errors import problems_sentence
from engines.server.errors import ApiError
from engines.server.openai_schema import ImageGenerationBody
from engines.server.runner import client_id, finished_result
from engines.server.streams import cancel_on_disconnect

router = APIRouter()
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_DEFAULTS = ImageRequest(prompt="-")


@router.post("/v1/images/generations")
async def generate_images(body: ImageGenerationBody, request: Request):
    if body.response_format == "url":
        raise ApiError(400, "Only response_format 'b64_json' is served: Atelier keeps no public image URLs.",
                       param="response_format")
    width, height = _size(body.size)
    image_request = ImageRequest(
        prompt=body.prompt, negative_prompt=body.negative_prompt, width=width, height=height,
        steps=body.steps or _DEFAULTS.steps,
        guidance=_DEFAULTS.guidance if body.guidance_scale is None else body.guidance_scale,
        scheduler=body.sampler or _DEFAULTS.scheduler, seed=body.seed, batch_count=body.n, preview_every=0)
    problems = image_request.validate()
    if problems:
        raise ApiError(400, problems_sentence(problems), param="prompt" if "prompt" in problems[0] else None)
    context = request.app.state.context
    served = await context.find(body.model, "image")
    tickets = await context.start(served, image_request, client_id(request, body.user), request.state.log_entry)
    async with cancel_on_disconnect(request.receive, tickets):
        result = await finished_result(tickets, "prompt")
    data = [{"b64_json": base64.b64encode(image.png).decode("ascii"), "revised_prompt": body.prompt,
             "seed": image.seed} for image in result.images]
    return JSONResponse({"created": int(time.time()), "data": data})


def _size(size: str | None) -> tuple[int, int]:
    if size is None or size == "auto":
        return _DEFAULTS.width, _DEFAULTS.height
    match = _SIZE.match(size.strip())
    if not match:
        raise ApiError(400, f"size must be WIDTHxHEIGHT in pixels, e.g. 512x512 (got '{size}').", param="size")
    return int(match.group(1)), int(match.group(2))
