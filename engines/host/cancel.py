"""Per-request cancel flags, shared by the parent and its engine host.

Every request (a load or a generation) has an id, and ids only grow. The
parent cancels request *n* by raising one number, "cancelled up to", to at
least *n*; the engine of request *r* polls ``cancelled_up_to >= r``. So:

- a cancel reaches the request it was meant for, a load included;
- it can never leak into the next request, which has a larger id, so
  nothing ever has to be cleared (clearing a shared flag when the next
  request started is how a Stop pressed during a load used to get lost);
- a cancel that arrives before its request starts still counts.

The number lives in shared memory for the spawned host
(:class:`SharedCancels`: one aligned 64-bit read per poll, cheaper than a
``multiprocessing.Event``, which takes a lock) and in the child's own memory
for a host under another interpreter (:class:`RequestCancels`, fed by the
cancel line, see :mod:`engines.host.standalone`).
"""

from __future__ import annotations

import threading

CANCEL_ALL = 2**62  # larger than any request id: cancels everything (close)


class RequestFlag:
    """The :class:`engines.api.CancelFlag` of one request."""

    __slots__ = ("_read", "_request_id")

    def __init__(self, read_cancelled_up_to, request_id: int) -> None:
        self._read = read_cancelled_up_to
        self._request_id = request_id

    def is_set(self) -> bool:
        return self._read() >= self._request_id


class _Never:
    """The flag of a message that is not a request (it has no id): never set."""

    @staticmethod
    def is_set() -> bool:
        return False


NEVER = _Never()


class SharedCancels:
    """"Cancelled up to" in a shared ``RawValue('q')``: the parent writes it, the spawned host reads it.

    Only the parent writes (under its own lock, so two threads cancelling at
    once cannot lower the number); an aligned 64-bit store or load is atomic
    on every platform Atelier runs on, so the reader takes no lock.
    """

    def __init__(self, value) -> None:
        self._value = value
        self._lock = threading.Lock()

    @classmethod
    def create(cls, ctx) -> "SharedCancels":
        return cls(ctx.RawValue("q", 0))

    @property
    def shared(self):
        """What to hand to the child process (as a ``Process`` argument)."""
        return self._value

    def cancel(self, request_id: int) -> None:
        with self._lock:
            if self._value.value < request_id:
                self._value.value = int(request_id)

    def cancelled_up_to(self) -> int:
        return self._value.value

    def flag(self, request_id: int | None) -> RequestFlag | _Never:
        return RequestFlag(self.cancelled_up_to, request_id) if request_id else NEVER


class RequestCancels:
    """"Cancelled up to" in the child's memory, fed by request ids read from a connection."""

    def __init__(self) -> None:
        self._upto = 0
        self._lock = threading.Lock()

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._upto = max(self._upto, int(request_id))

    def cancelled_up_to(self) -> int:
        return self._upto

    def flag(self, request_id: int | None) -> RequestFlag | _Never:
        return RequestFlag(self.cancelled_up_to, request_id) if request_id else NEVER

    def is_cancelled(self, request_id: int) -> bool:
        return self._upto >= request_id

    def listen(self, conn) -> None:
        """Read request ids from the cancel connection until it closes (then cancel all)."""
        while True:
            try:
                request_id = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - a bad message must not end the line
                continue
            if isinstance(request_id, int):
                self.cancel(request_id)
        self.cancel(CANCEL_ALL)
