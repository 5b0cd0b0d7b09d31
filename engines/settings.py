"""Typed, versioned user settings, kept apart from models and chats.

Stored as JSON in the config folder. ``schema_version`` plus a list of
migrations lets later versions change the shape without losing anything;
a file that cannot be read is set aside (never deleted) and defaults used.
A new field with a default (such as ``LoadPrefs.cache_type``) needs no
migration: files written before it simply get the default.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from engines.kv_cache import CACHE_TYPES, DEFAULT_CACHE_TYPE, CacheType

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1


class LoadPrefs(BaseModel):
    """Per-model load settings the user chose (None: let the engine decide)."""

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


class Settings(BaseModel):
    schema_version: int = SCHEMA_VERSION
    theme: Literal["system", "light", "dark"] = "system"
    last_model_id: str | None = None
    overflow_policy: Literal["ask", "drop_oldest", "stop"] = "ask"
    offline: bool = False
    load_prefs: dict[str, LoadPrefs] = Field(default_factory=dict)

    def prefs_for(self, model_id: str) -> LoadPrefs:
        return self.load_prefs.get(model_id, LoadPrefs())


# Each migration takes the raw dict of version N and returns version N+1.
MIGRATIONS: dict[int, callable] = {}


def load_settings(path: Path) -> Settings:
    if not path.exists():
        return Settings()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        version = int(raw.get("schema_version", 1))
        while version < SCHEMA_VERSION:
            raw = MIGRATIONS[version](raw)
            version += 1
            raw["schema_version"] = version
        return Settings.model_validate(raw)
    except (OSError, ValueError, ValidationError, KeyError) as exc:
        backup = path.with_name(f"{path.stem}.unreadable-{int(time.time())}{path.suffix}")
        log.warning("settings file %s is unreadable (%s); keeping it as %s and using defaults", path, exc, backup)
        try:
            path.replace(backup)
        except OSError:
            pass
        return Settings()


def save_settings(path: Path, settings: Settings) -> None:
    """Write atomically, so a crash mid-write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(settings.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)
