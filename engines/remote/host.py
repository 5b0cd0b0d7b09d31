"""Engine "remote": a model on another machine, driven like a model in the engine host.

:class:`RemoteHost` has the engine host's public face (``load``,
``generate``, ``cancel``, ``close``, ``model_info``), so ChatTurn, the
chat worker, the CLI and the scheduler drive a model on a vLLM box or a
llama-server exactly as they drive llama.cpp here. There is no process
to start: "loading" asks the server whether it lists the model (and
remembers what it lists), and generating streams ``/chat/completions``
(or ``/completions`` for a raw prompt) over one HTTP connection.

Stop is per request, as in the engine host: :meth:`cancel` marks the
request in flight and shuts its socket, so a read blocked on a server
that is still thinking returns at once, and the reply ends as
"cancelled" with the text so far. Every failure is an
:class:`EngineError` with one sentence (see :mod:`engines.remote.http`);
ChatTurn keeps the partial reply on it.

When the server says the conversation is longer than the model's context
and the request allows dropping the oldest turns, the oldest messages
after the system prompt are dropped one at a time until it fits, with a
notice, as the local engine does with its own token count.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import socket
import threading
from typing import Any, Callable, Iterator

from engines.api import (
    ChatMessage,
    EngineEvent,
    FinishedEvent,
    ModelInfo,
    NoticeEvent,
    ProgressEvent,
    TextRequest,
)
from engines.errors import EngineError, ErrorKind, problems_sentence
from engines.remote.http import cut, failure, fetch_models, http_failure, one_line, open_client, socket_tracer
from engines.remote.keys import read_key
from engines.remote.spec import ENGINE, RemoteSpec
from engines.remote.stream import TEMPLATE, ReplyStream
from engines.remote.urls import require_allowed

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 4 * 2**20


class _Request:
    """One request in flight: its Stop flag and, once connected, its socket."""

    def __init__(self, request_id: int) -> None:
        self.id = request_id
        self.cancelled = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            stopped = self.cancelled.is_set()
        if stopped:  # Stop came while connecting
            cut(sock)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            sock = self._sock
        cut(sock)


class _Overflow(Exception):
    def __init__(self, error: EngineError) -> None:
        super().__init__(error.message)
        self.error = error


class RemoteHost:
    """An EngineHost look-alike for engine "remote"; one request at a time, like a host."""

    def __init__(self, on_models: Callable[[str, list[str]], None] | None = None) -> None:
        """``on_models(name, ids)`` hears what a server listed at each load (to refresh the saved list)."""
        self._on_models = on_models
        self._spec: RemoteSpec | None = None
        self._key: str | None = None
        self._ids = itertools.count(1)
        self._in_flight: _Request | None = None
        self._lock = threading.Lock()
        self.model_info: ModelInfo | None = None

    @property
    def is_running(self) -> bool:
        return self._spec is not None

    @property
    def pid(self) -> int | None:
        return None  # no process: the model runs on the server

    # ---- loading ---------------------------------------------------------

    def load(self, engine: str, spec: Any, on_event: Callable[[EngineEvent], None] | None = None) -> ModelInfo:
        """Check that the server lists ``spec.model``; reuse the loaded one when nothing changed."""
        if engine != ENGINE or not isinstance(spec, RemoteSpec):
            raise EngineError(ErrorKind.UNSUPPORTED, f"The remote engine cannot load a {type(spec).__name__}.")
        require_allowed(spec.name, spec.base_url)
        if spec == self._spec and self.model_info is not None:
            return self.model_info
        self.close()
        request = self._begin()
        try:
            key = read_key(spec.name, spec.api_key_env, spec.key_in_keyring)
            if on_event is not None:
                on_event(ProgressEvent("load", f"Connecting to {spec.name} for {spec.model}…"))
            try:
                listed = fetch_models(spec.name, spec.base_url, key, spec.read_timeout_s, on_socket=request.attach)
            except EngineError:
                if request.cancelled.is_set():
                    raise self._stopped(spec) from None
                raise
            if request.cancelled.is_set():
                raise self._stopped(spec)
            if self._on_models is not None:
                try:
                    self._on_models(spec.name, [m.id for m in listed])
                except (EngineError, OSError) as exc:  # a list that cannot be saved never stops a chat
                    log.info("could not keep what %s lists: %s", spec.name, exc)
            found = next((m for m in listed if m.id == spec.model), None)
            if found is None:
                names = ", ".join(one_line(m.id, 60) for m in listed[:8]) or "none"
                raise EngineError(ErrorKind.NOT_FOUND, f"The remote server '{spec.name}' does not list the model "
                                  f"'{spec.model}'; it lists: {names}.")
            context = found.context_length or 0
            self.model_info = ModelInfo(
                path=spec.base_url, architecture=ENGINE, name=spec.model_id, context_length=context,
                trained_context_length=context, threads=0, gpu_layers=0, template=TEMPLATE,
                template_source=ENGINE, gpu_offload_supported=False, cache_type="",
            )
            self._spec, self._key = spec, key
            return self.model_info
        finally:
            self._end(request)

    @staticmethod
    def _stopped(spec: RemoteSpec) -> EngineError:
        return EngineError(ErrorKind.CANCELLED, f"Connecting to '{spec.name}' was stopped.")

    # ---- generating ------------------------------------------------------

    def generate(self, request: Any) -> Iterator[EngineEvent]:
        """Stream one reply; the last event is a FinishedEvent (finish_reason "cancelled" after Stop)."""
        spec = self._spec
        if spec is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
        if not isinstance(request, TextRequest):
            raise EngineError(ErrorKind.UNSUPPORTED, f"Remote servers take chat requests here, not a "
                              f"{type(request).__name__}.")
        problems = request.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems))
        require_allowed(spec.name, spec.base_url)
        handle = self._begin()
        try:
            messages = list(request.messages)
            dropped = 0
            while True:
                try:
                    yield from self._stream(spec, handle, request, tuple(messages), dropped)
                    return
                except _Overflow as overflow:
                    if request.overflow != "drop_oldest" or request.raw_prompt is not None:
                        raise overflow.error from None
                    first = 1 if messages and messages[0].role == "system" else 0
                    if len(messages) - first <= 1:  # only the last message is left, and it does not fit alone
                        raise overflow.error from None
                    del messages[first]
                    dropped += 1
        finally:
            self._end(handle)

    def _stream(self, spec: RemoteSpec, handle: _Request, request: TextRequest,
                messages: tuple[ChatMessage, ...], dropped: int) -> Iterator[EngineEvent]:
        import httpx2

        chat = request.raw_prompt is None
        seed = request.sampling.seed if request.sampling.seed is not None else secrets.randbelow(2**31)
        context = self.model_info.context_length if self.model_info is not None else 0
        reply = ReplyStream(spec.name, context_length=context, seed=seed, sampling=request.sampling, chat=chat,
                            dropped_messages=dropped)
        url = f"{spec.base_url}/{'chat/completions' if chat else 'completions'}"
        client = open_client(self._key, spec.read_timeout_s)
        try:
            with client.stream("POST", url, json=request_body(spec.model, request, messages, seed),
                               headers={"Accept": "text/event-stream"},
                               extensions=socket_tracer(handle.attach)) as response:
                if response.status_code != 200:
                    if handle.cancelled.is_set():
                        yield FinishedEvent(reply.result(cancelled=True))
                        return
                    error = http_failure(spec.name, spec.base_url, response, model=spec.model)
                    if error.kind == ErrorKind.CONTEXT_OVERFLOW:
                        raise _Overflow(error)
                    raise error
                if dropped:
                    yield NoticeEvent(f"The {dropped} oldest {'message was' if dropped == 1 else 'messages were'} "
                                      f"left out of this reply: the conversation is longer than the server's context.")
                content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                if content_type != "text/event-stream":
                    raise reply.garbage(f"a {content_type} answer" if content_type else
                                        "an answer without a content type")
                for event in httpx2.EventSource(response, max_event_size=MAX_EVENT_BYTES):
                    if handle.cancelled.is_set():
                        break
                    if event.event == "error":
                        reason = one_line(event.data, 200)
                        raise EngineError(ErrorKind.NETWORK, f"The remote server '{spec.name}' stopped the reply "
                                          f"with an error: {reason}.")
                    yield from reply.feed(event.data)
                    if reply.done:
                        break
        except httpx2.SSEError:
            if not handle.cancelled.is_set():
                raise reply.garbage(f"an event over {MAX_EVENT_BYTES // 2**20} MB") from None
        except httpx2.HTTPError as exc:
            if not handle.cancelled.is_set():
                raise failure(exc, spec.name, spec.base_url, during_reply=bool(reply.parts),
                              read_timeout_s=spec.read_timeout_s) from None
        finally:
            client.close()
        if handle.cancelled.is_set():
            yield FinishedEvent(reply.result(cancelled=True))
            return
        if not reply.ended:
            if reply.parts:
                raise EngineError(ErrorKind.NETWORK, f"The connection to the remote server '{spec.name}' was lost in "
                                  "the middle of the reply; the text so far is kept.")
            raise EngineError(ErrorKind.NETWORK, f"The remote server '{spec.name}' closed the connection without "
                              "sending a reply.")
        yield reply.stats()
        yield FinishedEvent(reply.result())

    # ---- stopping --------------------------------------------------------

    def cancel(self) -> None:
        """Stop the request in flight (a load or a reply); safe from any thread. Nothing in flight: nothing to do."""
        with self._lock:
            request = self._in_flight
        if request is not None:
            request.cancel()

    def close(self) -> None:
        """Forget the model (and its key); a request in flight is stopped."""
        self.cancel()
        self._spec = None
        self._key = None
        self.model_info = None

    unload = close
    kill = close  # what the chat worker calls when the window closes mid-reply

    def _begin(self) -> _Request:
        request = _Request(next(self._ids))
        with self._lock:
            self._in_flight = request
        return request

    def _end(self, request: _Request) -> None:
        with self._lock:
            if self._in_flight is request:
                self._in_flight = None


def request_body(model: str, request: TextRequest, messages: tuple[ChatMessage, ...], seed: int) -> dict:
    """The OpenAI request for ``request``: only the fields the OpenAI API itself has.

    top-k, min-p and the repeat penalty are not part of it (OpenAI's own
    server refuses unknown fields), so the server's defaults apply to them.
    """
    sampling = request.sampling
    body: dict = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": seed,
    }
    if request.raw_prompt is not None:
        body["prompt"] = request.raw_prompt
    else:
        body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
    if request.stop:
        body["stop"] = list(request.stop)
    if request.json_schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "reply", "schema": request.json_schema, "strict": True}}
    return body
