"""A download job, and the schema it must pass before anything acts on it.

``downloads.json`` is shared by every Atelier process on a profile and may
have been edited, synced or unpacked from anywhere, so every job read from
it is validated field by field (:class:`JobRecord`). Above all, each path
a job leads to is confined exactly as a file name from a server is: the id
is one plain name (it names the job's staging folder, which is deleted on
Cancel), the target and every file path pass :func:`safe_relpath`. A job
that fails is never run, moved or deleted; it stays in the file as it was
and the queue reports it (defect D6).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engines.errors import EngineError, ErrorKind
from engines.library.download.transfer import FileSpec, printable, safe_relpath

QUEUED, RUNNING, PAUSED, FAILED, COMPLETED, CANCELLED = "queued", "running", "paused", "failed", "completed", "cancelled"
FINISHED = (FAILED, COMPLETED, CANCELLED)
STAGING = ".staging"
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class DownloadJob:
    """One model to download: a single file (installed as *target*) or several (a folder).

    ``owner`` is ``"<pid>:<token>"`` of the process running the job (None
    when no process runs it): other processes show the job and follow its
    progress, but never take it over while that process holds the job's lock.
    """

    id: str
    model_id: str
    name: str
    files: tuple[FileSpec, ...]
    target: str  # relative to the models folder: the file, or the folder of a multi-file job
    state: str = QUEUED
    bytes_done: int = 0
    bytes_total: int | None = None
    speed_bps: float = 0.0
    eta_s: float | None = None
    error: str | None = None
    created_at: float = 0.0
    owner: str | None = None

    @property
    def is_folder(self) -> bool:
        return len(self.files) > 1

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def owner_pid(self) -> int | None:
        head = (self.owner or "").split(":", 1)[0]
        return int(head) if head.isdigit() else None


def check_job_id(job_id: str) -> str:
    """*job_id* when it is one plain name (it becomes a folder name); EngineError otherwise."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise EngineError(ErrorKind.BAD_INPUT, f"Refusing the download id '{printable(str(job_id))}': an id must be "
                          "a plain name of letters, digits, - and _, so that it cannot reach outside Atelier's folders.")
    return job_id


def check_target(target: str) -> str:
    """The install target as a confined relative path, never inside Atelier's own staging folder."""
    relative = safe_relpath(target)
    if relative.parts[0] == STAGING:
        raise EngineError(ErrorKind.BAD_INPUT, f"Cannot download into '{target}': that folder is Atelier's own.")
    return str(relative)


class FileRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    url: str = Field(min_length=1)
    relpath: str
    size: int | None = Field(None, ge=0)
    sha256: str | None = None

    @field_validator("relpath")
    @classmethod
    def _confined(cls, value: str) -> str:
        _as_value_error(safe_relpath, value)
        return value


class JobRecord(BaseModel):
    """One job as stored in downloads.json; fields this version does not know are kept (``extra``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str
    model_id: str
    name: str
    files: list[FileRecord] = Field(min_length=1)
    target: str
    state: Literal["queued", "running", "paused", "failed", "completed", "cancelled"] = QUEUED
    bytes_done: int = Field(0, ge=0)
    bytes_total: int | None = Field(None, ge=0)
    speed_bps: float = 0.0
    eta_s: float | None = None
    error: str | None = None
    created_at: float = 0.0
    owner: str | None = None

    @field_validator("id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        return _as_value_error(check_job_id, value)

    @field_validator("target")
    @classmethod
    def _confined_target(cls, value: str) -> str:
        return _as_value_error(check_target, value)

    @model_validator(mode="after")
    def _distinct_files(self) -> JobRecord:
        rels = [str(safe_relpath(f.relpath)) for f in self.files]
        if len(set(rels)) != len(rels):
            raise ValueError("it lists the same file twice")
        return self

    def to_job(self) -> DownloadJob:
        files = tuple(FileSpec(f.url, f.relpath, f.size, f.sha256) for f in self.files)
        known = self.model_dump(exclude={"files"}, include=set(DownloadJob.__dataclass_fields__))
        return DownloadJob(**known, files=files)

    def extras(self) -> tuple[dict, list[dict]]:
        """The fields this version does not know: the job's, and each file's."""
        return dict(self.model_extra or {}), [dict(f.model_extra or {}) for f in self.files]


def job_to_json(job: DownloadJob, extras: tuple[dict, list[dict]] | None = None) -> dict:
    """The job as stored, with the unknown fields it was read with put back."""
    top, per_file = extras or ({}, [])
    data = {**top, **asdict(job)}
    data["files"] = [{**(per_file[i] if i < len(per_file) else {}), **asdict(spec)} for i, spec in enumerate(job.files)]
    return data


def _as_value_error(check, value):
    """Run a check that raises EngineError, as pydantic wants it (a ValueError with the message)."""
    try:
        return check(value)
    except EngineError as exc:
        raise ValueError(exc.message) from None
