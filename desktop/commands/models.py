"""What the user typed after ``--model`` (or as a model id), for every command.

A thin front for :func:`engines.library.resolve.resolve_model`, the one
resolver: ``atelier chat``, ``atelier image`` and ``atelier models
check/remove`` accept the same ids, prefixes (``demo``) and paths, and
refuse the same way.
"""

from __future__ import annotations

from engines.library.resolve import ResolvedModel, resolve_model


def resolve(library, text: str, kind: str | None = None) -> ResolvedModel:
    """``text`` resolved against a model library's installed models and catalog."""
    return resolve_model(text, library.models, library.catalog if not library.catalog.error else None, kind=kind)
