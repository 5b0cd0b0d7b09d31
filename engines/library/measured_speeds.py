"""Speeds measured when a model really ran here, kept beside the estimates.

An estimate (:mod:`engines.machine.speed`, :mod:`engines.machine.image_speed`)
is a guide; what a model did on this machine is the truth. After each
reply the chat page records the decode rate llama.cpp reported, and after
each image the images page records the seconds it took, in
``<data>/measured-speeds.json``:

    {"version": 1, "models": {"<model id>": {"unit": "tokens/s", "runs": [21.3, 20.8, ...],
                                             "cpu": "AMD EPYC ...", "detail": {...}}}}

The shown value is the median of the last ``KEPT_RUNS`` runs, so one run
slowed down by another program does not stick. A measurement belongs to
the CPU it was taken on: a profile carried to another machine
(``ATELIER_HOME`` on a USB stick) shows none until the model runs there.
Replies shorter than ``MIN_TOKENS`` are not recorded (their rate is mostly
noise). Image runs record their size, steps and guidance, which the
estimate shown beside them uses too.

The file is shared by every Atelier process on the profile: each change is
a read-modify-write under :func:`engines.storage.state_lock`, written with
:func:`engines.storage.atomic_write_text`, and fields this version does not
know (from a newer one) are kept. A damaged file is set aside by
:func:`engines.storage.read_state` and started afresh.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from engines.storage import atomic_write_text, file_version, read_state, state_lock

FILE_NAME = "measured-speeds.json"
WHAT = "The measured speeds file"
VERSION = 1
KEPT_RUNS = 5
MIN_TOKENS = 16


@dataclass(frozen=True)
class MeasuredSpeed:
    """What a model did on this machine: the median of its last runs."""

    model_id: str
    value: float  # tokens per second, or seconds per image
    unit: str  # "tokens/s" or "s/image"
    runs: int
    cpu: str
    detail: dict = field(default_factory=dict)  # images: width, height, steps, guidance, backend, dtype


def speeds_file(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def read_measured(path: Path, cpu: str | None = None) -> dict[str, MeasuredSpeed]:
    """Every model's measurement (only those taken on *cpu*, when given)."""
    document = _read(path)
    found = {}
    for model_id, record in document.get("models", {}).items():
        speed = _parse(model_id, record)
        if speed is not None and (cpu is None or speed.cpu == cpu):
            found[model_id] = speed
    return found


def record_text_speed(path: Path, model_id: str, tokens_per_second: float | None, completion_tokens: int,
                      cpu: str, threads: int | None = None) -> MeasuredSpeed | None:
    """Keep one reply's decode rate; None when the reply was too short to tell."""
    if not tokens_per_second or tokens_per_second <= 0 or completion_tokens < MIN_TOKENS:
        return None
    return _record(path, model_id, float(tokens_per_second), "tokens/s", cpu, {"threads": threads})


def record_image_speed(path: Path, model_id: str, seconds_per_image: float, cpu: str, *, width: int, height: int,
                       steps: int, guidance: float, backend: str, dtype: str) -> MeasuredSpeed | None:
    """Keep one image run's seconds per image, with the settings it ran at.

    Runs at other settings than the ones kept replace them: a median over
    512×512 and 1024×1024 runs would describe neither.
    """
    if seconds_per_image <= 0:
        return None
    detail = {"width": width, "height": height, "steps": steps, "guidance": guidance, "backend": backend, "dtype": dtype}
    return _record(path, model_id, float(seconds_per_image), "s/image", cpu, detail)


def record_download_rate(path: Path, bytes_per_second: float) -> None:
    """Keep the rate of a finished download, for the next download-time estimate."""
    if bytes_per_second <= 0:
        return
    with state_lock(path):
        document = _read(path)
        document["download"] = {"bytes_per_second": round(float(bytes_per_second)), "recorded_at": time.time()}
        _write(path, document)


def read_download_rate(path: Path) -> float | None:
    """The rate of the last finished download, in bytes per second, or None."""
    record = _read(path).get("download")
    value = record.get("bytes_per_second") if isinstance(record, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


# --------------------------------------------------------------------------- internals


def _record(path: Path, model_id: str, value: float, unit: str, cpu: str, detail: dict) -> MeasuredSpeed:
    with state_lock(path):
        document = _read(path)
        models = document.setdefault("models", {})
        record = models.get(model_id)
        same = (isinstance(record, dict) and record.get("unit") == unit and record.get("cpu") == cpu
                and record.get("detail") == detail and isinstance(record.get("runs"), list))
        runs = [r for r in record["runs"] if isinstance(r, (int, float))] if same else []
        runs = (runs + [round(value, 4)])[-KEPT_RUNS:]
        updated = dict(record) if isinstance(record, dict) else {}  # fields of a newer version stay
        updated.update(unit=unit, runs=runs, cpu=cpu, detail=detail, recorded_at=time.time())
        models[model_id] = updated
        _write(path, document)
    return _parse(model_id, updated)


def _parse(model_id: str, record) -> MeasuredSpeed | None:
    if not isinstance(record, dict):
        return None
    runs = [r for r in record.get("runs", ()) if isinstance(r, (int, float)) and r > 0] if isinstance(record.get("runs"), list) else []
    unit, cpu = record.get("unit"), record.get("cpu")
    if not runs or unit not in ("tokens/s", "s/image") or not isinstance(cpu, str):
        return None
    detail = record.get("detail") if isinstance(record.get("detail"), dict) else {}
    return MeasuredSpeed(model_id, float(statistics.median(runs)), unit, len(runs), cpu, detail)


def _read(path: Path) -> dict:
    """The document, or an empty one (a damaged file is set aside by :func:`engines.storage.read_state`)."""
    state = read_state(path, WHAT, _check)
    return state.data if state.data else {"version": VERSION, "models": {}}


def _check(document: dict) -> None:
    if not isinstance(document.get("models", {}), dict):
        raise ValueError("its 'models' is not an object")


def _write(path: Path, document: dict) -> None:
    document["version"] = max(VERSION, file_version(document))  # never downgrade a newer file
    atomic_write_text(path, json.dumps(document, indent=2))
