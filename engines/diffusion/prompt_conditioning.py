"""A prompt and a negative prompt → what the UNet is conditioned on, for SD 1.x/2.x and SDXL, on either backend.

Both engines call these functions, the PyTorch engine with its pipeline's
own CLIP modules and the ONNX engine with its sessions (each wraps its
encoder as a :data:`~engines.diffusion.prompt_weights.Encoder`), so the
prompt weighting and the 77-token chunks of :mod:`prompt_weights` are
written once and one seed gives the same image on both.

What the UNet takes follows diffusers' (0.42) ``encode_prompt``:

* **SD 1.x/2.x**: the text encoder's last hidden state; with guidance,
  the negative prompt's too ("" when there is none);
* **SDXL**: both encoders' penultimate hidden states side by side, and the
  second encoder's pooled projection; an empty negative prompt is all
  zeros when the model says ``force_zeros_for_empty_prompt``.

A prompt and a negative prompt of different lengths are evened out with
the empty prompt's encoding, as A1111 does, since the UNet's batch needs
one sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.diffusion.prompt_weights import (
    Encoder,
    encode_chunks,
    make_chunks,
    pad_to_same_length,
    parse_prompt,
    token_ids_of,
    tokenize_fn,
)


@dataclass
class ClipSide:
    """One CLIP tokenizer and its text encoder (as an :data:`Encoder`)."""

    tokenizer: Any
    encode: Encoder
    _empty: tuple | None = field(default=None, repr=False)

    def text(self, text: str, label: str = "prompt") -> tuple[np.ndarray, list[np.ndarray], str]:
        """``text`` parsed, chunked, encoded and weighted: (hidden states, other outputs, notice)."""
        parsed = parse_prompt(text, label)
        chunks = make_chunks(parsed, tokenize_fn(self.tokenizer), token_ids_of(self.tokenizer))
        hidden, extras = encode_chunks(chunks, self.encode)
        return hidden, extras, parsed.notice

    def empty(self) -> np.ndarray:
        """The empty prompt's 77 positions (what a shorter prompt is padded with); encoded once."""
        if self._empty is None:
            self._empty = (self.text("")[0],)
        return self._empty[0]


@dataclass(frozen=True)
class PromptEmbeds:
    """What the UNet is conditioned on. ``negative`` is None without guidance; ``pooled`` only for SDXL."""

    prompt: np.ndarray  # 1 × 77·chunks × width
    negative: np.ndarray | None
    pooled: np.ndarray | None = None
    negative_pooled: np.ndarray | None = None
    notices: tuple[str, ...] = ()

    @property
    def tokens(self) -> int:
        return int(self.prompt.shape[1])


def sd_embeds(prompt: str, negative: str, guided: bool, side: ClipSide) -> PromptEmbeds:
    """SD 1.x/2.x: the last hidden states of the prompt (and, guided, of the negative prompt)."""
    embeds, _, notice = side.text(prompt)
    notices = [notice]
    negative_embeds = None
    if guided:
        negative_embeds, _, negative_notice = side.text(negative, "negative prompt")
        notices.append(negative_notice)
        embeds, negative_embeds = pad_to_same_length(embeds, negative_embeds, side.empty())
    return PromptEmbeds(embeds, negative_embeds, notices=tuple(n for n in notices if n))


def _sdxl_text(text: str, label: str, first: ClipSide, second: ClipSide):
    hidden_1, _, notice = first.text(text, label)
    hidden_2, extras, _ = second.text(text, label)  # the same parse, so the same notice
    return np.concatenate([hidden_1, hidden_2], axis=-1), extras[0], notice


def sdxl_embeds(prompt: str, negative: str, guided: bool, first: ClipSide, second: ClipSide,
                force_zeros_for_empty_prompt: bool) -> PromptEmbeds:
    """SDXL: both encoders' penultimate hidden states side by side, and the second one's pooled projection.

    ``first`` and ``second`` must return [penultimate hidden state] and
    [penultimate hidden state, pooled projection].
    """
    embeds, pooled, notice = _sdxl_text(prompt, "prompt", first, second)
    notices = [notice]
    negative_embeds = negative_pooled = None
    if guided:
        if not negative and force_zeros_for_empty_prompt:
            # SDXL was trained to read "no negative prompt" as all-zero embeddings, not as "" encoded.
            negative_embeds, negative_pooled = np.zeros_like(embeds), np.zeros_like(pooled)
        else:
            negative_embeds, negative_pooled, negative_notice = _sdxl_text(negative, "negative prompt", first, second)
            notices.append(negative_notice)
            empty = np.concatenate([first.empty(), second.empty()], axis=-1)
            embeds, negative_embeds = pad_to_same_length(embeds, negative_embeds, empty)
    return PromptEmbeds(embeds, negative_embeds, pooled, negative_pooled, tuple(n for n in notices if n))
