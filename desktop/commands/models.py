"""Resolving what the user typed after ``--model``: an installed id or a path."""

from __future__ import annotations

from pathlib import Path

from engines.library.demo import materialize
from engines.workspace import Workspace


def resolve_model_path(workspace: Workspace, text: str) -> Path:
    """An installed model id (or a unique prefix, e.g. 'demo'), else a file path."""
    models = workspace.models.all()
    exact = [m for m in models if m.id == text]
    prefixed = [m for m in models if m.id.startswith(text) or m.id.split("/")[0] == text]
    match = exact or (prefixed if len(prefixed) == 1 else [])
    if match and not Path(text).exists():
        return materialize(match[0])
    return Path(text).expanduser()
