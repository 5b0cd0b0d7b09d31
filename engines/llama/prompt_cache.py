"""The prompt cache: each conversation finds what llama.cpp already read of it.

llama-cpp-python keeps one live context and reuses its longest common
prefix with the next prompt: a follow-up in the same chat reads only the new
message. But one message in another chat overwrites that context, and
switching back meant reading the whole conversation again (11 s for 4,150
tokens of Gemma 3 270M here). So, as llama.cpp's server does with its slot
save/restore and llama-cpp-python's ``LlamaRAMCache`` with its
longest-prefix lookup:

- just before the live context is overwritten by a prompt that keeps little
  of it, its state is saved (never on the decode path: a request that is
  about to read a different prompt pays a memory copy of tens of ms);
- a request whose prompt shares a longer prefix with a saved state than
  with the live context gets that state restored, then reads only the rest.

Lookup is by longest token prefix, so it needs no conversation id: a server
client that resends its whole history finds it too. ``cache_key`` only
breaks ties and names the state.

Bounds, in memory: at most ``RAM_STATES`` full-context states (8: the
conversations one switches between) and at most ``RAM_SHARE`` (10%) of the
memory still available, re-measured at each save, so the cache shrinks when
the machine needs the memory; least recently used first. A 4,096-token state
of Gemma 3 270M is 75 MB, so it keeps all 8 (600 MB); an 8B model at 8,192
tokens (1 GB a state) keeps what 10% of free memory allows. States that no
longer fit in memory stay on disk (:mod:`engines.llama.state_store`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from engines.llama.context_state import (
    SavedState,
    can_cache,
    capture,
    clear,
    common_prefix,
    exact_from,
    live_floor,
    live_tokens,
    restore,
    sliding_window,
)
from engines.llama.state_store import StateStore

log = logging.getLogger(__name__)

RAM_STATES = 8
RAM_SHARE = 0.10
MIN_STATE_TOKENS = 32  # shorter prefixes are read again faster than they are found
MIN_GAIN_TOKENS = 32  # restore only when it saves reading at least this many tokens...
GAIN_SHARE = 1 / 16  # ...and a sixteenth of the state (a restore copies the whole state)
UNLOAD_WRITE_MAX_BYTES = 256 << 20  # the host has about a second to end: larger live states are not written then


@dataclass
class CacheReport:
    """What the cache did for one prompt (for logs, tests and usage figures)."""

    reused_tokens: int  # prompt tokens that were not read again
    restored: bool  # a saved state was brought back
    saved: bool  # the previous live context was saved before being overwritten


class PromptCache:
    def __init__(self, n_ctx: int, store: StateStore | None = None, ram_budget: int | None = None) -> None:
        self._n_ctx = n_ctx
        self._store = store
        self._fixed_budget = ram_budget
        self._ram: OrderedDict[bytes, SavedState] = OrderedDict()  # token hash key -> state, LRU order
        self._live_key: str | None = None  # the conversation the live context belongs to

    # ---- the one entry point of a request --------------------------------

    def prepare(self, llm, prompt: list[int], key: str | None) -> CacheReport:
        """Get the context ready for ``prompt``: save the live state if it is about to go, restore a better one."""
        live = live_tokens(llm)
        live_match = common_prefix(live, prompt)
        if not can_cache(llm):
            return CacheReport(_reusable(live_match, len(prompt)), False, False)
        window = sliding_window(llm)
        live_exact = exact_from(live_floor(llm), _reusable(live_match, len(prompt)), window)
        best, best_match = self._best(prompt, key, window)
        gain = best_match - (live_match if live_exact else 0)
        restore_it = best is not None and gain >= max(MIN_GAIN_TOKENS, int(best_match * GAIN_SHARE))
        saved = False
        discarded = len(live) - live_match if live_exact else len(live)
        if len(live) >= MIN_STATE_TOKENS and (restore_it or discarded >= MIN_STATE_TOKENS):
            state = capture(llm, self._live_key)  # the live conversation is about to be overwritten
            if state is not None:
                saved = self._put(state)
        restored = False
        if restore_it:
            state = self._load(best)
            restored = state is not None and restore(llm, state)
            live_match = common_prefix(state.tokens, prompt) if restored else 0
            if not restored:
                self._forget(best)  # unreadable, or llama.cpp refused it: it always will
        elif not live_exact:
            clear(llm)  # cutting it back that far would read over cells it no longer has
            live_match = 0
        self._live_key = key
        return CacheReport(_reusable(live_match, len(prompt)), restored, saved)

    def close(self, llm) -> None:
        """At unload: keep the live conversation on disk too, then let queued writes finish briefly."""
        if self._store is None:
            return
        if can_cache(llm) and llm.n_tokens >= MIN_STATE_TOKENS:
            state = capture(llm, self._live_key)
            if state is not None and state.nbytes <= UNLOAD_WRITE_MAX_BYTES and not self._covered(state):
                try:
                    self._store.save_now(state, self._drop_subsumed(state))
                except OSError:
                    log.info("could not keep the live prompt state on disk", exc_info=True)
        self._store.flush(timeout=0.5)

    # ---- lookup ----------------------------------------------------------

    def _best(self, prompt: list[int], key: str | None, window: int):
        """The saved state sharing the longest prefix with ``prompt`` (ties: same key, then most recent).

        Only states that can be cut back to where ``prompt`` leaves them exactly count (see ``exact_from``).
        """
        best, best_rank = None, (0, False)
        prompt_array = np.asarray(prompt, dtype=np.int32)
        candidates = list(reversed(self._ram.values()))
        if self._store is not None:
            in_ram = set(self._ram)
            candidates += [e for e in self._store.entries() if _token_hash(e.tokens) not in in_ram]
        for candidate in candidates:
            match = common_prefix(candidate.tokens, prompt_array)
            rank = (match, key is not None and candidate.key == key)
            if (match >= MIN_STATE_TOKENS and rank > best_rank
                    and exact_from(candidate.floor, _reusable(match, len(prompt)), window)):
                best, best_rank = candidate, rank
        return best, best_rank[0]

    def _load(self, candidate) -> SavedState | None:
        if isinstance(candidate, SavedState):
            digest = _token_hash(candidate.tokens)
            if digest in self._ram:  # saving the live state may just have pushed it out of memory
                self._ram.move_to_end(digest)
            return candidate
        state = self._store.load(candidate)
        if state is not None:
            self._keep_in_ram(state)
        return state

    # ---- saving ----------------------------------------------------------

    def _put(self, state: SavedState) -> bool:
        """Keep ``state`` in memory and on disk; states it extends are dropped (it answers for them).

        A state that a saved one extends is not kept: that one answers every prompt at least as well.
        """
        if self._covered(state):
            return False
        subsumed = self._drop_subsumed(state)
        if self._store is not None:
            self._store.save_later(state, subsumed)
        self._keep_in_ram(state)
        return True

    def _forget(self, candidate) -> None:
        """Drop a saved state from memory and disk (``candidate``: a SavedState or a DiskEntry)."""
        self._ram.pop(_token_hash(candidate.tokens), None)
        if self._store is not None:
            if isinstance(candidate, SavedState):
                self._store.discard(candidate.tokens)
            else:
                self._store.remove(candidate.path)

    def _drop_subsumed(self, state: SavedState) -> list[np.ndarray]:
        """Forget the states ``state`` extends; their tokens, for the store to remove their files."""
        def extended(tokens) -> bool:
            return len(tokens) <= len(state.tokens) and common_prefix(tokens, state.tokens) == len(tokens)

        gone = [self._ram.pop(h).tokens for h in [h for h, old in self._ram.items() if extended(old.tokens)]]
        if self._store is not None:
            gone += [e.tokens for e in self._store.entries() if extended(e.tokens)]
        return gone

    def _covered(self, state: SavedState) -> bool:
        """Whether a saved state already holds all of ``state``'s tokens (and maybe more)."""
        saved = list(self._ram.values()) + (self._store.entries() if self._store is not None else [])
        n = len(state.tokens)
        return any(len(s.tokens) >= n and common_prefix(s.tokens, state.tokens) == n for s in saved)

    def _keep_in_ram(self, state: SavedState) -> None:
        self._ram[_token_hash(state.tokens)] = state
        self._ram.move_to_end(_token_hash(state.tokens))
        budget = self.ram_budget(state)
        while self._ram and sum(s.nbytes for s in self._ram.values()) > budget:
            self._ram.popitem(last=False)  # still on disk when the store took it

    def ram_budget(self, sample: SavedState) -> int:
        """Bytes of states kept in memory: ``RAM_STATES`` full contexts, at most ``RAM_SHARE`` of what is free."""
        if self._fixed_budget is not None:
            return self._fixed_budget
        import psutil

        per_token = sample.nbytes / max(1, len(sample.tokens))
        held = sum(s.nbytes for s in self._ram.values())
        available = psutil.virtual_memory().available + held
        return int(min(RAM_STATES * per_token * self._n_ctx, RAM_SHARE * available))

    @property
    def states_in_ram(self) -> int:
        return len(self._ram)


def _reusable(match: int, prompt_size: int) -> int:
    """Prompt tokens llama-cpp-python will not read again: a fully cached prompt still re-reads its last one."""
    return min(match, max(0, prompt_size - 1))


def _token_hash(tokens: np.ndarray) -> bytes:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(tokens, dtype=np.int32).tobytes(), digest_size=16).digest()
