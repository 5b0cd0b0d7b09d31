"""The probe contract: a record for what a path holds, and "not a match".

Modelled on InvokeAI's model configs (``invokeai/backend/model_manager/
configs/base.py``): one probe per (kind, format) looks at a path and
either returns a :class:`ProbedModel` or raises :class:`NotAMatch`. What
no probe claims becomes an ``unknown`` record that says why, so a caller
never has to catch anything to learn that a file is not a model.

:class:`Candidate` is the path being identified. It caches what more than
one probe reads (the GGUF header, the safetensors header, the image-folder
inspection), so trying six probes costs one read of each kind.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from engines.library.probes.files import Unreadable, folder_size, read_prefix
from engines.library.probes.safetensors_header import NotSafetensors, SafetensorsHeader, read_safetensors_header

Kind = Literal["chat", "embedding", "image", "lora", "upscaler", "projector", "unknown"]
KINDS: tuple[str, ...] = ("chat", "embedding", "image", "lora", "upscaler", "projector", "unknown")


@dataclass(frozen=True)
class ProbedModel:
    """What a path holds, found from its files alone.

    ``engine`` is the engine that runs it ("llama_cpp", "diffusers"), or None
    when no engine in Atelier can use it (an unknown file; a LoRA runs on
    "diffusers", an upscaler on "esrgan"). ``reason`` says why a path is ``unknown`` (empty otherwise);
    ``description`` says what a known model is, in a few words. ``name`` is
    safe to print: control characters are stripped (defect D19).
    """

    kind: Kind
    format: str  # "gguf", "diffusers", "onnx", "safetensors"; for unknown: what it looked like
    engine: str | None
    name: str
    path: str
    size_bytes: int
    reason: str = ""
    description: str = ""
    architecture: str | None = None  # GGUF general.architecture, the upscaler's network...
    base: str | None = None  # the family a model or LoRA belongs to: "sd1", "sd2", "sdxl", "llama"...
    quantization: str | None = None
    context_length: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # The parsed GGUF header, so a caller that goes on to a fit check does not read it twice.
    gguf_header: Any = field(default=None, repr=False, compare=False)

    @property
    def known(self) -> bool:
        return self.kind != "unknown"

    @property
    def runnable(self) -> bool:
        """Whether an engine in Atelier can run it (chat, embedding and image models)."""
        return self.engine is not None


class NotAMatch(Exception):
    """A probe does not claim the path.

    ``recognised`` means "this is my format, but it cannot be used" (a
    truncated GGUF, a diffusers folder without its UNet): its reason beats
    the generic one when no probe matches.
    """

    def __init__(self, reason: str, recognised: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recognised = recognised


class Candidate:
    """A path being identified, with the reads that probes share, each done once."""

    def __init__(self, path: Path, st: os.stat_result) -> None:
        self.path = path
        self.mode = st.st_mode
        self._file_size = st.st_size
        self._cache: dict[str, Any] = {}

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    @cached_property
    def size_bytes(self) -> int:
        return folder_size(self.path) if self.is_dir else self._file_size

    @cached_property
    def prefix(self) -> bytes:
        """The first 16 bytes of a file (b"" for a folder)."""
        return read_prefix(self.path, 16) if self.is_file else b""

    def _once(self, key: str, read):
        if key not in self._cache:
            try:
                self._cache[key] = (read(), None)
            except NotAMatch as exc:
                self._cache[key] = (None, exc)
            except Unreadable as exc:
                self._cache[key] = (None, NotAMatch(exc.message, recognised=True))
        value, error = self._cache[key]
        if error is not None:
            raise error
        return value

    def gguf(self):
        """The checked GGUF header; NotAMatch (recognised when it claims to be GGUF) otherwise."""
        return self._once("gguf", self._read_gguf)

    def _read_gguf(self):
        if not self.is_file:
            raise NotAMatch(f"{self.path.name} is a folder, not a GGUF file.")
        if not (self.prefix.startswith(b"GGUF") or self.suffix == ".gguf"):
            raise NotAMatch(f"{self.path.name} is not a GGUF file.")
        from engines.errors import EngineError
        from engines.gguf.model_file import check_model_file

        try:
            return check_model_file(self.path)
        except EngineError as exc:
            raise NotAMatch(exc.message, recognised=True) from None

    def safetensors(self) -> SafetensorsHeader:
        """The tensor names and shapes; NotAMatch (recognised when it is a damaged one) otherwise."""
        return self._once("safetensors", self._read_safetensors)

    def _read_safetensors(self) -> SafetensorsHeader:
        if not self.is_file:
            raise NotAMatch(f"{self.path.name} is a folder, not a .safetensors file.")
        try:
            return read_safetensors_header(self.path, self._file_size)
        except NotSafetensors as exc:
            recognised = exc.recognised or self.suffix == ".safetensors"
            raise NotAMatch(exc.message, recognised) from None
        except Unreadable as exc:
            raise NotAMatch(exc.message, recognised=True) from None

    def model_folder(self):
        """The image-model folder inspection (``engines.model_folder``); NotAMatch otherwise.

        Every folder is "recognised": only image models come as folders, so the
        inspection's sentence (no model_index.json, a refiner, pickled weights...)
        is the best reason there is.
        """
        return self._once("folder", self._inspect_folder)

    def _inspect_folder(self):
        if not self.is_dir:
            raise NotAMatch(f"{self.path.name} is a file, not a model folder.")
        from engines.model_folder import inspect_model_folder
        from engines.errors import EngineError
        from engines.library.probes.files import irregular_files

        # Only a folder with a model index is read further (so a dropped home folder is not walked), and
        # then not if it holds a FIFO or a device: inspecting would open them, and a FIFO blocks for ever.
        odd = irregular_files(self.path) if (self.path / "model_index.json").is_file() else []
        if odd:
            raise NotAMatch(f"{self.path.name} holds files that are not regular files: {', '.join(odd[:3])}.", True)
        try:
            return inspect_model_folder(self.path)
        except EngineError as exc:
            raise NotAMatch(exc.message, recognised=True) from None


class Probe:
    """One format. Subclasses set ``kind`` and ``format`` and implement :meth:`probe`."""

    kind: ClassVar[str]
    format: ClassVar[str]

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:  # pragma: no cover - abstract
        raise NotImplementedError
