"""A deadline for each request head, which uvicorn does not have.

uvicorn closes a kept-alive connection that stays idle, but a connection
that sends a request head one byte at a time (slowloris), or stops half-way
through it, is held for ever: its keep-alive timer is cancelled by the
first byte. This protocol arms a timer when a connection opens and after
each response; if the client has not finished the next request head
(h11 still waits in its IDLE state) when it fires, the connection is
closed. The body has its own deadline in :mod:`engines.server.guard`, and
h11's incomplete-event cap bounds the head's size.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def protocol_with_head_timeout(head_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head takes longer than ``head_timeout_s``."""

    class HeadTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_deadline)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_deadline(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # no request started: nobody waits for an answer

    return HeadTimeoutProtocol
