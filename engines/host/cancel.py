"""Per-request cancel flags, and the cancel line that carries them to the host.

Every request (a load or a generation) has an id, and ids only grow. The
parent cancels request *n* by raising one number, "cancelled up to", to at
least *n*; the engine of request *r* polls ``cancelled_up_to >= r``. So:

- a cancel reaches the request it was meant for, a load included;
- it can never leak into the next request, which has a larger id, so
  nothing ever has to be cleared (clearing a shared flag when the next
  request started is how a Stop pressed during a load used to get lost);
- a cancel that arrives before its request starts still counts.

Cancelling is not a message on the request line, where it would wait behind
the busy load or generation: the host has a second connection, the cancel
line. The parent writes :class:`~engines.host.protocol.Cancel` frames there
(:class:`CancelLine`); a reader thread in the host raises the number
(:class:`RequestCancels.listen`), and the engine's poll is one attribute
read. A cancel line that closes cancels everything.
"""

from __future__ import annotations

import logging
import threading

from engines.host.protocol import Cancel, ProtocolError, decode_cancel, encode

log = logging.getLogger("atelier.engine_host")

CANCEL_ALL = 2**62  # larger than any request id: cancels everything (close)


class RequestFlag:
    """The :class:`engines.api.CancelFlag` of one request."""

    __slots__ = ("_read", "_request_id")

    def __init__(self, read_cancelled_up_to, request_id: int) -> None:
        self._read = read_cancelled_up_to
        self._request_id = request_id

    def is_set(self) -> bool:
        return self._read() >= self._request_id


class RequestCancels:
    """"Cancelled up to", in the host's memory, fed by the cancel line."""

    def __init__(self) -> None:
        self._upto = 0
        self._lock = threading.Lock()

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._upto = max(self._upto, int(request_id))

    def cancelled_up_to(self) -> int:
        return self._upto

    def flag(self, request_id: int) -> RequestFlag:
        return RequestFlag(self.cancelled_up_to, request_id)

    def listen(self, conn) -> None:
        """Read Cancel frames until the line closes (then cancel all); a frame that is not one is skipped."""
        while True:
            try:
                frame = conn.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                self.cancel(decode_cancel(frame).request_id)
            except ProtocolError as exc:
                log.warning("the cancel line refused a frame: %s", exc)
        self.cancel(CANCEL_ALL)


class CancelLine:
    """The parent's end of the cancel line; safe from any thread."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def cancel(self, request_id: int) -> None:
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.send_bytes(encode(Cancel(int(request_id))))
            except (OSError, ValueError):
                pass  # the host is gone: nothing left to cancel

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
