"""Tokenizing a rendered prompt so that only the template's markup makes control tokens.

Tokenizing the whole prompt with llama.cpp's special-token parsing
(``special=True``) turns ``<end_of_turn>\\n<start_of_turn>model`` typed in a
message, a system prompt or a document into real control tokens: the user
forges a turn (defect D9). Tokenizing it without parsing breaks the
template's own markup. So the prompt is tokenized in pieces:

- the template's text (:attr:`RenderedPrompt.segments` says which is which)
  is cut at the control tokens llama.cpp finds in it;
- everything between two control tokens, template text and message text
  alike, is one run, tokenized with ``special=False``.

That is exactly how llama.cpp itself tokenizes with ``special=True``: it
splits the text at control tokens (honouring their lstrip/rstrip flags) and
tokenizes each run on its own. So for a message without control-token text
the tokens are the same as before, boundaries included; and a message that
contains such text gets ordinary tokens for it.

Each run's tokens are kept (:class:`_RunTokens`): a conversation resends the
same messages every turn, and tokenizing its unchanged history again cost a
follow-up in a 4,000-token chat about as much as reading its new tokens.
A run is tokenized on its own, so its cached tokens are exactly what
tokenizing it again would give.

When the template rewrites message text beyond trimming (so segments are
None), the whole prompt is tokenized the old way only if no message holds
control-token text; otherwise the request is refused in words.

For a vision model, ``image_marker`` names the text that stands for an
attached image in the messages: each one becomes :data:`IMAGE_SLOT` in the
tokens, and the text on either side is tokenized on its own, as llama.cpp's
``mtmd_tokenize`` does around its media marker
(:mod:`engines.llama.vision` puts the image's own tokens there).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict

from engines.errors import EngineError, ErrorKind
from engines.llama.templates import RenderedPrompt

# llama.cpp's token attributes (llama.h): control and unknown tokens are parsed only with special=True.
_ATTR_UNKNOWN = 1 << 0
_ATTR_CONTROL = 1 << 3
_ATTR_LSTRIP = 1 << 7
_ATTR_RSTRIP = 1 << 8
_SPECIAL = _ATTR_CONTROL | _ATTR_UNKNOWN
_SPACES = " \t\n\v\f\r"  # C isspace(), which llama.cpp strips with
_CACHE_LIMIT = 512
RUN_CACHE_CHARS = 1 << 21  # text of the runs whose tokens are kept: a few long conversations (~8 MB of tokens)
IMAGE_SLOT = -1  # where an image goes in a token list: no vocabulary has a token -1


class PromptTokenizer:
    """Tokens for rendered prompts, with one llama.cpp model's vocabulary."""

    def __init__(self, llm) -> None:
        self._llm = llm
        self._model = llm._model
        self._markup: dict[str, tuple] = {}  # template text -> its runs and control tokens
        self._attrs: dict[int, int] = {}
        self._runs = _RunTokens(RUN_CACHE_CHARS)

    def tokenize(self, rendered: RenderedPrompt, add_bos: bool, image_marker: str | None = None) -> list[int]:
        if rendered.segments is None:
            return self._tokenize_unsplit(rendered, add_bos, image_marker)
        units: list = []  # str: text of a run; int: a control token's id (or IMAGE_SLOT)
        for text, from_message in rendered.segments:
            if from_message:
                units.extend(_split_at(text, image_marker))
            else:
                units.extend(self._split_markup(text))
        tokens = [self._model.token_bos()] if add_bos and self._model.add_bos_token() else []
        run: list[str] = []
        previous = None  # the control token before the current run
        for unit in units:
            if isinstance(unit, str):
                run.append(unit)
                continue
            if unit == IMAGE_SLOT:  # the run before it ends here; nothing is stripped around an image
                tokens.extend(self._run_tokens("".join(run), previous, None))
                tokens.append(IMAGE_SLOT)
                run, previous = [], None
                continue
            tokens.extend(self._run_tokens("".join(run), previous, unit))
            tokens.append(unit)
            run, previous = [], unit
        tokens.extend(self._run_tokens("".join(run), previous, None))
        if add_bos and self._model.add_eos_token():
            tokens.append(self._model.token_eos())
        return tokens

    def has_control_text(self, text: str) -> bool:
        """Whether llama.cpp would read a control token in ``text`` with special parsing on."""
        return any(self._attr(t) & _SPECIAL for t in self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # ---- pieces ----------------------------------------------------------

    def _run_tokens(self, text: str, before: int | None, after: int | None):
        """A run between two control tokens, with the whitespace they strip removed, as llama.cpp does."""
        if before is not None and self._attr(before) & _ATTR_RSTRIP:
            text = text.lstrip(_SPACES)
        if after is not None and self._attr(after) & _ATTR_LSTRIP:
            text = text.rstrip(_SPACES)
        if not text:
            return ()
        tokens = self._runs.get(text)
        if tokens is None:
            tokens = array("i", self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            self._runs.put(text, tokens)
        return tokens

    def _split_markup(self, text: str) -> tuple:
        """Template text as runs (str) and control tokens (int), in order; cached, it repeats."""
        cached = self._markup.get(text)
        if cached is not None:
            return cached
        ids = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        units: list = []
        pos = 0
        for token in ids:
            if not self._attr(token) & _SPECIAL:
                continue
            piece = self._model.token_get_text(token)
            at = text.find(piece, pos)
            if at < 0:  # llama.cpp matched what we cannot locate: keep its reading of the whole text
                units = [text] if not any(self._attr(t) & _SPECIAL for t in ids) else list(ids)
                break
            if at > pos:
                units.append(text[pos:at])
            units.append(token)
            pos = at + len(piece)
        else:
            if pos < len(text):
                units.append(text[pos:])
        result = tuple(units)
        if len(self._markup) >= _CACHE_LIMIT:
            self._markup.clear()
        self._markup[text] = result
        return result

    def _attr(self, token: int) -> int:
        attr = self._attrs.get(token)
        if attr is None:
            attr = self._attrs[token] = int(self._model.token_get_attr(token))
        return attr

    def _tokenize_unsplit(self, rendered: RenderedPrompt, add_bos: bool, image_marker: str | None) -> list[int]:
        for text in rendered.messages:
            if self.has_control_text(text):
                raise EngineError(
                    ErrorKind.BAD_INPUT,
                    "A message contains text that this model reads as its own control markup, and this "
                    "model's chat template rewrites messages in a way that cannot keep the two apart. "
                    "Remove the markup from the message.",
                )
        tokens: list[int] = []
        for unit in _split_at(rendered.prompt, image_marker):
            if unit == IMAGE_SLOT:
                tokens.append(IMAGE_SLOT)
            elif unit:
                tokens.extend(self._llm.tokenize(unit.encode("utf-8"), add_bos=add_bos and not tokens, special=True))
        return tokens


class _RunTokens:
    """Tokens of recently tokenized runs, least recently used dropped first, bounded by their text's length."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._chars = 0
        self._tokens: OrderedDict[str, array] = OrderedDict()

    def get(self, text: str) -> array | None:
        tokens = self._tokens.get(text)
        if tokens is not None:
            self._tokens.move_to_end(text)
        return tokens

    def put(self, text: str, tokens: array) -> None:
        if len(text) > self._max_chars or text in self._tokens:
            return
        self._tokens[text] = tokens
        self._chars += len(text)
        while self._chars > self._max_chars:
            old, _ = self._tokens.popitem(last=False)
            self._chars -= len(old)

    def __len__(self) -> int:
        return len(self._tokens)


def _split_at(text: str, marker: str | None) -> list:
    """``text`` as runs (str) with IMAGE_SLOT where ``marker`` was."""
    if not marker or marker not in text:
        return [text]
    units: list = []
    for i, part in enumerate(text.split(marker)):
        if i:
            units.append(IMAGE_SLOT)
        units.append(part)
    return units
