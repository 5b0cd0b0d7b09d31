"""What the user means by a model: the one resolver for ``--model`` and every model id.

``atelier chat --model demo``, ``atelier image --model dream``, ``atelier
models check demo``, ``atelier models remove local/x`` (and, later, the
server) all go through :func:`resolve_model`, so a name that works in one
command works in all of them. In order, the text is:

1. an installed model's exact id;
2. ``NAME/MODEL`` where NAME is a remote server (``atelier remote add``):
   a model on that server; only the commands that run remote models
   (chat) pass ``remotes``, the others are told what it is;
3. a file or folder that exists (``allow_paths``);
4. a unique prefix of an installed id (``demo``, ``local/qwen``), or of any
   part of one (``gemma-3``);
5. a catalog id (known, perhaps not downloaded yet).

Anything else is an error that names the close matches. When a command
needs one kind of model (chat needs a chat model), a model of another
kind is refused by name rather than failing inside the wrong engine.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from engines.errors import EngineError, ErrorKind
from engines.library.installed import InstalledModel, InstalledModels

KIND_WORDS = {"chat": "a chat model", "embedding": "an embedding model", "image": "an image model",
              "lora": "a LoRA", "upscaler": "an upscaler"}


@dataclass(frozen=True)
class ResolvedModel:
    """One of: an installed model (``installed``), a path typed by the user (``path``), a catalog entry."""

    text: str
    installed: InstalledModel | None = None
    path: Path | None = None
    entry: object | None = None  # a CatalogEntry that is not installed
    remote: object | None = None  # a RemoteModel: NAME/MODEL on a remote server (engines.remote)

    def local_path(self) -> Path:
        """The file or folder to load; the demo is unpacked on first use.

        A catalog model that is not downloaded has no file: that is an error
        that says how to get it.
        """
        if self.installed is not None:
            from engines.library.demo import materialize

            return materialize(self.installed)
        if self.path is not None:
            return self.path
        if self.remote is not None:
            raise EngineError(ErrorKind.BAD_INPUT, _remote_words(self.remote))
        raise EngineError(ErrorKind.BAD_INPUT, f"{self.entry.name} is in the catalog but not downloaded yet. "
                          f"Get it with 'atelier models pull {self.entry.id}'.")


def resolve_model(text: str, models: InstalledModels, catalog=None, kind: str | None = None, *,
                  allow_paths: bool = True, remotes=None) -> ResolvedModel:
    """Resolve ``text`` (see the module docstring); raise EngineError(BAD_INPUT) with close matches if nothing fits.

    ``catalog`` defaults to the shipped catalog, loaded only when the text is
    neither installed nor a path. ``kind`` ("chat", "image"...) refuses a
    model of another kind, by name. ``allow_paths=False`` skips step 3: the
    HTTP server's clients name installed models only, and must neither load
    nor probe an arbitrary file on the server's disk. ``remotes`` (engines.remote's
    RemoteServers) is given by the commands that run models on remote servers.
    """
    if not text or not text.strip():
        raise EngineError(ErrorKind.BAD_INPUT, "No model given: pass an installed model's id (e.g. demo) or a path.")
    installed = models.all()
    exact = next((m for m in installed if m.id == text), None)
    if exact is not None:
        return _checked(ResolvedModel(text, installed=exact), kind)
    remote = _remote_model(text, models, remotes)
    if remote is not None:
        return _checked(ResolvedModel(text, remote=remote), kind)
    path = Path(os.path.expanduser(text))
    if allow_paths and os.path.lexists(path):
        known = models.find_by_path(path)
        return _checked(ResolvedModel(text, installed=known) if known else ResolvedModel(text, path=path), kind)
    matches = _prefix_matches(text, installed, kind)
    if len(matches) == 1:
        return _checked(ResolvedModel(text, installed=matches[0]), kind)
    if len(matches) > 1:
        ids = ", ".join(m.id for m in matches[:8])
        raise EngineError(ErrorKind.BAD_INPUT, f"'{text}' matches {len(matches)} installed models: {ids}. "
                          "Give more of the id.")
    catalog = catalog if catalog is not None else _shipped_catalog()
    entry = catalog.get(text) if catalog is not None else None
    if entry is not None:
        return _checked(ResolvedModel(text, entry=entry), kind)
    raise EngineError(ErrorKind.BAD_INPUT, _not_found(text, path if allow_paths else None, installed, catalog))


def _prefix_matches(text: str, installed: list[InstalledModel], kind: str | None) -> list[InstalledModel]:
    """Installed ids that ``text`` starts (best), else ids with a part that it starts; of ``kind`` first."""
    low = text.lower()
    tiers = (
        [m for m in installed if m.id.lower().startswith(low) or m.id.lower().split("/")[0] == low],
        [m for m in installed if any(part.startswith(low) for part in m.id.lower().split("/"))],
    )
    for tier in tiers:
        if kind is not None and len(tier) > 1:
            tier = [m for m in tier if m.kind == kind] or tier
        if tier:
            return tier
    return []


def _checked(resolved: ResolvedModel, kind: str | None) -> ResolvedModel:
    """Refuse a model of another kind than the command needs, naming both."""
    if kind is None:
        return resolved
    if resolved.installed is not None:
        found, name = resolved.installed.kind, f"'{resolved.installed.id}'"
    elif resolved.entry is not None:
        found, name = resolved.entry.kind, f"'{resolved.entry.id}'"
    elif resolved.remote is not None:
        found, name = resolved.remote.kind, f"'{resolved.remote.id}' (on a remote server)"
    else:
        from engines.library.probes import identify

        probed = identify(resolved.path)
        if probed.kind == "unknown":
            raise EngineError(ErrorKind.MODEL_FILE, probed.reason)
        found, name = probed.kind, probed.path
    if found != kind:
        raise EngineError(ErrorKind.BAD_INPUT, f"{name} is {KIND_WORDS.get(found, found)}, "
                          f"but this needs {KIND_WORDS.get(kind, kind)}.")
    return resolved


def _remote_model(text: str, models: InstalledModels, remotes):
    """The RemoteModel ``text`` names, if any; a command that does not take them says what it is instead."""
    if "/" not in text:
        return None
    from engines.remote import RemoteServers, find_remote_model

    found = find_remote_model(text, remotes if remotes is not None else RemoteServers.beside(models.file))
    if found is not None and remotes is None:
        raise EngineError(ErrorKind.BAD_INPUT, _remote_words(found))
    return found


def _remote_words(remote) -> str:
    return (f"'{remote.id}' is a model on the remote server '{remote.server.name}', with no file here: only chat "
            f"runs it (atelier chat --model {remote.id}). 'atelier remote list' shows the remote servers.")


def _shipped_catalog():
    from engines.library.catalog import load_catalog

    catalog = load_catalog()
    return None if catalog.error else catalog


def _looks_like_path(text: str) -> bool:
    """A path rather than an id: ids have at most one "/" ("local/qwen") and no file suffix."""
    return (text.startswith(("/", "~", ".")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)
            or text.lower().endswith((".gguf", ".safetensors", ".onnx")))


def _not_found(text: str, path: Path | None, installed: list[InstalledModel], catalog) -> str:
    known = [m.id for m in installed] + ([e.id for e in catalog.entries] if catalog is not None else [])
    close = difflib.get_close_matches(text, known, n=3, cutoff=0.6)
    by_part = {part: m for m in known for part in m.split("/")}
    close += [by_part[p] for p in difflib.get_close_matches(text, list(by_part), n=3, cutoff=0.6)
              if by_part[p] not in close]
    hint = f" Did you mean {', '.join(close[:3])}?" if close else " See 'atelier models list' (and --catalog)."
    if path is None:  # the HTTP server: paths are not models there
        return f"No installed model is called '{text}'.{hint}"
    if _looks_like_path(text):
        return f"The model file or folder does not exist: {path}.{hint if close else ''}"
    return f"No installed model, catalog model or file is called '{text}'.{hint}"
