"""The typed, versioned message protocol between a parent and its engine host.

Every message is a msgspec ``Struct`` sent as one MessagePack frame
(``send_bytes``/``recv_bytes``, never ``send``/``recv``, which pickle). A
frame is an array whose first item is the message's tag, and its second,
for every request and its replies, the request id. Decoding checks every
field's type, so a frame is either one of the messages below or refused
with a :class:`ProtocolError`; nothing in it is ever imported or run. That
is what lets a host live behind a socket another machine can reach.

The engine objects a message carries (a load spec, a request, a model info,
an event, a result: dataclasses of :mod:`engines.api` and
:mod:`engines.diffusion.types`) travel in an :class:`Envelope`: the type's
name from the closed list of :mod:`engines.host.payloads`, and its fields.

Parent to host, on the request line: :class:`Load`, :class:`Generate`,
:class:`Shutdown`; on the cancel line: :class:`Cancel` (a cancel must not
wait behind the busy load or generation, see :mod:`engines.host.cancel`).
Host to parent: :class:`Hello` first (the protocol version, the host's pid
and Python), then :class:`Loaded`, :class:`Event`, :class:`Done` or
:class:`Failed` for each request.

A new field goes at the end of its message with a default: a peer that
does not know it ignores it. Anything else that changes the meaning of a
frame raises :data:`PROTOCOL_VERSION`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Union

import msgspec

from engines.errors import EngineError, ErrorKind

PROTOCOL_VERSION = 2  # 1 was pickled dataclasses over a multiprocessing pipe

# The one sentence a user sees when the two sides do not speak the same protocol. The private image
# engine is the host that can be left behind by an update (its Python and packages were installed
# earlier); the app's own host can only mismatch in a broken install.
IMAGE_ENGINE_FROM_ANOTHER_VERSION = (
    "The image engine was installed by another version of Atelier; repair it from the Images page."
)
HOST_FROM_ANOTHER_VERSION = "The engine host belongs to another version of Atelier ({detail}); reinstall Atelier."


class ProtocolError(ValueError):
    """A frame that is not a message of this protocol; the text says why, for the log and the user."""


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """One engine object: its type's name (from the closed list) and its encoded fields."""

    type: str
    data: msgspec.Raw

    @classmethod
    def seal(cls, obj: Any) -> "Envelope":
        name = _carried().NAME_OF.get(type(obj))
        if name is None:
            raise ProtocolError(f"{type(obj).__name__} is not a type the engine protocol carries")
        return cls(name, msgspec.Raw(_ENCODER.encode(obj)))

    def open(self) -> Any:
        """The object, decoded into its registered type with every field checked."""
        cls = _carried().BY_NAME.get(self.type)
        if cls is None:
            raise ProtocolError(f"it names the type {self.type[:80]!r}, which the engine protocol does not carry")
        try:
            return msgspec.msgpack.decode(self.data, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"its {self.type} does not have the expected fields ({exc})") from None


def _carried():
    """The closed list, imported on first use: a host says Hello before it needs any engine type."""
    from engines.host import payloads

    return payloads


# ---- parent -> host ------------------------------------------------------


class Load(msgspec.Struct, tag="load", array_like=True, frozen=True):
    request_id: int
    engine: str  # registry name, e.g. "llama_cpp"
    payload: Envelope  # the engine's load spec (TextLoadSpec, ImageLoadSpec)


class Generate(msgspec.Struct, tag="generate", array_like=True, frozen=True):
    request_id: int
    payload: Envelope  # TextRequest, EmbeddingRequest, ImageRequest


class Shutdown(msgspec.Struct, tag="shutdown", array_like=True, frozen=True):
    pass


class Cancel(msgspec.Struct, tag="cancel", array_like=True, frozen=True):
    """On the cancel line: stop this request and every earlier one."""

    request_id: int


# ---- host -> parent ------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", array_like=True, frozen=True):
    """The host's first frame: which protocol it speaks, and who it is (for logs and tests)."""

    protocol: int
    pid: int
    python: str  # "3.11.7"
    platform: str = ""  # sys.platform: "linux", "win32", "darwin"


class Loaded(msgspec.Struct, tag="loaded", array_like=True, frozen=True):
    request_id: int
    payload: Envelope  # the engine's model info


class Event(msgspec.Struct, tag="event", array_like=True, frozen=True):
    request_id: int
    payload: Envelope  # an engine event: TokenEvent, StatsEvent, StepEvent, PreviewEvent...


class Done(msgspec.Struct, tag="done", array_like=True, frozen=True):
    request_id: int
    payload: Envelope  # the engine's result


class Failed(msgspec.Struct, tag="failed", array_like=True, frozen=True):
    request_id: int
    kind: str  # an ErrorKind value
    message: str


ToHost = Union[Load, Generate, Shutdown]
FromHost = Union[Hello, Loaded, Event, Done, Failed]

_ENCODER = msgspec.msgpack.Encoder()
_TO_HOST = msgspec.msgpack.Decoder(ToHost)
_FROM_HOST = msgspec.msgpack.Decoder(FromHost)
_CANCEL = msgspec.msgpack.Decoder(Cancel)
_ANY = msgspec.msgpack.Decoder()


def encode(message: msgspec.Struct) -> bytes:
    return _ENCODER.encode(message)


def decode_to_host(frame: bytes) -> tuple[Any, Any]:
    """A request-line frame as (message, its opened payload or None); ProtocolError when it is not one."""
    return _decode(_TO_HOST, frame)


def decode_from_host(frame: bytes) -> tuple[Any, Any]:
    """A frame from the host as (message, its opened payload or None); ProtocolError when it is not one."""
    return _decode(_FROM_HOST, frame)


def decode_cancel(frame: bytes) -> Cancel:
    try:
        return _CANCEL.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"it is not a cancel message ({exc})") from None


def _decode(decoder: msgspec.msgpack.Decoder, frame: bytes) -> tuple[Any, Any]:
    try:
        message = decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"it is not a message of Atelier's engine protocol ({exc})") from None
    payload = getattr(message, "payload", None)
    return message, payload.open() if payload is not None else None


def request_id_of(frame: bytes) -> int:
    """The request id a frame that was refused seems to carry (0 when it has none), to address the refusal."""
    try:
        items = _ANY.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0
    if isinstance(items, list) and len(items) > 1 and type(items[1]) is int:
        return items[1]
    return 0


def hello() -> Hello:
    return Hello(PROTOCOL_VERSION, os.getpid(), sys.version.split()[0], sys.platform)


def check_hello(message: Any, foreign: bool) -> Hello:
    """The host's Hello if it speaks this protocol, else the one sentence for the user (EngineError)."""
    if isinstance(message, Hello) and message.protocol == PROTOCOL_VERSION:
        return message
    if isinstance(message, Hello):
        detail = f"it speaks engine protocol {message.protocol}, this app {PROTOCOL_VERSION}"
    else:
        detail = f"its first message was not a Hello of engine protocol {PROTOCOL_VERSION}"
    raise another_version(foreign, detail)


def another_version(foreign: bool, detail: str) -> EngineError:
    if foreign:
        return EngineError(ErrorKind.BROKEN, IMAGE_ENGINE_FROM_ANOTHER_VERSION)
    return EngineError(ErrorKind.BROKEN, HOST_FROM_ANOTHER_VERSION.format(detail=detail))
