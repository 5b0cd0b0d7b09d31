"""Typed, versioned user settings, kept apart from models and chats.

Stored as JSON in the config folder. ``schema_version`` plus a list of
migrations lets later versions change the shape without losing anything;
a file that cannot be read (torn, not an object, wrong types) is set aside
(never deleted), defaults are used, and :func:`read_settings` says so.
A new field with a default (such as ``LoadPrefs.cache_type``) needs no
migration: files written before it simply get the default.

Fields this version does not know (written by a newer one) are kept, and
so is a newer ``schema_version``. Saving is a read-modify-write under the
file's lock that merges with what is on disk now: a setting changed by
another process since this one loaded the file survives, unless this
process changed that same setting.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from engines.kv_cache import CACHE_TYPES, DEFAULT_CACHE_TYPE, CacheType
from engines.storage import atomic_write_text, read_state, state_lock

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
WHAT = "The settings file"
# What a model answering from the user's documents is told before them (engines/documents/grounding.py fills
# {documents}); shown and edited in Settings, so the user sees exactly what the model is asked.
DEFAULT_GROUNDING_PROMPT = (
    "Answer using the documents below. After each statement taken from them, cite its source as [1], [2]... "
    "If the documents do not contain the answer, say so plainly instead of guessing.\n\n{documents}"
)


class LoadPrefs(BaseModel):
    """Per-model load settings the user chose (None: let the engine decide)."""

    model_config = ConfigDict(extra="allow")  # fields from a newer version are kept

    context_length: int = Field(4096, ge=64, le=1_048_576)
    threads: int | None = Field(None, ge=1, le=1024)
    gpu_layers: int | None = Field(None, ge=-1, le=100_000)
    cache_type: CacheType = DEFAULT_CACHE_TYPE  # the context (KV) cache's element type

    @field_validator("cache_type", mode="before")
    @classmethod
    def _unknown_cache_type_is_f16(cls, value):
        """An unknown cache type (hand-edited, or from a newer version) falls back to f16.

        Failing validation here would set the whole settings file aside and
        lose every other preference for one value.
        """
        if value not in CACHE_TYPES:
            log.warning("unknown context cache type %r in the settings; using %s", value, DEFAULT_CACHE_TYPE)
            return DEFAULT_CACHE_TYPE
        return value


class _BadValuesFallBack(BaseModel):
    """A bad value (hand-edited, or from a newer version) falls back to its default; the others are kept.

    As for ``LoadPrefs.cache_type``: failing validation would set the whole
    settings file aside for one stale field. ``_what`` names the group in the log.
    """

    _what: ClassVar[str] = "settings"

    @model_validator(mode="wrap")
    @classmethod
    def _bad_values_fall_back(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as exc:
            if not isinstance(data, dict):
                log.warning("%s are not an object (%r); using the defaults", cls._what, type(data).__name__)
                return handler({})
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            log.warning("unusable %s %s; using their defaults", cls._what, sorted(map(str, bad)))
            return handler({key: value for key, value in data.items() if key not in bad})


# A layer below the image engines, so their limits are restated here; tests/test_image_prefs_memory.py pins them
# to engines.diffusion.types (MAX_LORAS, MAX_LORA_WEIGHT) and engines.images.grid (SETTINGS).
REMEMBERED_LORAS_MAX = 8
LORA_WEIGHT_LIMIT = 10.0  # the LoRA picker's range: -10 to 10
GRID_AXIS_NAMES = ("seed", "steps", "guidance", "sampler", "lora", "prompt")


class RememberedLora(BaseModel):
    """A LoRA the Images page had picked: its library id and weight (the file is found again through the id)."""

    id: str = Field(min_length=1, max_length=1000)
    weight: float = Field(1.0, ge=-LORA_WEIGHT_LIMIT, le=LORA_WEIGHT_LIMIT, allow_inf_nan=False)


def _grid_axis(text: str) -> str:
    """``steps=4,8,16`` as the Experiment section writes an axis: a setting it knows, "=", the values as typed.

    The values are checked when the grid is made, as when typed; only a name this version does not know (a
    hand-edited or newer file) is refused here, because the section could not show it.
    """
    name, sep, _values = text.partition("=")
    if not sep or name.strip() not in GRID_AXIS_NAMES:
        raise ValueError(f"{text!r} is not an experiment axis (one of {', '.join(GRID_AXIS_NAMES)}, then =values)")
    return text


class ImagePrefs(_BadValuesFallBack):
    """What the Images page showed last, restored at start.

    The model, backend, prompt, size, sampling and seed mode; the LoRAs picked (by id, with their weights); the
    Speed section (tiny-VAE previews and final decode, step caching and its interval); the Experiment section's
    axes and whether it was open. Each bad value falls back to its default alone.
    """

    _what: ClassVar[str] = "image settings"

    model_id: str | None = None
    backend: Literal["auto", "torch", "onnx"] = "auto"
    prompt: str = ""
    negative_prompt: str = ""
    width: int = Field(512, ge=64, le=2048)
    height: int = Field(512, ge=64, le=2048)
    steps: int = Field(20, ge=1, le=150)
    guidance: float = Field(7.0, ge=0.0, le=30.0)
    sampler: str = "Euler"  # checked against the samplers when applied: a name from a newer version is skipped
    random_seed: bool = True
    seed: int = Field(0, ge=0, le=2**32 - 1)
    upscaler_id: str | None = None  # the gallery's "Upscale with" pick; None (or one removed since): the defaults
    loras: list[RememberedLora] = Field(default_factory=list, max_length=REMEMBERED_LORAS_MAX)
    # The Speed section (desktop/pages/images/speed_options.py): "tiny" previews mean "the real picture when a tiny
    # VAE is installed for the model's family", so that choice survives a start without one.
    previews: Literal["tiny", "latent"] = "tiny"
    final_decode: Literal["full", "tiny"] = "full"
    step_cache: bool = False
    step_cache_interval: int = Field(3, ge=2, le=5)
    # The Experiment section (desktop/pages/images/grid_panel.py): X, then Y when one is chosen.
    grid_axes: list[Annotated[str, AfterValidator(_grid_axis)]] = Field(default_factory=list, max_length=2)
    experiment_open: bool = False


class ServerPrefs(_BadValuesFallBack):
    """The Server page's switch and what it binds to: the API server comes back with the app only if left on."""

    _what: ClassVar[str] = "server settings"

    enabled: bool = False
    host: Literal["127.0.0.1", "0.0.0.0"] = "127.0.0.1"  # loopback, or every interface (needs the token)
    port: int = Field(8080, ge=1, le=65535)
    cors_origins: list[str] = Field(default_factory=list)  # exact origins; checked again when the server starts


