"""``atelier chat --docs NAME``: a reply grounded in a document collection, with its sources.

The question is searched in the collection (through the same scheduler,
so the embedding model and the chat model are two hosts side by side),
and the system message becomes the Settings' grounding prompt with the
passages, or the whole collection when it fits in the context
(engines.documents.grounding). After the reply the sources are listed
(file, page, span, score); with --json they are the ``citations``. When
nothing relevant is found the user reads it on stderr, and the model is
told so instead of getting passages.
"""

from __future__ import annotations

import sys

from desktop.cli_contract import CliError
from desktop.cli_output import clean, print_note
from engines.api import TextRequest


def ground_chat(args, workspace, scheduler, request: TextRequest):
    """(the grounding, the request with its system message grounded in ``args.docs``)."""
    from engines.documents import DocumentLibrary
    from engines.documents.grounding import grounded_request

    if args.raw:
        raise CliError("--docs needs chat mode (the documents go in a system message); drop --raw")
    library = DocumentLibrary(workspace.paths.data, scheduler, client="cli-documents")
    grounding, request = grounded_request(library, args.docs, request, args.ctx, workspace.settings.grounding_prompt)
    if grounding.notice and not args.json:
        print_note(grounding.notice)
    return grounding, request


def citations_json(grounding) -> dict:
    return {"grounding": grounding.mode, "notice": grounding.notice or None,
            "citations": [{"number": number, "path": hit.path, "page": hit.page, "start": hit.start, "end": hit.end,
                           "score": hit.score, "similarity": hit.similarity, "text": hit.text}
                          for number, hit in enumerate(grounding.citations, start=1)]}


def print_sources(grounding) -> None:
    """The passages the answer could draw on, after the answer on stdout."""
    if not grounding.citations:
        return
    whole = " (the whole collection was given to the model)" if grounding.mode == "full_text" else ""
    lines = [f"Sources{whole}:"]
    for number, hit in enumerate(grounding.citations, start=1):
        page = f", page {hit.page}" if hit.page else ""
        lines.append(f"[{number}] {hit.path}{page}, characters {hit.start}-{hit.end} (score {hit.score:.4f}, "
                     f"similarity {hit.similarity:.2f})")
    sys.stdout.write("\n" + "\n".join(clean(line) for line in lines) + "\n")
    sys.stdout.flush()
