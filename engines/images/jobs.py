"""The one image job service: load a model, make the images, and keep each one the moment it is finished.

``atelier image`` and the Images page both run an :class:`ImageJob` through
:class:`ImageJobs`, so an image is kept the same way whoever asked for it:

1. the model is loaded through the engine host the front end gives
   (a :class:`engines.scheduler.ScheduledHost` from the one scheduler, or a
   stand-in in tests), with its load progress reported;
2. every ``ImageDoneEvent`` is handled before the engine starts the next
   image: the PNG gets its Content Credentials (signed here, in the front
   end's process, see :mod:`engines.images.credentials`), is written to the
   ``--out`` file when there is one, then to the gallery folder and its
   index, whose record names the model's folder, its id and the backend
   choice, so "use these settings again" restores the model wherever the
   image was made;
3. an image that could not be written anywhere it was asked for stops the
   run (the next ones could not be kept either) and is reported as lost;
   everything else that goes wrong while keeping an image (the gallery's
   index, the credentials) costs a notice, never the image.

The service knows nothing of Qt or terminals: it reports through one
callback (:class:`Loading`, :class:`Loaded`, the engine's step and preview
events, :class:`ImageKept`, :class:`Notice`) and returns a
:class:`JobOutcome`, and each front end says it its own way. :meth:`cancel`
may be called from any thread (a Cancel button, Ctrl-C).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engines.api import FinishedEvent, NoticeEvent, ProgressEvent
from engines.diffusion.types import ImageDoneEvent, ImageLoadSpec, ImageRequest
from engines.errors import EngineError
from engines.images.gallery import FilesOnlyGallery, Gallery, GalleryImage, NotIndexed, request_record
from engines.storage import atomic_write_bytes

ENGINE = "diffusers"  # the engine name both image backends are loaded under (it picks torch or ONNX)


@dataclass(frozen=True)
class ImageJob:
    """One run: ``request`` on the model ``spec`` loads.

    ``model_id``: the installed model's id, when it is one (kept with each
    image). ``targets``: the ``--out`` file of each image of the batch,
    written before the gallery. ``credentials``: sign each PNG (off for one
    run with ``atelier image --no-credentials``).
    """

    spec: ImageLoadSpec
    request: ImageRequest
    model_id: str | None = None
    targets: tuple[Path, ...] = ()
    credentials: bool = True


@dataclass(frozen=True)
class Loading:
    message: str  # "Loading sd-turbo…", then the engine's own load progress


@dataclass(frozen=True)
class Loaded:
    info: Any  # ImageModelInfo


@dataclass(frozen=True)
class ImageKept:
    """One finished image, on disk: ``path`` is where the user asked for it (``--out``), else the gallery file."""

    index: int
    seed: int
    width: int
    height: int
    path: Path
    entry: GalleryImage | None  # its gallery entry (None when the gallery could not take it)
    signed: bool  # it carries Content Credentials


@dataclass(frozen=True)
class Notice:
    """Something to tell the user that cost nothing made (a gallery that cannot index, no credentials)."""

    message: str


@dataclass
class JobOutcome:
    info: Any = None  # ImageModelInfo, once loaded
    result: Any = None  # the engine's ImageResult (None when it never finished)
    kept: list[ImageKept] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # one sentence per image that could not be written
    error: EngineError | None = None  # what ended the run, unless it was a cancel
    cancelled: bool = False


class ImageJobs:
    """Runs image jobs on an engine host and keeps their images.

    ``open_gallery`` opens the gallery on first use (in the thread that runs
    the jobs: the GUI's worker thread); ``config_dir`` holds the signing key.
    One job at a time.
    """

    def __init__(self, open_gallery: Callable[[], Gallery | FilesOnlyGallery], images_dir: Path,
                 config_dir: Path) -> None:
        self._open_gallery = open_gallery
        self._gallery: Gallery | FilesOnlyGallery | None = None
        self.images_dir = Path(images_dir)
        self._config_dir = Path(config_dir)
        self._signer = None  # CredentialsSigner, made for the first image to sign
        self._cancelled = threading.Event()
        self._host = None
        self._told: set[str] = set()

    @property
    def gallery(self) -> Gallery | FilesOnlyGallery:
        if self._gallery is None:
            self._gallery = self._open_gallery()
        return self._gallery

    def cancel(self) -> None:
        """Stop the job in hand at its next step; any thread. Finished images are kept."""
        self._cancelled.set()
        host = self._host
        if host is not None:
            host.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def run(self, host, job: ImageJob, on_event: Callable[[Any], None], *, fresh: bool = True) -> JobOutcome:
        """Load, generate and keep; never raises for the engine's errors (``outcome.error`` has them).

        ``fresh=False`` continues a sequence of jobs on the loaded model (an
        experiment grid's cells, :mod:`engines.images.grid_run`): a cancel that
        came between two jobs still holds, and a notice is told once for all.
        """
        if fresh:
            self._cancelled.clear()
            self._told.clear()
        self._host = host
        outcome = JobOutcome()
        try:
            self._load(host, job, on_event, outcome)
            if not self._cancelled.is_set():
                self._generate(host, job, on_event, outcome)
        except EngineError as exc:
            if not self._cancelled.is_set():  # after a cancel (Ctrl-C reaches the engine too) it is the cancel
                outcome.error = exc
        finally:
            self._host = None
        result = outcome.result
        outcome.cancelled = outcome.error is None and (self._cancelled.is_set() or result is None or result.cancelled)
        return outcome

    def _load(self, host, job: ImageJob, on_event, outcome: JobOutcome) -> None:
        loaded = getattr(host, "model_info", None)
        if loaded is None or str(getattr(loaded, "path", "")) != str(job.spec.model_path):
            on_event(Loading(f"Loading {Path(job.spec.model_path).name}…"))

        def relay(event) -> None:
            if isinstance(event, ProgressEvent):
                on_event(Loading(event.message))

        outcome.info = host.load(ENGINE, job.spec, relay)
        on_event(Loaded(outcome.info))

    def _generate(self, host, job: ImageJob, on_event, outcome: JobOutcome) -> None:
        record = request_record(job.request, job.spec.model_path, job.spec.backend, job.model_id)
        for event in host.generate(job.request):
            if self._cancelled.is_set():
                host.cancel()  # a cancel that came before generate() reached a host with no request yet
            if isinstance(event, ImageDoneEvent):
                self._keep(event, job, record, outcome, on_event)
                if outcome.lost:
                    host.cancel()  # the next images could not be kept either
            elif isinstance(event, FinishedEvent):
                outcome.result = event.result
            elif isinstance(event, NoticeEvent):  # the engine's word on the request (a prompt read literally)
                self._tell(on_event, event.message)
            else:
                on_event(event)

    # ---- keeping one image ---------------------------------------------------

    def _keep(self, event: ImageDoneEvent, job: ImageJob, record: dict, outcome: JobOutcome, on_event) -> None:
        image, info = event.image, outcome.info
        provenance = None
        if job.credentials:
            from engines.images.credentials import Provenance  # c2pa's side: only once an image is done

            provenance = Provenance.of_request(job.request, info.name)
        target = job.targets[event.image_index] if job.targets else None
        kept = self.keep_png(image.png, record, info, on_event, outcome.lost, seed=image.seed, width=image.width,
                             height=image.height, index=event.image_index, target=target, provenance=provenance)
        if kept is not None:
            outcome.kept.append(kept)
            on_event(kept)

    def keep_png(self, png: bytes, record: dict, info, on_event, lost: list[str], *, seed: int, width: int,
                 height: int, index: int = 0, target: Path | None = None, provenance=None) -> ImageKept | None:
        """Sign ``png`` (unless ``provenance`` is None), write it to ``target`` and to the gallery; None when lost.

        The one way a finished PNG is kept: each image of a run, and an
        experiment grid's own image. A PNG that could not be written where it
        was asked for adds a sentence to ``lost``.
        """
        png, signed = self._sign(png, provenance, on_event)
        path = None
        if target is not None:
            try:
                path = atomic_write_bytes(target, png)
            except OSError as exc:
                lost.append(f"could not write {target}: {exc.strerror or exc}")
        entry = None
        try:
            entry = self.gallery.save(png, record, seed=seed, width=width, height=height,
                                      model=info.name, backend=info.backend)
        except NotIndexed as exc:
            entry = exc.entry
            self._tell(on_event, f"the gallery index could not be updated ({exc.cause}); the image files are kept")
        except (sqlite3.Error, OSError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc)
            if path is not None:
                self._tell(on_event, f"the image could not be added to the gallery ({detail})")
            elif target is None:
                lost.append(f"could not write the image to {self.images_dir}: {detail}")
        stored = Path(entry.path) if entry is not None else None
        where = path or stored
        if where is None:
            return None
        return ImageKept(index, seed, width, height, where, entry, signed)

    def _sign(self, png: bytes, provenance, on_event) -> tuple[bytes, bool]:
        """``png`` with its Content Credentials, or as it came (with a notice) when they cannot be added."""
        if provenance is None:
            return png, False
        from engines.images.credentials import CredentialsSigner  # c2pa: only once an image is done

        if self._signer is None:
            self._signer = CredentialsSigner(self._config_dir)
        signed = self._signer.sign(png, provenance)
        for notice in signed.notices:
            self._tell(on_event, notice)
        return signed.png, signed.signed

    def _tell(self, on_event, message: str) -> None:
        if message not in self._told:  # once a run: a batch of 8 needs the sentence once
            self._told.add(message)
            on_event(Notice(message))

