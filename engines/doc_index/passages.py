"""Splitting a document's text into passages, counted in the embedding model's own tokens.

Each passage is at most :data:`PASSAGE_TOKENS` tokens with
:data:`OVERLAP_TOKENS` of overlap with the one before, and keeps its page
and the character span it came from, so a citation points at the exact
text. 256 tokens: all-MiniLM-L6-v2 was trained on 256-token inputs (it
truncates longer ones), bge-small and multilingual-e5-small take 512, and
a passage of that size is about a paragraph, what a citation should show.
32 tokens of overlap (one long sentence) means a sentence cut at a
boundary is whole in one of the two passages, for 12% more passages.

Counting uses the model's tokenizer word by word (a word's count is
cached: text repeats its words), which is exact for WordPiece and
SentencePiece models, whose tokens never span a space. A "word" longer
than :data:`MAX_WORD_CHARS` (a URL, base64) is cut into pieces, so no
single piece can overflow a passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

PASSAGE_TOKENS = 256
OVERLAP_TOKENS = 32
MAX_WORD_CHARS = 64

_WORDS = re.compile(r"\S+")


@dataclass(frozen=True)
class Passage:
    ordinal: int
    page: int | None
    start: int  # character offsets in the page's text
    end: int
    tokens: int
    text: str


def split_passages(pages: tuple[tuple[int | None, str], ...], count_tokens: Callable[[str], int], *,
                   passage_tokens: int = PASSAGE_TOKENS, overlap_tokens: int = OVERLAP_TOKENS) -> list[Passage]:
    """Every page's passages, in order; a passage never crosses a page."""
    if not 0 <= overlap_tokens < passage_tokens:
        raise ValueError("the overlap must be shorter than a passage")
    cache: dict[str, int] = {}

    def tokens_of(word: str) -> int:
        count = cache.get(word)
        if count is None:
            count = cache[word] = max(1, count_tokens(word))
        return count

    passages: list[Passage] = []
    for page, text in pages:
        words = list(_pieces(text))
        counts = [tokens_of(text[s:e]) for s, e in words]
        first = 0
        while first < len(words):
            last, used = first, 0
            while last < len(words) and (used + counts[last] <= passage_tokens or last == first):
                used += counts[last]
                last += 1
            start, end = words[first][0], words[last - 1][1]
            passages.append(Passage(len(passages), page, start, end, used, text[start:end]))
            if last >= len(words):
                break
            back, kept = last, 0  # step back over up to overlap_tokens of the passage's end
            while back - 1 > first and kept + counts[back - 1] <= overlap_tokens:
                back -= 1
                kept += counts[back]
            first = back
    return passages


def _pieces(text: str):
    """(start, end) of each word (a run of non-space), long ones cut into MAX_WORD_CHARS pieces."""
    for match in _WORDS.finditer(text):
        for start in range(match.start(), match.end(), MAX_WORD_CHARS):
            yield start, min(start + MAX_WORD_CHARS, match.end())
