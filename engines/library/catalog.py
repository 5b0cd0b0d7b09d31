"""The curated model catalog: models we recommend, described before download.

``resources/catalog/catalog.json`` lists popular models that exist on the
Hugging Face Hub, with the exact repository, revision and file names to
fetch, their licence, and (for GGUF chat models) the architecture numbers the
memory estimate needs. Knowing those numbers up front lets the library say
"this fits" or "try a smaller quantization" before a single byte is
downloaded.

Sizes are the Hub's published file sizes (exact where known, otherwise the
size the Hub displays, to three significant figures). They are used for the
fit check and the disk-space check *before* download; the downloader asks
the Hub for each file's current size and SHA-256 at download time and
verifies the bytes against those, so a catalog that drifts from the Hub can
never install a wrong file, only give a slightly wrong estimate.

A vision model lists its projector (``mmproj``) among its files and names
it in ``projector``: it is downloaded with the model, into the model's own
folder, where the engine finds it beside the model (LM Studio users report
companion files that are never downloaded, #870), and the fit counts it.

The file is data, edited by hand, so it is validated strictly: unknown keys,
missing fields, duplicate ids and file paths that could escape the model
folder (``..``, absolute paths) are errors. A bad catalog must never take
the application down, so :func:`load_catalog` returns an empty
:class:`Catalog` whose ``error`` says precisely what is wrong and where.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "SCHEMA_VERSION",
    "Catalog",
    "CatalogEntry",
    "CatalogFile",
    "GGUFArch",
    "ImageSpec",
    "UpscalerSpec",
    "default_catalog_path",
    "load_catalog",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ERROR_PREFIX = "The model catalog could not be read: "

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Pickle-based checkpoints can run code when loaded: the catalog never lists them.
_UNSAFE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in hand-edited data must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogFile(_Strict):
    """One file of a model, as published in the repository."""

    path: str = Field(description="Path inside the repository, '/'-separated.")
    size: int = Field(gt=0, description="Size in bytes (see the module docstring).")
    sha256: str | None = Field(default=None, description="Lower-case hex SHA-256, when known.")

    @field_validator("path")
    @classmethod
    def _safe_relative_path(cls, value: str) -> str:
        # The path becomes a location on disk under the model's folder, so it
        # must not be able to point anywhere else.
        if not value or value != value.strip():
            raise ValueError("a file path must be non-empty and have no surrounding spaces")
        if "\\" in value or "\x00" in value:
            raise ValueError(f"file path {value!r} must use '/' and contain no backslash or NUL")
        if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
            raise ValueError(f"file path {value!r} must be relative, not absolute")
        parts = value.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"file path {value!r} must stay inside the repository (no '..', '.' or empty parts)")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_RE.match(value):
            raise ValueError("sha256 must be 64 lower-case hexadecimal characters")
        return value


class GGUFArch(_Strict):
    """Architecture numbers of a GGUF model, as llama.cpp reads them.

    ``sliding_window`` is the window of local-attention layers, or None when
    every layer attends to the whole context (a window wider than any usable
    context, such as Phi-3.5's 262144, counts as none). ``sliding_window_pattern``
    is the period of the local/global layer pattern: 6 means five local layers
    then one global one (Gemma 3). A window without a pattern means every
    layer slides (Mistral 7B v0.1 style).
    """

    architecture: str = Field(min_length=1)
    block_count: int = Field(gt=0)
    embedding_length: int = Field(gt=0)
    head_count: int = Field(gt=0)
    head_count_kv: int = Field(gt=0)
    key_length: int = Field(gt=0)
    value_length: int = Field(gt=0)
    sliding_window: int | None = Field(default=None, gt=0)
    sliding_window_pattern: int | None = Field(default=None, ge=2)
    vocab_size: int = Field(gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> GGUFArch:
        if self.head_count % self.head_count_kv:
            raise ValueError(f"head_count {self.head_count} is not a multiple of head_count_kv {self.head_count_kv}")
        if self.sliding_window_pattern is not None and self.sliding_window is None:
            raise ValueError("sliding_window_pattern needs a sliding_window")
        if self.sliding_window_pattern is not None and self.sliding_window_pattern > self.block_count:
            raise ValueError("sliding_window_pattern is longer than the model has layers")
        return self

    @property
    def global_layers(self) -> int:
        """Layers that attend to the whole context (all of them without SWA)."""
        if self.sliding_window is None:
            return self.block_count
        if self.sliding_window_pattern is None:
            return 0
        return self.block_count // self.sliding_window_pattern

    def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        """KV-cache bytes per token over all layers (f16 by default), ignoring
        sliding windows: exact while the context fits within the window."""
        return self.block_count * self.head_count_kv * (self.key_length + self.value_length) * bytes_per_element

    def kv_cache_bytes(self, context_length: int, bytes_per_element: int = 2) -> int:
        """KV cache for ``context_length`` tokens; sliding layers keep at most a window."""
        per_layer_token = self.head_count_kv * (self.key_length + self.value_length) * bytes_per_element
        local = self.block_count - self.global_layers
        window = min(context_length, self.sliding_window or context_length)
        return per_layer_token * (self.global_layers * context_length + local * window)


class ImageSpec(_Strict):
    """How an image model is meant to be run by default."""

    base: Literal["sd15", "sd21", "sdxl", "sd-turbo", "sdxl-turbo"]
    default_size: int = Field(ge=64, multiple_of=8, description="Square edge in pixels.")
    default_steps: int = Field(ge=1)
    default_guidance: float = Field(ge=0)
    dtype: Literal["fp16", "bf16", "fp32"]


class UpscalerSpec(_Strict):
    """An ESRGAN-family upscaler (RRDBNet): its own scale and size, for the verdict before download."""

    scale: Literal[2, 4]
    blocks: int = Field(gt=0)
    features: int = Field(gt=0)


_ENGINE_FOR_FORMAT = {"gguf": "llama_cpp", "diffusers": "diffusers", "onnx": "onnx", "safetensors": "esrgan"}


class CatalogEntry(_Strict):
    """One downloadable model: where it lives, what it is, what it costs."""

    id: str
    name: str = Field(min_length=1)
    family: str = Field(min_length=1)
    # embedding: GGUF models for documents (engines.doc_index); vae: a tiny VAE (TAESD) beside an image model
    kind: Literal["chat", "image", "embedding", "upscaler", "vae"]
    engine: Literal["llama_cpp", "diffusers", "onnx", "esrgan"]
    format: Literal["gguf", "diffusers", "onnx", "safetensors"]  # safetensors: an upscaler's one file
    repo: str
    revision: str = Field(default="main", min_length=1)
    files: list[CatalogFile] = Field(min_length=1)
    license: str = Field(min_length=1)
    gated: bool
    parameters: int = Field(gt=0, description="Parameter count (whole pipeline for image models).")
    quantization: str = Field(min_length=1)
    context_length: int = Field(gt=0, description="Tokens of context (prompt tokens for image models; 1 for an "
                                                  "upscaler, which takes no prompt).")
    description: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    arch: GGUFArch | None = None
    image: ImageSpec | None = None
    upscaler: UpscalerSpec | None = None
    tiny_vae_for: Literal["sd", "sdxl"] | None = Field(
        default=None, description="A tiny VAE's image family: TAESD reads SD 1.x/2.x latents, TAESDXL SDXL's.")
    projector: str | None = Field(default=None, description="The vision projector among 'files' (a chat model's mmproj).")

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"id {value!r} must be lower-case letters, digits, '.', '_' or '-'")
        return value

    @field_validator("repo")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        if not _REPO_RE.match(value) or ".." in value:
            raise ValueError(f"repo {value!r} must look like 'owner/name'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CatalogEntry:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("the same file is listed twice")
        if _ENGINE_FOR_FORMAT[self.format] != self.engine:
            expected = _ENGINE_FOR_FORMAT[self.format]
            raise ValueError(f"format {self.format!r} is run by {expected!r}, not {self.engine!r}")
        if self.kind in ("chat", "embedding"):
            if self.format != "gguf" or self.arch is None or self.image is not None:
                raise ValueError(f"a {self.kind} entry must be GGUF, with 'arch' and without 'image'")
            if self.kind == "embedding" and self.projector is not None:
                raise ValueError("an embedding entry has no vision projector")
            if not all(p.endswith(".gguf") for p in paths):
                raise ValueError("a GGUF entry may only list .gguf files")
            if self.projector is not None and (self.projector not in paths or self.projector == paths[0]):
                raise ValueError("'projector' must name one of the files, after the model's own")
        elif self.kind == "upscaler":
            if (self.format != "safetensors" or self.upscaler is None or self.image is not None or self.arch is not None
                    or self.projector is not None or len(paths) != 1 or not paths[0].endswith(".safetensors")):
                raise ValueError("an upscaler entry must be one .safetensors file, with 'upscaler' and without "
                                 "'image', 'arch' or 'projector'")
        elif self.kind == "vae":
            if (self.format != "diffusers" or self.tiny_vae_for is None or self.image is not None
                    or self.arch is not None or self.projector is not None or self.upscaler is not None
                    or sorted(paths) != ["config.json", "diffusion_pytorch_model.safetensors"]):
                raise ValueError("a tiny VAE entry must be a diffusers folder of config.json and "
                                 "diffusion_pytorch_model.safetensors, with 'tiny_vae_for' and without 'image', "
                                 "'arch', 'projector' or 'upscaler'")
        else:
            if self.format in ("gguf", "safetensors") or self.image is None or self.arch is not None \
                    or self.projector is not None or self.upscaler is not None or self.tiny_vae_for is not None:
                raise ValueError("an image entry must be diffusers or onnx, with 'image' and without 'arch'")
            if "model_index.json" not in paths:
                raise ValueError("an image pipeline needs its model_index.json")
            unsafe = [p for p in paths if p.endswith(_UNSAFE_SUFFIXES)]
            if unsafe:
                raise ValueError(f"pickle checkpoints are not allowed (use safetensors): {unsafe[0]}")
        return self

    @property
    def total_size(self) -> int:
        """Bytes on disk once every file is downloaded."""
        return sum(f.size for f in self.files)

    @property
    def projector_file(self) -> CatalogFile | None:
        """The vision projector downloaded with the model; None for a text-only model."""
        return next((f for f in self.files if f.path == self.projector), None)

    @property
    def model_size(self) -> int:
        """Bytes of the model's own weights, without its projector."""
        return self.total_size - (self.projector_file.size if self.projector_file else 0)

    @property
    def main_file(self) -> CatalogFile:
        """The file an engine opens: the first GGUF part, an upscaler's file, or model_index.json."""
        if self.format in ("gguf", "safetensors"):
            return self.files[0]
        return next(f for f in self.files if f.path == "model_index.json")

    def url(self, file: CatalogFile | str) -> str:
        """Download URL of one of this entry's files on the configured Hub."""
        from engines.network import hub_endpoint  # lazy: keep the catalog importable alone

        path = file.path if isinstance(file, CatalogFile) else file
        if path not in {f.path for f in self.files}:
            raise KeyError(f"{path!r} is not a file of {self.id}")
        base = hub_endpoint().rstrip("/")
        return f"{base}/{self.repo}/resolve/{quote(self.revision, safe='')}/{quote(path, safe='/')}"


class _CatalogDocument(_Strict):
    """The JSON file's top level."""

    schema_version: int
    entries: list[CatalogEntry]

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported (this build reads {SCHEMA_VERSION})")
        return value


@dataclass(frozen=True)
class Catalog:
    """The loaded catalog. ``error`` is set (and ``entries`` empty) when the
    file could not be used; callers show it instead of the model list."""

    entries: list[CatalogEntry] = field(default_factory=list)
    error: str | None = None
    path: Path | None = None
    schema_version: int = SCHEMA_VERSION

    def get(self, entry_id: str) -> CatalogEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def chat(self) -> list[CatalogEntry]:
        return [e for e in self.entries if e.kind == "chat"]

    def images(self) -> list[CatalogEntry]:
        return [e for e in self.entries if e.kind == "image"]

    def siblings(self, entry: CatalogEntry) -> list[CatalogEntry]:
        """Other builds of the same weights (same kind and format; same repo, or
        same family and parameter count), smallest first: what "try a smaller
        quantization" offers."""
        found = [
            e for e in self.entries
            if e.id != entry.id and e.kind == entry.kind and e.format == entry.format
            and (e.repo == entry.repo or (e.family == entry.family and e.parameters == entry.parameters))
        ]
        return sorted(found, key=lambda e: (e.total_size, e.id))


def default_catalog_path() -> Path:
    from resources import RESOURCES

    return RESOURCES / "catalog" / "catalog.json"


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate the catalog; never raises for a bad file."""
    path = Path(path) if path is not None else default_catalog_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _failed(path, f"{path} does not exist.")
    except UnicodeDecodeError as exc:
        return _failed(path, f"{path} is not UTF-8 text (byte {exc.start}).")
    except json.JSONDecodeError as exc:
        return _failed(path, f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.")
    except OSError as exc:
        return _failed(path, f"{path}: {exc.strerror or exc}.")
    try:
        document = _CatalogDocument.model_validate(raw)
    except ValidationError as exc:
        return _failed(path, f"{path}: {_describe(exc, raw)}")
    seen: dict[str, int] = {}
    for index, entry in enumerate(document.entries):
        if entry.id in seen:
            return _failed(
                path,
                f"{path}: entry {index + 1} repeats the id {entry.id!r} already used by entry {seen[entry.id] + 1}.",
            )
        seen[entry.id] = index
    return Catalog(entries=list(document.entries), path=path, schema_version=document.schema_version)


def _failed(path: Path, reason: str) -> Catalog:
    message = ERROR_PREFIX + reason
    log.error("%s", message)
    return Catalog(entries=[], error=message, path=path)


def _describe(exc: ValidationError, raw: Any) -> str:
    """The first validation problem, located by entry number and id and by field."""
    problems = exc.errors(include_url=False)
    first = problems[0]
    loc = list(first["loc"])
    where = "top level"
    if len(loc) >= 2 and loc[0] == "entries" and isinstance(loc[1], int):
        index = loc[1]
        where = f"entry {index + 1}"
        try:
            entry_id = raw["entries"][index].get("id")
        except (KeyError, IndexError, TypeError, AttributeError):
            entry_id = None
        if isinstance(entry_id, str):
            where += f" ({entry_id!r})"
        loc = loc[2:]
    field_path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (not part of the catalog schema)"
    elif first["type"] == "missing":
        message = "required field is missing"
    more = f" ({len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
    return f"{where}, {field_path or 'entry'}: {message}{more}."
