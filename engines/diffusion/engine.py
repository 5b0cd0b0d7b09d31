"""The image engine the registry creates: one class, two backends.

:class:`DiffusionEngine` resolves the backend (see :mod:`engines.diffusion.auto`)
at load time and hands every call to the PyTorch or the ONNX Runtime engine.
Loading a model on the other backend drops the current engine first, so one
engine host never holds two models. LoRAs run on PyTorch only: when "auto"
chose ONNX Runtime for a diffusers folder, a request with LoRAs moves the
model to PyTorch (with a notice) instead of failing.
"""

from __future__ import annotations

from dataclasses import replace

from engines.api import CancelFlag, Emit, NoticeEvent
from engines.diffusion.auto import choose_backend, onnx_copy_of
from engines.model_folder import inspect_model_folder
from engines.diffusion.types import ImageLoadSpec, ImageModelInfo, ImageRequest, ImageResult
from engines.errors import EngineError, ErrorKind, problems_sentence


class DiffusionEngine:
    """Stable Diffusion on PyTorch or ONNX Runtime, whichever suits the model and the machine."""

    def __init__(self) -> None:
        self._engine = None
        self._backend: str | None = None
        self._torch_spec: ImageLoadSpec | None = None  # "auto" on a diffusers folder: where LoRAs can run

    def load(self, spec: ImageLoadSpec, emit: Emit, cancel: CancelFlag | None = None) -> ImageModelInfo:
        # ``cancel``: the engine host stops a cancelled load once it returns (engines.host.process).
        problems = spec.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems, "Cannot load the model"))
        folder = inspect_model_folder(spec.model_path)
        backend = choose_backend(folder, spec)
        if self._engine is not None and backend != self._backend:
            self.unload()
        if backend == "onnx":
            from engines.diffusion.onnx_engine import OnnxDiffusionEngine

            target = folder if folder.kind == "onnx" else inspect_model_folder(onnx_copy_of(folder.path))
            engine = self._engine or OnnxDiffusionEngine()
            info = engine.load(spec, emit, folder=target)
        else:
            from engines.diffusion.torch_engine import TorchDiffusionEngine

            engine = self._engine or TorchDiffusionEngine()
            info = engine.load(spec, emit)
        self._engine, self._backend = engine, backend
        auto = spec.backend == "auto" and folder.kind == "diffusers"
        self._torch_spec = replace(spec, backend="torch") if auto and backend == "onnx" else None
        return info

    def generate(self, request: ImageRequest, emit: Emit, cancel: CancelFlag | None = None) -> ImageResult:
        if self._engine is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No image model is loaded.")
        if self._torch_spec is not None and any(lora.weight != 0 for lora in request.loras):
            emit(NoticeEvent("LoRAs run on PyTorch only, so the model moved from ONNX Runtime to PyTorch for them."))
            self.load(self._torch_spec, emit)
        return self._engine.generate(request, emit, cancel)

    def unload(self) -> None:
        if self._engine is not None:
            self._engine.unload()
        self._engine = self._backend = None

    @property
    def backend(self) -> str | None:
        return self._backend

    @property
    def info(self) -> ImageModelInfo | None:
        return self._engine.info if self._engine is not None else None
