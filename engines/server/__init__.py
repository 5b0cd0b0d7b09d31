"""The HTTP API: OpenAI- and Anthropic-compatible endpoints over the scheduler, safe by default.

``atelier serve`` (desktop/commands/serve.py) and, later, the GUI's Server
page run an :class:`ApiServer` over the same scheduler as the rest of the
app. Layout, one job per module:

- ``server``: ApiServer, uvicorn in a thread (start, stop, url, token, log);
- ``app``: the FastAPI routes and the error handlers, wrapped in
- ``guard`` (Host, Origin/CORS, token, body cap and timeout) and
  ``request_log`` (the ring buffer, no prompt text), with
  ``slow_clients`` bounding request heads;
- ``openai_text``, ``openai_embeddings``, ``openai_images``,
  ``anthropic_messages``: one API surface each, over ``openai_schema``
  and ``text_requests``; ``tool_calls`` (tools offered to the model and
  its calls read back, never run) with ``openai_tools`` and
  ``anthropic_tools``, each API's wire format for them;
- ``runner`` (find the model, queue, follow), ``streams`` (a ticket's
  events into the event loop, cancel on disconnect), ``directory`` (which
  models are served and how they load), ``errors`` (each API's error
  shape), ``config`` (the safe defaults) and ``token``.

Importing this package is cheap: FastAPI and uvicorn load when a server starts.
"""

from engines.server.config import Limits, ServerConfig
from engines.server.directory import ModelDirectory
from engines.server.request_log import LogEntry, RequestLog
from engines.server.server import ApiServer
from engines.server.token import api_token

__all__ = ["ApiServer", "Limits", "LogEntry", "ModelDirectory", "RequestLog", "ServerConfig", "api_token"]
