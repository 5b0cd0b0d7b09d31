"""Prompt weighting in AUTOMATIC1111's syntax, and prompts longer than CLIP's 77 tokens.

Users paste prompts from A1111, Civitai and Fooocus, which all read
``(word:1.3)`` as "more of this", ``(word)`` as ×1.1, ``[word]`` as ÷1.1,
``\\(`` as a literal parenthesis and ``BREAK`` as "start a new chunk here",
and which never cut a prompt at 77 tokens. diffusers reads all of that as
plain text and truncates, so an A1111 prompt would silently give another
picture. This module follows A1111 (``modules/prompt_parser.py`` and
``modules/sd_hijack_clip.py``) step for step, for both backends:

1. :func:`parse_prompt_attention` splits the prompt into (text, weight)
   fragments exactly as A1111 does, except that a prompt whose brackets do
   not balance is read literally, with a notice, instead of A1111's silent
   "an open ``(`` weights the rest of the prompt";
2. :func:`make_chunks` tokenizes each fragment and packs the tokens into
   chunks of 75 (a chunk that would split a phrase goes back to its last
   comma within 20 tokens), each framed as ``<start> 75 tokens <end>``:
   77 positions, with a weight per position;
3. :func:`encode_weighted` runs the text encoder once per chunk, scales
   each position's hidden state by its weight, restores the chunk's
   original mean (A1111's fix against washed-out images), and joins the
   chunks: a 100-token prompt reaches the UNet as 2×77 = 154 positions.

The arithmetic is numpy, and the encoder is a callable, so the PyTorch
engine (its pipeline's own CLIP modules) and the ONNX engine (its
sessions) share it. A prompt with no weights and at most 75 tokens gives
exactly the tokens, and so exactly the embedding, that the pipelines'
own ``encode_prompt`` gives: nothing changes for plain prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

CHUNK_TOKENS = 75  # CLIP's 77 positions less the start and end tokens
COMMA_BACKTRACK = 20  # A1111's default "comma padding backtrack"
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# A1111's tokenizer for attention syntax (modules/prompt_parser.py), unchanged.
_ATTENTION = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
BREAK = "BREAK"  # the fragment text that marks A1111's BREAK (its weight is -1 there; None here)


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt as (text, weight) fragments, and a notice when it had to be read literally."""

    fragments: tuple[tuple[str, float | None], ...]  # weight None: a BREAK
    notice: str = ""

    @property
    def weighted(self) -> bool:
        return any(weight not in (1.0, None) for _, weight in self.fragments)


def unbalanced_brackets(text: str) -> str:
    """A sentence naming the first bracket that does not balance, or "" when they all do.

    Counted with A1111's own tokenizer, so escaped brackets (``\\(``) and
    the ``:1.3)`` that closes a weight are read as A1111 reads them.
    """
    rounds, squares = [], []
    for match in _ATTENTION.finditer(text):
        token = match.group(0)
        if token == "(":
            rounds.append(match.start())
        elif token == "[":
            squares.append(match.start())
        elif token == ")" or match.group(1) is not None:
            if not rounds:
                return f"a ')' at character {match.end()} closes nothing"
            rounds.pop()
        elif token == "]":
            if not squares:
                return f"a ']' at character {match.end()} closes nothing"
            squares.pop()
    if rounds:
        return f"the '(' at character {rounds[0] + 1} is never closed"
    if squares:
        return f"the '[' at character {squares[0] + 1} is never closed"
    return ""


def parse_prompt_attention(text: str) -> list[list]:
    """A1111's ``parse_prompt_attention``: [[text, weight], ...], runs of equal weight merged.

    >>> parse_prompt_attention('an (important) word')
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for position in range(start, len(res)):
            res[position][1] *= multiplier

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(re.split(_BREAK, token)):
                if i > 0:
                    res.append([BREAK, -1])
                res.append([part, 1.0])
    for position in round_brackets:
        multiply_range(position, ROUND_MULTIPLIER)
    for position in square_brackets:
        multiply_range(position, SQUARE_MULTIPLIER)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):  # merge runs of identical weights
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


def parse_prompt(text: str, label: str = "prompt") -> ParsedPrompt:
    """The prompt's fragments; unbalanced brackets make it one literal fragment, with a notice."""
    problem = unbalanced_brackets(text)
    if problem:
        notice = (f"The {label}'s brackets do not balance ({problem}), so it was read literally, without "
                  "weights. Close each '(' and '[', or write \\( and \\) for literal ones.")
        return ParsedPrompt(((text, 1.0),), notice)
    fragments = tuple((part, None if weight == -1 and part == BREAK else float(weight))
                      for part, weight in parse_prompt_attention(text))
    return ParsedPrompt(fragments)


