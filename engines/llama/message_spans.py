"""Where each message's text sits in a rendered prompt.

To keep message text from ever becoming control tokens (defect D9), the
tokenizer must know which characters of the prompt came from the template
and which from the messages. The template is rendered a second time with
a unique placeholder in place of each message's content; cutting that
render at the placeholders gives the template's own text, piece by piece.
The real render must then read: template piece, message text, template
piece, ... where each message text is the content as written, or trimmed
(Gemma's and Llama 3's templates ``| trim`` it). Anything else (a template
that rewrites contents, or picks a different branch for them) gives None,
and the caller falls back to a check of its own.
"""

from __future__ import annotations

import re
import secrets
from typing import Callable, Sequence

_MAX_STEPS = 10_000  # alignment attempts; real templates need one per message


def find_message_spans(
    prompt: str,
    payload: Sequence[dict],
    render: Callable[[list[dict]], str],
) -> list[tuple[int, int]] | None:
    """The (start, end) of every non-empty message text in ``prompt``, in order, or None.

    ``payload`` is the list of message dicts ``prompt`` was rendered from;
    ``render`` renders such a list with the same template.
    """
    contents = [m["content"] for m in payload]
    nonce = secrets.token_hex(8)
    marks = [f"\ue000{nonce}:{i}\ue001" for i in range(len(contents))]
    if any(nonce in text for text in contents) or nonce in prompt:
        return None  # cannot happen by chance; refuse rather than be fooled
    marked = [dict(m, content=mark if m["content"] else "") for m, mark in zip(payload, marks)]
    try:
        rendered = render(marked)
    except Exception:  # noqa: BLE001 - the template objects to placeholders: no spans
        return None
    pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", rendered)
    template_parts = pieces[0::2]
    owners = [int(i) for i in pieces[1::2]]
    if nonce in "".join(template_parts):
        return None  # a placeholder was altered (cut, case-changed...): contents are rewritten
    return _align(prompt, template_parts, [contents[i] for i in owners])


def _align(prompt: str, parts: list[str], texts: list[str]) -> list[tuple[int, int]] | None:
    """Match ``prompt`` = parts[0] + x0 + parts[1] + x1 + ... with each x a form of texts[k].

    Depth first over the forms of each text, most likely first; real
    templates need no backtracking, and a bounded number of steps keeps a
    pathological prompt from costing more than a refusal.
    """
    if not prompt.startswith(parts[0]):
        return None
    if not texts:
        return [] if prompt == parts[0] else None
    chosen: list[tuple[int, int]] = [(0, 0)] * len(texts)
    stack = [(len(parts[0]), _forms(texts[0]))]  # one frame per text being placed
    steps = 0
    while stack:
        k = len(stack) - 1
        pos, forms = stack[-1]
        if not forms:
            stack.pop()
            continue
        steps += 1
        if steps > _MAX_STEPS:
            return None
        form = forms.pop(0)
        end = pos + len(form)
        after = parts[k + 1]
        if not (prompt.startswith(form, pos) and prompt.startswith(after, end)):
            continue
        chosen[k] = (pos, end)
        following = end + len(after)
        if k + 1 < len(texts):
            stack.append((following, _forms(texts[k + 1])))
        elif following == len(prompt):
            return [span for span in chosen if span[0] != span[1]]
    return None


def _forms(text: str) -> list[str]:
    """The ways a template may render a message text: as written, or trimmed."""
    forms: list[str] = []
    for form in (text, text.strip(), text.lstrip(), text.rstrip()):
        if form not in forms:
            forms.append(form)
    return forms