class Settings(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields from a newer version are kept

    schema_version: int = Field(SCHEMA_VERSION, ge=1)
    theme: Literal["system", "light", "dark"] = "system"
    last_model_id: str | None = None
    overflow_policy: Literal["ask", "drop_oldest", "stop"] = "ask"
    offline: bool = False
    advanced_controls: bool = False  # simple mode hides expert controls until the user asks (desktop/widgets/expert.py)
    first_run_done: bool = False  # the first-run dialog was shown (desktop/pages/models/first_run.py)
    load_prefs: dict[str, LoadPrefs] = Field(default_factory=dict)
    images: ImagePrefs = Field(default_factory=ImagePrefs)
    server: ServerPrefs = Field(default_factory=ServerPrefs)
    grounding_prompt: str = Field(DEFAULT_GROUNDING_PROMPT, min_length=1, max_length=20_000)

    # The file as this process last read or wrote it: saving merges against it.
    _on_disk: dict = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:  # the settings, not where they were read from
        return isinstance(other, Settings) and self.model_dump() == other.model_dump()

    def prefs_for(self, model_id: str) -> LoadPrefs:
        return self.load_prefs.get(model_id, LoadPrefs())


# Each migration takes the raw dict of version N and returns version N+1.
MIGRATIONS: dict[int, callable] = {}


def read_settings(path: Path) -> tuple[Settings, str | None]:
    """The settings in *path*, and a message for the user when the file had to be set aside."""
    loaded: list[Settings] = []

    def check(raw: dict) -> None:  # raises ValueError (pydantic's included) or TypeError
        loaded.append(_validate(raw))

    state = read_state(path, WHAT, check)
    if not loaded:
        return Settings(), state.problem
    settings = loaded[-1]
    settings._on_disk = settings.model_dump(mode="json")
    return settings, state.problem


def load_settings(path: Path) -> Settings:
    return read_settings(path)[0]


def save_settings(path: Path, settings: Settings) -> None:
    """Merge *settings* into the file as it is now and write it atomically, under its lock."""
    ours = settings.model_dump(mode="json")
    with state_lock(path):
        state = read_state(path, WHAT)
        if not state.writable:
            raise OSError(state.problem)
        merged = _merge_object(settings._on_disk, ours, state.data)
        merged["schema_version"] = max(ours["schema_version"], _int_or(state.data.get("schema_version"), 1))
        atomic_write_text(path, json.dumps(merged, indent=2, ensure_ascii=False))
    settings._on_disk = ours


def _validate(raw: dict) -> Settings:
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"its schema_version is {json.dumps(version)}, not a positive whole number")
    while version < SCHEMA_VERSION:
        raw = MIGRATIONS[version](raw)
        version += 1
        raw["schema_version"] = version
    if version > SCHEMA_VERSION:
        log.info("settings written by a newer Atelier (schema %d); unknown fields are kept", version)
    return Settings.model_validate(raw)


def _merge_object(base: dict, ours: dict, theirs: dict) -> dict:
    """Three-way merge of one JSON object: our changes since *base* win, the rest stays as in *theirs*.

    A field absent from *ours* is never taken as deleted (a newer version's
    field this one does not know), and ``load_prefs`` is merged per model.
    """
    merged = dict(theirs)
    for key, value in ours.items():
        if key in theirs and key in base and base[key] == value:
            continue  # unchanged here: another process's value stands
        if key == "load_prefs" and isinstance(value, dict):
            merged[key] = _merge_prefs(_dict(base.get(key)), value, _dict(theirs.get(key)))
        elif isinstance(value, dict) and isinstance(theirs.get(key), dict):  # a nested object, such as images
            merged[key] = _merge_object(_dict(base.get(key)), value, theirs[key])
        else:
            merged[key] = value
    return merged


def _merge_prefs(base: dict, ours: dict, theirs: dict) -> dict:
    """``load_prefs`` is a mapping: a model's entry removed here is removed, the others merge as objects."""
    merged = {key: value for key, value in theirs.items() if not (key in base and key not in ours)}
    for key, value in ours.items():
        if key in theirs and key in base and base[key] == value:
            continue
        merged[key] = _merge_object(_dict(base.get(key)), value, _dict(theirs.get(key)))
    return merged


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
