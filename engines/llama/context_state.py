"""Save and restore what llama.cpp has read: the context's KV cache, with its tokens.

llama-cpp-python's ``Llama.save_state`` copies the context and its own
score matrix too: with Gemma 3's 262,144-token vocabulary that is a
512-row matrix (over 500 MB) per saved state. llama.cpp's own context state
(``llama_state_get_data``) is the KV cells and the last logits only: about
18 KB per token for Gemma 3 270M at f16. The next request re-reads at least
its last prompt token anyway, which gives fresh logits (``Llama.generate``
does that for any restored or truncated state).

The whole-context state, not the per-sequence one: for a model with
sliding-window attention (Gemma 3: 512 tokens in 5 of every 6 layers) the
per-sequence state leaves out the cells that have slid out of the window.
Such a state can only be extended from its very end; a follow-up whose
prompt differs from it even a few tokens before the end would then attend
over a window with holes, and quietly get different tokens than the same
prompt read from scratch. The whole-context state keeps every cell.

Once a whole-context state is back, llama.cpp starts placing new tokens in
the cells that slid out of the window (it searches for free cells from the
first one), so a context that was restored, then extended, holds positions
``floor``..n-1 in its sliding-window layers (all of 0..n-1 in the others).
That is exact for any continuation that cuts it back no further than
``floor + window - 1``: the cut-off cells are outside every window it still
reads. :func:`exact_from` says whether a given cut is; the prompt cache
never makes another, neither with a saved state nor with the live context.

A state is only taken when it is exactly the tokens llama-cpp-python thinks
it holds (positions up to n-1 in sequence 0), so a restore can never pair a
KV cache with the wrong tokens; llama.cpp itself refuses a state made for
another model layout or cache type (it returns 0), and the context is then
cleared and the prompt read from scratch.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)
SEQ = 0  # llama-cpp-python decodes everything into sequence 0


@dataclass(frozen=True)
class SavedState:
    """The KV cache of a token prefix: ``blob`` is llama.cpp's state of ``tokens`` (int32, read-only)."""

    tokens: np.ndarray
    blob: bytearray
    key: str | None = None  # the conversation it came from (TextRequest.cache_key), a lookup hint
    floor: int = 0  # the lowest position its sliding-window layers hold (0 for other models)

    @property
    def nbytes(self) -> int:
        return len(self.blob) + self.tokens.nbytes


def live_tokens(llm) -> np.ndarray:
    """The tokens whose KV cells the context holds now (a view: copy before keeping it)."""
    return llm.input_ids[: llm.n_tokens]


def can_cache(llm) -> bool:
    """Whether a saved prefix can be restored and then extended (not for recurrent or hybrid models)."""
    return not (getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False))


def sliding_window(llm) -> int:
    """The attention window of the model's sliding-window layers, in tokens; 0 when it has none."""
    import llama_cpp

    return max(0, int(llama_cpp.llama_model_n_swa(llm._model.model)))


def live_floor(llm) -> int:
    """The lowest position the live context holds in every layer (see the module docstring)."""
    import llama_cpp

    if llm.n_tokens <= 0:
        return 0
    return max(0, int(llama_cpp.llama_memory_seq_pos_min(llama_cpp.llama_get_memory(llm._ctx.ctx), SEQ)))


def exact_from(floor: int, cut: int, window: int) -> bool:
    """Whether reading on from position ``cut`` over cells ``floor``..cut-1 gives what a full context gives."""
    return floor == 0 or (window > 0 and cut - window + 1 >= floor)


def clear(llm) -> None:
    """Forget the live context: the next prompt is read from its first token."""
    import llama_cpp

    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
    llm.n_tokens = 0
    llm._requires_eval = True


def capture(llm, key: str | None) -> SavedState | None:
    """A copy of the live context's state, or None when it is empty or not the tokens it should be."""
    import llama_cpp

    n = int(llm.n_tokens)
    if n <= 0:
        return None
    ctx = llm._ctx.ctx
    memory = llama_cpp.llama_get_memory(ctx)
    floor = live_floor(llm)
    if llama_cpp.llama_memory_seq_pos_max(memory, SEQ) != n - 1 or (floor and not sliding_window(llm)):
        return None  # llama.cpp holds something else than input_ids[:n] says (a shifted or partial cache)
    size = int(llama_cpp.llama_state_get_size(ctx))
    blob = bytearray(size)
    written = int(llama_cpp.llama_state_get_data(ctx, _pointer(blob), size))
    if written <= 0 or written > size:
        log.warning("llama.cpp could not copy the context state (%d of %d bytes)", written, size)
        return None
    del blob[written:]
    tokens = np.array(llm.input_ids[:n], dtype=np.int32)
    tokens.setflags(write=False)
    return SavedState(tokens, blob, key, floor)


def restore(llm, state: SavedState) -> bool:
    """Make ``state`` the live context. False (and an empty context) when llama.cpp refuses it."""
    import llama_cpp

    n = len(state.tokens)
    ctx = llm._ctx.ctx
    memory = llama_cpp.llama_get_memory(ctx)
    clear(llm)
    if n == 0 or n >= llm.n_ctx():
        return False
    read = int(llama_cpp.llama_state_set_data(ctx, _pointer(state.blob), len(state.blob)))
    if (read == 0 or llama_cpp.llama_memory_seq_pos_min(memory, SEQ) != state.floor
            or llama_cpp.llama_memory_seq_pos_max(memory, SEQ) != n - 1):
        log.warning("llama.cpp refused a saved context state of %d tokens; reading the prompt instead", n)
        llama_cpp.llama_memory_clear(memory, True)
        return False
    llm.input_ids[:n] = state.tokens
    llm.n_tokens = n
    return True


def common_prefix(a, b) -> int:
    """How many leading tokens two token sequences share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    left = np.asarray(a[:n], dtype=np.int64)
    right = np.asarray(b[:n], dtype=np.int64)
    differ = np.flatnonzero(left != right)
    return int(differ[0]) if differ.size else n


def _pointer(buffer: bytearray):
    return ctypes.cast((ctypes.c_uint8 * len(buffer)).from_buffer(buffer), ctypes.POINTER(ctypes.c_uint8))
