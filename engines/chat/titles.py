"""A chat's automatic title: the first line of its first message, as plain words.

People paste Markdown (a heading, a bold phrase, a link, a code fence) as
their first message; the chat list shows titles as plain text, so the
markup is taken off and only what a reader would see is kept.
"""

from __future__ import annotations

import re

DEFAULT_TITLE = "New chat"
TITLE_MAX_CHARS = 48

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
_BLOCK_PREFIX = re.compile(r"^\s*(?:>\s*)+|^\s{0,3}#{1,6}(?:\s+|$)|^\s*(?:[-+*]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_CODE = re.compile(r"(`+)(.+?)\1")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_CLOSING_HASHES = re.compile(r"\s+#+\s*$")


def plain_line(line: str) -> str:
    """One line of Markdown as the words a reader sees (whitespace collapsed)."""
    if _RULE.match(line) or _TABLE_RULE.match(line) or _FENCE.match(line):
        return ""
    line = _BLOCK_PREFIX.sub("", line, count=1)
    line = _CLOSING_HASHES.sub("", line)
    line = _IMAGE.sub(r"\1", line)
    line = _LINK.sub(r"\1", line)
    line = _AUTOLINK.sub(r"\1", line)
    line = _CODE.sub(lambda m: m.group(2).strip(), line)
    line = _TAG.sub("", line)
    for pattern in (_STRONG, _EMPHASIS):
        line = pattern.sub(lambda m: m.group(2), line)
    line = _STRIKE.sub(r"\1", line)
    line = line.strip().strip("|").replace(" | ", " · ")
    return " ".join(line.split())


def auto_title_from(text: str) -> str:
    """A short title from the first user message: its first line with words in it.

    Markdown is reduced to its text, whitespace is collapsed and the line is
    cut at a word boundary where possible to at most :data:`TITLE_MAX_CHARS`
    characters, ending in an ellipsis when cut. Blank text gives
    :data:`DEFAULT_TITLE`.
    """
    line = next((plain for plain in map(plain_line, text.splitlines()) if plain), "")
    if not line:
        return DEFAULT_TITLE
    if len(line) <= TITLE_MAX_CHARS:
        return line
    cut = line[: TITLE_MAX_CHARS - 1]
    space = cut.rfind(" ")
    if space >= TITLE_MAX_CHARS // 2:  # keep whole words unless that loses too much
        cut = cut[:space]
    return cut.rstrip(" .,;:-") + "…"