@dataclass(frozen=True)
class Chunk:
    """77 token ids (start, 75 tokens or padding, end) and the weight of each position."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class TokenIds:
    """The ids a CLIP tokenizer frames and pads with."""

    start: int
    end: int
    pad: int
    comma: int | None


def token_ids_of(tokenizer) -> TokenIds:
    comma = tokenizer.get_vocab().get(",</w>")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TokenIds(tokenizer.bos_token_id, tokenizer.eos_token_id, pad, comma)


def _frame(tokens: list[int], weights: list[float], ids: TokenIds) -> Chunk:
    """``<start> tokens <end>``, padded to 77 as the tokenizer pads (A1111: end token, then the pad token)."""
    framed = [ids.start, *tokens, ids.end]
    framed_weights = [1.0, *weights, 1.0]
    padding = CHUNK_TOKENS + 2 - len(framed)
    return Chunk(tuple(framed + [ids.pad] * padding), tuple(framed_weights + [1.0] * padding))


def make_chunks(parsed: ParsedPrompt, tokenize: Callable[[str], list[int]], ids: TokenIds) -> list[Chunk]:
    """Pack the fragments' tokens into chunks of 75, as A1111's ``tokenize_line`` does."""
    chunks: list[Chunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def next_chunk() -> None:
        nonlocal tokens, weights, last_comma
        chunks.append(_frame(tokens, weights, ids))
        tokens, weights, last_comma = [], [], -1

    for text, weight in parsed.fragments:
        if weight is None:  # BREAK: pad what there is and start a new chunk
            next_chunk()
            continue
        position = 0
        fragment = tokenize(text)
        while position < len(fragment):
            token = fragment[position]
            if ids.comma is not None and token == ids.comma:
                last_comma = len(tokens)
            elif (len(tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(tokens) - last_comma <= COMMA_BACKTRACK):
                # The chunk is full mid-phrase: move the words after its last comma to the next chunk.
                split = last_comma + 1
                carried, carried_weights = tokens[split:], weights[split:]
                tokens, weights = tokens[:split], weights[:split]
                next_chunk()
                tokens, weights = carried, carried_weights
            if len(tokens) == CHUNK_TOKENS:
                next_chunk()
            tokens.append(token)
            weights.append(weight)
            position += 1
    if tokens or not chunks:
        next_chunk()
    return chunks


Encoder = Callable[[np.ndarray], "list[np.ndarray]"]
"""Token ids (1 × 77, int64) → the encoder's outputs: the hidden states (1 × 77 × width) first."""


MEAN_TOO_SMALL = 1e-4  # |mean| below this fraction of the spread: restoring the mean would divide by ~0


def apply_weights(hidden: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Scale each position by its weight and restore the original mean, as A1111 does (per chunk).

    The restoration multiplies by ``original mean / scaled mean``. CLIP's
    trained final layer norm leaves a clear mean (about -0.1 to 0.3), but a
    layer norm without bias (random-weight models, some fine-tunes) leaves a
    mean of ~1e-9 whose sign is rounding noise: the ratio would then be
    noise too, and could flip or blow up the embedding. There the scaled
    states are kept as they are, which is what the restoration is meant to
    approximate anyway (a factor near 1).
    """
    if np.all(weights == 1.0):
        return hidden  # bit for bit the unweighted embedding
    hidden = hidden.astype(np.float32)
    original_mean = hidden.mean()
    scaled = hidden * weights[..., None].astype(np.float32)
    scaled_mean = scaled.mean()
    spread = float(hidden.std())
    if min(abs(original_mean), abs(scaled_mean)) <= MEAN_TOO_SMALL * spread:
        return scaled
    return scaled * (original_mean / scaled_mean)


def encode_chunks(chunks: list[Chunk], encode: Encoder) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each chunk encoded and weighted, joined along the sequence (1 × 77·n × width), plus the other outputs.

    The other outputs (SDXL's pooled projection) are the first chunk's, as in A1111.
    """
    joined, extras = [], []
    for i, chunk in enumerate(chunks):
        outputs = encode(np.array([chunk.ids], dtype=np.int64))
        joined.append(apply_weights(np.asarray(outputs[0]), np.array([chunk.weights], dtype=np.float32)))
        if i == 0:
            extras = [np.asarray(extra) for extra in outputs[1:]]
    return np.concatenate(joined, axis=1), extras


def pad_to_same_length(first: np.ndarray, second: np.ndarray, empty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give the prompt and the negative prompt as many chunks, with ``empty`` (the empty prompt's 77) as A1111 does."""
    while first.shape[1] < second.shape[1]:
        first = np.concatenate([first, empty], axis=1)
    while second.shape[1] < first.shape[1]:
        second = np.concatenate([second, empty], axis=1)
    return first, second


def tokenize_fn(tokenizer) -> Callable[[str], list[int]]:
    """A fragment → its token ids, without start/end tokens and without truncation."""
    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text, truncation=False, add_special_tokens=False).input_ids)

    return tokenize
