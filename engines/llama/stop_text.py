"""Stop sequences on a streamed reply, with OpenAI's semantics.

The reply ends just before the first stop sequence; the stop text itself is
never part of it. A stop sequence may arrive split over several tokens
("<|e" + "nd|>"), so text that could still be the start of one is held back
until the next piece shows whether it is: nothing that later turns out to be
part of a stop sequence is ever streamed.

Only the held-back tail and the new piece are scanned, so the cost per token
does not grow with the length of the reply (llama-cpp-python's own scan
re-reads the whole reply at every token).
"""

from __future__ import annotations


class StopScanner:
    def __init__(self, stops) -> None:
        self._stops = tuple(s for s in dict.fromkeys(stops) if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``text`` (after what was held back) that is certainly reply text."""
        if self.stopped or not text:
            return ""
        if not self._stops:
            return text
        pending = self._held + text
        cut = min((i for i in (pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return pending[:cut]
        keep = self._longest_partial_stop(pending)
        self._held = pending[len(pending) - keep:] if keep else ""
        return pending[: len(pending) - keep]

    def flush(self) -> str:
        """At the end of the reply: what was held back was not a stop sequence after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_stop(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best
