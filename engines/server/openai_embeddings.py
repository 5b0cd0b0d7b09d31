"""``POST /v1/embeddings``: GGUF embedding models through llama.cpp's embedding mode.

The official ``openai`` client asks for ``encoding_format: "base64"``
unless told otherwise (little-endian float32, which it decodes), so both
encodings are served. Vectors are unit length, as OpenAI's are, so a dot
product is the cosine similarity.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engines.api import EmbeddingRequest
from engines.errors import problems_sentence
from engines.server.errors import ApiError
from engines.server.openai_schema import EmbeddingBody
from engines.server.runner import client_id, finished_result
from engines.server.streams import cancel_on_disconnect

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingBody, request: Request):
    embedding_request = EmbeddingRequest(texts=body.input, normalize=True)
    problems = embedding_request.validate()
    if problems:
        raise ApiError(400, problems_sentence(problems), param="input")
    context = request.app.state.context
    served = await context.find(body.model, "embedding")
    tickets = await context.start(served, embedding_request, client_id(request, body.user), request.state.log_entry)
    async with cancel_on_disconnect(request.receive, tickets):
        result = await finished_result(tickets, "input")
    if body.dimensions is not None and body.dimensions != result.dimensions:
        raise ApiError(400, f"{served.id} makes {result.dimensions}-dimensional embeddings; it cannot shorten them "
                       f"to {body.dimensions}.", param="dimensions")
    data = [{"object": "embedding", "index": index, "embedding": _encoded(vector, body.encoding_format)}
            for index, vector in enumerate(result.vectors)]
    return JSONResponse({"object": "list", "data": data, "model": served.id,
                         "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}})


def _encoded(vector, encoding: str):
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return list(vector)
