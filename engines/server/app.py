"""The ASGI application: the routes, the error handlers, and the layers every request passes.

From the outside in: :class:`~engines.server.request_log.LogRequests`
(one log entry per request, refused ones included), then
:class:`~engines.server.guard.SecurityGuard` (Host, Origin, token, body
cap), then FastAPI's routes. FastAPI's own pages (``/docs``,
``/openapi.json``) are off: every path that is not an endpoint below is a
404 in the API's error shape, and so is every error, validation included
(400 naming the field, where FastAPI would send its own 422).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from engines.server import anthropic_messages, openai_embeddings, openai_images, openai_text
from engines.server.config import ServerConfig, allowed_host_names
from engines.server.errors import ApiError, internal, model_not_found
from engines.server.guard import SecurityGuard
from engines.server.request_log import LogRequests, RequestLog
from engines.server.runner import ServerContext

log = logging.getLogger("atelier.server")


def create_app(context: ServerContext, config: ServerConfig, request_log: RequestLog):
    """The whole server as one ASGI callable, for uvicorn (or a test client)."""
    api = FastAPI(title="Atelier", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.context = context
    for module in (openai_text, openai_embeddings, openai_images, anthropic_messages):
        api.include_router(module.router)
    api.add_api_route("/v1/models", list_models, methods=["GET"])
    api.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    api.add_exception_handler(ApiError, _api_error)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected)
    guarded = SecurityGuard(api, hosts=allowed_host_names(config.host, config.extra_hosts),
                            cors_origins=config.cors_origins, token=config.token, limits=config.limits,
                            origin_hint=config.origin_hint,
                            host_hint=config.host_hint)
    return LogRequests(guarded, request_log)


async def list_models(request: Request):
    served = request.app.state.context.directory.listed()
    return JSONResponse({"object": "list", "data": [_model_json(model) for model in served]})


async def get_model(model_id: str, request: Request):
    for model in request.app.state.context.directory.listed():
        if model.id == model_id:
            return JSONResponse(_model_json(model))
    raise model_not_found(f"The model '{model_id}' does not exist; GET /v1/models lists the installed ones.")


def _model_json(model) -> dict:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by,
            "kind": model.kind}


async def _api_error(request: Request, exc: ApiError):
    return JSONResponse(exc.body(request.url.path), status_code=exc.status, headers=exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError):
    """Pydantic's first problem as one sentence naming the field (OpenAI's ``param``), status 400."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    param = _param(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        message = f"The request body is not valid JSON{': ' + reason if reason else ''}."
        param = None
    elif first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif not param and not _is_json(request.headers.get("content-type", "")):
        message = "Send the request body as JSON, with the header 'Content-Type: application/json'."
    elif not param:
        message = f"The request body must be a JSON object ({first.get('msg', 'invalid')})."
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in the request.)"
    return await _api_error(request, ApiError(400, message, param=param))


def _is_json(content_type: str) -> bool:
    """Whether a Content-Type is JSON (FastAPI parses nothing else as JSON: a web page's form cannot pass as one)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _param(loc) -> str | None:
    """``("body", "messages", 0, "content")`` -> ``messages[0].content``."""
    text = ""
    for part in loc:
        if part == "body" and not text:
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or None


async def _http_error(request: Request, exc: HTTPException):
    if exc.status_code == 404:
        message = f"Unknown path: {request.method} {request.url.path}. The API is under /v1 (GET /v1/models lists the models)."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    return await _api_error(request, ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None))


async def _unexpected(request: Request, exc: Exception):
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return await _api_error(request, internal(f"{type(exc).__name__} in {request.url.path}"))
