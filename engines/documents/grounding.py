"""Grounding a chat turn in a collection: what the model is told, and what the user is shown as sources.

- **Full text when it fits.** If the whole collection's text fits in the
  budget (the context left after the conversation and the reply), the
  model gets all of it, as LM Studio and AnythingLLM do: no passage can be
  missed by retrieval. Otherwise it gets the best passages, as many as fit.
- **Nothing relevant is said.** When the search finds no passage above the
  collection's threshold (and no passage holds every keyword), the model
  is told so in the system text and the user gets :attr:`Grounding.notice`,
  instead of an answer that pretends to come from the documents.
- **Visible, editable prompt.** The system text is the Settings'
  ``grounding_prompt`` (default :data:`engines.settings.DEFAULT_GROUNDING_PROMPT`) with
  ``{documents}`` replaced (``str.replace``, so braces a user types stay
  as they are); a template without the placeholder gets the documents
  after it.
- **Citations** are the retrieved passages (file, page, span, score), in
  both modes: what the answer could draw on, best first.

The budget is in characters because the chat model's tokenizer is in
another process; the caller converts (about 3 characters a token, on the
safe side for English and code), and the chat engine's own context fit
still stops a prompt that does not fit, with its sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engines.doc_index.types import PassageHit, SearchResult
from engines.settings import DEFAULT_GROUNDING_PROMPT

NOTHING_FOUND_FOR_MODEL = (
    "No passage of the user's document collection '{collection}' is relevant to this question. Tell the user "
    "that their documents do not answer it; if you answer from your own knowledge, say that it does not come "
    "from their documents."
)
CHARS_PER_TOKEN = 3  # budget conversion for callers: conservative for English prose and code
PROMPT_OVERHEAD_TOKENS = 64  # the chat template's own markup around the messages


@dataclass(frozen=True)
class Grounding:
    system: str  # the system text for the model
    citations: tuple[PassageHit, ...]
    mode: Literal["excerpts", "full_text", "nothing"]
    notice: str = ""  # for the user, when nothing relevant was found
    search: SearchResult | None = None


def nothing_relevant(collection: str, result: SearchResult) -> str:
    """The sentence the user reads when no passage is relevant, with how close the best one came."""
    if result.searched == 0:
        return (f"The collection '{collection}' has no indexed passages yet: add files to it on the Documents page "
                "or with 'atelier docs add', and index it.")
    best = f"{result.best_similarity:.2f}" if result.best_similarity is not None else "none"
    return (f"Nothing relevant was found in '{collection}': the closest of its {result.searched} passages has a "
            f"similarity of {best}, below the {result.threshold:.2f} a relevant passage needs.")


def ground(library, collection: str, question: str, budget_chars: int,
           template: str = DEFAULT_GROUNDING_PROMPT, top_k: int = 8) -> Grounding:
    """The system text and citations for answering ``question`` from ``collection`` within ``budget_chars``."""
    result = library.query(collection, question, top_k)
    if not result.hits:
        return Grounding(NOTHING_FOUND_FOR_MODEL.replace("{collection}", collection), (), "nothing",
                         nothing_relevant(collection, result), result)
    whole = full_text(library, collection)
    if whole is not None and len(fill(template, whole)) <= budget_chars:
        return Grounding(fill(template, whole), result.hits, "full_text", "", result)
    used: list[PassageHit] = []
    for hit in result.hits:
        if len(fill(template, excerpts(used + [hit]))) > budget_chars:
            break
        used.append(hit)
    if not used:
        return Grounding(NOTHING_FOUND_FOR_MODEL.replace("{collection}", collection), (), "nothing",
                         "The relevant passages do not fit in this model's context; use a longer context.", result)
    return Grounding(fill(template, excerpts(used)), tuple(used), "excerpts", "", result)


def fill(template: str, documents: str) -> str:
    if "{documents}" in template:
        return template.replace("{documents}", documents)
    return f"{template.rstrip()}\n\n{documents}"


def excerpts(hits: list[PassageHit]) -> str:
    blocks = []
    for number, hit in enumerate(hits, start=1):
        where = hit.path + (f", page {hit.page}" if hit.page else "")
        blocks.append(f"[{number}] {where}\n{hit.text}")
    return "\n\n".join(blocks)


def full_text(library, collection: str) -> str | None:
    """Every file's text, rebuilt from its passages (their spans overlap); None for an empty collection."""
    with library.store() as store:
        found = store.collection(collection)
        if found is None:
            return None
        blocks = []
        for record in store.files(found):
            if record.state != "indexed":
                continue
            pages: dict[int | None, str] = {}
            for page, start, end, text in store.passages_of(record.id):
                known = pages.get(page, "")
                if start >= len(known):
                    known += " " * (start - len(known)) if known else ""
                    pages[page] = known + text
                elif end > len(known):
                    pages[page] = known + text[len(known) - start:]
            for page, text in pages.items():
                where = record.path + (f", page {page}" if page else "")
                blocks.append(f"[{where}]\n{text.strip()}")
    return "\n\n".join(blocks) if blocks else None


def grounded_request(library, collection: str, request, context_tokens: int,
                     template: str = DEFAULT_GROUNDING_PROMPT):
    """(the grounding, ``request`` with its system message grounded in ``collection``): one path for the CLI and GUI.

    The question is the last user message. The documents get what the
    context has left after the conversation's messages and the reply
    (``max_tokens``, at most half the context), so retrieved passages count
    in the fit like any message; the chat engine's own fit and overflow
    rules still apply to the whole prompt. The grounded text comes first in
    the system message, then the chat's own system prompt.
    """
    from dataclasses import replace

    from engines.api import ChatMessage

    question = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    own_system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    used = sum(len(m.content or "") for m in request.messages) // CHARS_PER_TOKEN + PROMPT_OVERHEAD_TOKENS
    budget_tokens = context_tokens - min(request.sampling.max_tokens, context_tokens // 2) - used
    grounding = ground(library, collection, question, max(0, budget_tokens) * CHARS_PER_TOKEN, template)
    system = grounding.system + (f"\n\n{own_system}" if own_system.strip() else "")
    rest = tuple(m for m in request.messages if m.role != "system")
    return grounding, replace(request, messages=(ChatMessage("system", system), *rest))
