"""Is what arrived the model that was asked for? Checked before anything is installed.

A server can answer 200 with a login page, a proxy can cut a file short
while its Content-Length says that is all, a link can lead to a LoRA when a
chat model was wanted. Without a SHA-256 from the catalog or the Hub,
nothing else catches these, so every finished download goes through the
probe registry (the same ``identify`` as every other way into the library)
and must be what its name claims, and something Atelier can run (D20).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from engines.errors import EngineError, ErrorKind
from engines.library.download.jobs import DownloadJob

SNIFF_BYTES = 512


class DownloadRejected(EngineError):
    """The bytes arrived but are not a usable model: they are deleted and nothing is installed."""


def check_download(job: DownloadJob, staged: Path) -> None:
    """Raise :class:`DownloadRejected` unless *staged* (the finished file or folder) is what *job* claims."""
    from engines.library.importer import check_recordable
    from engines.library.probes import identify

    if job.is_folder and PurePosixPath(job.files[0].relpath).suffix.lower() == ".gguf":
        _check_companions(job, staged)  # a GGUF model with its vision projector: the model is the first file
        staged = staged / job.files[0].relpath
    probed = identify(staged)
    expected, label = _claimed(job)
    if probed.kind == "unknown" or (expected and probed.format != expected and not (expected == "image" and probed.kind == "image")):
        looks = _looks_like(staged)
        why = f" ({looks})." if looks else f": {probed.reason.rstrip('.')}."
        raise DownloadRejected(ErrorKind.MODEL_FILE, f"The download of {job.name} is not {label}{why} Nothing was installed.")
    try:
        check_recordable(probed)
    except EngineError as exc:  # a LoRA or an upscaler: named for what it is, but nothing can run it yet
        raise DownloadRejected(exc.kind, f"{exc.message} Nothing was installed.") from None


def _check_companions(job: DownloadJob, staged: Path) -> None:
    """The files that come with a GGUF model (its vision projector) must be what they claim too."""
    from engines.library.probes import identify

    for spec in job.files[1:]:
        probed = identify(staged / spec.relpath)
        if probed.kind != "projector":
            why = probed.reason.rstrip(".") if probed.kind == "unknown" else f"it is {probed.description}"
            raise DownloadRejected(ErrorKind.MODEL_FILE, f"The download of {job.name} brought {spec.relpath}, which "
                                   f"is not a vision projector: {why}. Nothing was installed.")


def _claimed(job: DownloadJob) -> tuple[str | None, str]:
    """The format the job's name promises, and how to say it."""
    if job.is_folder and PurePosixPath(job.files[0].relpath).suffix.lower() == ".gguf":
        return "gguf", "a GGUF model"
    if job.is_folder:
        return "image", "an image model folder"
    suffix = PurePosixPath(job.target).suffix.lower()
    if suffix == ".gguf":
        return "gguf", "a GGUF model"
    if suffix == ".safetensors":
        return "safetensors", "a .safetensors model"
    return None, "a model Atelier can use"


def _looks_like(path: Path) -> str | None:
    """What a file that is no model obviously is, from its first bytes (web pages above all)."""
    try:
        with open(path, "rb") as handle:  # a regular file: identify() checked it before
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return None
    text = head.lstrip().lower()
    if not head:
        return "it is empty"
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<body" in text:
        return "it looks like an HTML page"
    if text.startswith(b"<"):
        return "it looks like XML or a web page"
    if text.startswith((b"{", b"[")):
        return "it looks like a JSON document"
    return None
