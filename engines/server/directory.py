"""Which models the server offers, and how each one is loaded.

A client names a model as it would on the command line (an installed id,
a unique prefix such as ``demo``, or ``NAME/MODEL`` on a remote server
added with ``atelier remote add``), through the one resolver
(:mod:`engines.library.resolve`), with two differences that keep the
server's disk private: paths are never accepted, and a model that is not
installed is "not found" whatever exists on disk.

The load spec of a model is the same for every request, built from the
user's saved load settings (``LoadPrefs``) and the server's ``--ctx``, so
that the scheduler, which keys loaded models by (engine, spec), reuses one
loaded model for all of them, the preloaded ones included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engines.api import TextLoadSpec
from engines.errors import EngineError
from engines.library.probes.projector import find_projector
from engines.server.errors import ApiError, from_engine_error, model_not_found

SERVED_KINDS = ("chat", "embedding", "image")
TEXT_ENGINE = "llama_cpp"
IMAGE_ENGINE = "diffusers"  # the image engine picks PyTorch or ONNX Runtime itself (ImageLoadSpec.backend)


@dataclass(frozen=True)
class ServedModel:
    """A model the server can run: its id, kind, and the scheduler's (engine, spec) for it."""

    id: str
    kind: str  # "chat", "embedding" or "image"
    engine: str
    spec: Any
    created: int = 0  # when it was installed (epoch seconds), as /v1/models reports it
    owned_by: str = "atelier"


class ModelDirectory:
    """Installed models, as the API sees them. ``context_length`` (``--ctx``) overrides the saved one."""

    def __init__(self, models, settings, *, context_length: int | None = None, catalog=None, remotes=None) -> None:
        self._models = models  # engines.library.installed.InstalledModels
        self._settings = settings  # engines.settings.Settings: the saved load settings per model
        self._context_length = context_length
        self._catalog = catalog
        self._remotes = remotes  # engines.remote.RemoteServers: their models are served as NAME/MODEL

    def listed(self) -> list[ServedModel]:
        """Every installed chat, embedding and image model whose files are there (the demo always is),
        then the remote servers' models."""
        served = []
        for model in self._models.all():
            if model.kind in SERVED_KINDS and (model.exists or model.source == "demo"):
                served.append(self._served(model))
        if self._remotes is not None:
            from engines.remote import remote_models

            served += [self._served_remote(model) for model in remote_models(self._remotes)]
        return served

    def find(self, name: str, kind: str) -> ServedModel:
        """The model ``name`` means, for a request that needs a ``kind`` model.

        Blocking (the demo's file is written on first use): call it off the
        event loop. Raises ApiError: 404 ``model_not_found`` for a name that
        is no installed model, 400 for a model of another kind.
        """
        from engines.library.resolve import resolve_model

        try:
            resolved = resolve_model(name, self._models, self._catalog, kind=kind, allow_paths=False,
                                     remotes=self._remotes)
        except EngineError as exc:
            try:  # the same name without the kind: found means it is a model of another kind
                resolve_model(name, self._models, self._catalog, allow_paths=False, remotes=self._remotes)
            except EngineError:
                raise model_not_found(exc.message) from None
            raise ApiError(400, exc.message, "invalid_request_error", "model_not_supported", "model") from None
        if resolved.remote is not None:
            return self._served_remote(resolved.remote)
        if resolved.installed is None:  # a catalog model that is not downloaded: its message says how to get it
            try:
                resolved.local_path()
            except EngineError as exc:
                raise model_not_found(exc.message) from None
            raise model_not_found(f"The model '{name}' is not installed.")
        try:
            resolved.local_path()  # the demo is unpacked on first use
        except EngineError as exc:
            raise from_engine_error(exc, "model") from None
        except Exception as exc:  # the demo package could not write its file (a full disk...)
            raise ApiError(503, f"The model '{resolved.installed.id}' cannot be prepared: {exc}", "server_error",
                           "model_file_unusable") from None
        return self._served(resolved.installed)

    def _served(self, model) -> ServedModel:
        if model.kind == "image":
            from engines.diffusion.types import ImageLoadSpec

            return ServedModel(model.id, "image", IMAGE_ENGINE, ImageLoadSpec(model.path), int(model.added_at))
        prefs = self._settings.prefs_for(model.id)
        projector = find_projector(model.path) if model.kind == "chat" else None  # as the chat page loads it
        spec = TextLoadSpec(model.path, context_length=self._context_length or prefs.context_length,
                            threads=prefs.threads, gpu_layers=prefs.gpu_layers, cache_type=prefs.cache_type,
                            embedding=model.kind == "embedding", projector=str(projector) if projector else None)
        return ServedModel(model.id, model.kind, TEXT_ENGINE, spec, int(model.added_at))

    @staticmethod
    def _served_remote(model) -> ServedModel:
        return ServedModel(model.id, model.kind, model.engine, model.spec, int(model.added_at),
                           owned_by=f"remote:{model.server.name}")
