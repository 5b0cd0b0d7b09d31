"""Runs image jobs on a worker thread, for the Images page.

The work itself is the image job service's (:mod:`engines.images.jobs`,
the same one ``atelier image`` uses): it loads the model through the app's
one scheduler (torch, diffusers and ONNX Runtime live only in the engine
host it starts, and an image and a chat reply take turns on a small
machine's CPU), signs each finished image's Content Credentials and saves
it to the gallery the moment the engine reports it, before the GUI hears
of it, so an image is never lost because the batch was cancelled, the
engine crashed, or the window closed. This worker only turns the
service's events into queued signals, and thins live previews to about
ten a second so painting never falls behind a fast GPU.

The worker lives in its own QThread. Stop is not a signal (a queued signal
would wait behind the busy generation loop): the GUI calls
:meth:`ImageWorker.cancel`, which reaches the engine at once. The engine
host runs under this interpreter, or under the private image engine's
Python when one is installed (the scheduler asks
:func:`engines.envs.image_host_launch` each time it starts one), and
:meth:`ImageWorker.reset_host` unloads every image model after the private
engine was installed or removed, so the next run uses the new one. Without
a scheduler given, the worker opens one of its own (tests, a lone page).
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal, Slot

from engines.diffusion.types import ImageLoadSpec, ImageRequest, PreviewEvent, StepEvent
from engines.errors import EngineCrashed, ErrorKind
from engines.images.gallery import FilesOnlyGallery, Gallery
from engines.images.gallery import open_gallery as open_gallery_at
from engines.images.jobs import ENGINE, ImageJob, ImageJobs, ImageKept, Loaded, Loading, Notice
from engines.scheduler.work import IMAGE_ENGINES
from desktop.workers.speed_recorder import record_image_run

ENGINE_NAME = ENGINE
CLIENT = "images page"  # whom the scheduler's fair queue serves
PREVIEW_INTERVAL_S = 0.1  # at most ~10 previews a second reach the GUI
CANCELLED = "cancelled"  # the ``kind`` of failed() when the user stopped the run
SAVE_FAILED = "save_failed"  # the ``kind`` of failed() when an image could not be written


def open_gallery(workspace) -> Gallery | FilesOnlyGallery:
    """The gallery of ``workspace``: PNGs under ``<data>/images``, rows in the app database (files only when the
    database cannot be used)."""
    return open_gallery_at(workspace.paths.database, images_dir(workspace))


def images_dir(workspace):
    return workspace.paths.data / "images"


class ImageWorker(QObject):
    loading = Signal(str)  # a status line while the model loads
    loaded = Signal(object)  # ImageModelInfo, once the model is ready
    step = Signal(object)  # StepEvent
    preview = Signal(bytes)  # a small PNG of the image so far
    saved = Signal(object)  # GalleryImage, already on disk (signed) and in the gallery, as each image finishes
    notice = Signal(str)  # something to tell that cost no image (the gallery's index, the credentials)
    finished = Signal(object)  # ImageResult of a completed (not cancelled) run
    failed = Signal(str, str)  # kind (ErrorKind value, CANCELLED or SAVE_FAILED), message for the user
    unloaded = Signal()
    host_reset = Signal()  # the host was stopped and dropped (after reset_host)
    # An experiment grid (engines.images.grid_run): each cell as it starts, the grid's entry, the whole outcome.
    cell = Signal(object)  # CellStarted; the cells' images arrive through ``saved`` like any image
    grid_saved = Signal(object)  # GalleryImage of the grid image
    grid_finished = Signal(object)  # GridOutcome of a grid that made every cell

    def __init__(self, workspace, host=None, gallery_factory=None, scheduler=None) -> None:
        super().__init__()
        self._workspace = workspace
        self._injected = host is not None
        self._host = host
        self._scheduler = scheduler
        self._owns_scheduler = False
        self.jobs = ImageJobs(gallery_factory or (lambda: open_gallery(workspace)), images_dir(workspace),
                              workspace.paths.config)
        self.model_id: str | None = None  # set by the page: the installed model's id, stored with each image

    @property
    def host(self):
        if self._host is None:
            self._host = self._make_host()
        return self._host

    def _make_host(self):
        if self._scheduler is None:
            self._scheduler = self._workspace.scheduler()
            self._owns_scheduler = True
        return self._scheduler.host_for(CLIENT)

    def cancel(self) -> None:
        """Called from the GUI thread: the engine stops at its next step; finished images are kept."""
        self.jobs.cancel()
        if self._host is not None:
            self._host.cancel()

    @Slot()
    def reset_host(self) -> None:
        """Stop the engine process and forget it: the next run starts one with the current engine."""
        if self._host is not None:
            self._host.close()
            if not self._injected:
                self._host = None
        if self._scheduler is not None:
            self._scheduler.unload_engines(IMAGE_ENGINES)  # the server's image models too: files may go next
        self.host_reset.emit()

    @Slot(str, object, object)
    def run(self, model_path: str, spec: ImageLoadSpec, request: ImageRequest) -> None:
        """Load ``model_path`` (if it is not loaded already), make the images and keep each one as it is done.

        ``request`` may be an experiment grid's plan (:class:`engines.images.grid.GridPlan`): its cells run one after
        another on the loaded model, then the grid image is kept.
        """
        from engines.images.grid import GridPlan
        from engines.images.grid_run import CellKept, CellStarted, GridJob, GridKept, run_grid

        if not spec.model_path:
            spec = ImageLoadSpec(model_path, spec.backend, spec.device, spec.dtype)
        grid = request if isinstance(request, GridPlan) else None
        last_preview = [0.0]

        def on_event(event) -> None:
            if isinstance(event, CellKept):
                event = event.kept
            if isinstance(event, CellStarted):
                self.cell.emit(event)
            elif isinstance(event, GridKept):
                if event.kept.entry is not None:
                    self.grid_saved.emit(event.kept.entry)
            elif isinstance(event, ImageKept):
                if event.entry is not None:
                    self.saved.emit(event.entry)
            elif isinstance(event, StepEvent):
                self.step.emit(event)
            elif isinstance(event, PreviewEvent):
                now = time.monotonic()
                if now - last_preview[0] >= PREVIEW_INTERVAL_S:
                    last_preview[0] = now
                    self.preview.emit(event.png)
            elif isinstance(event, Loading):
                self.loading.emit(event.message)
            elif isinstance(event, Loaded):
                self.loaded.emit(event.info)
            elif isinstance(event, Notice):
                self.notice.emit(_sentence(event.message))

        try:
            if grid is not None:
                outcome = run_grid(self.jobs, self.host, GridJob(spec, grid, model_id=self.model_id), on_event)
            else:
                outcome = self.jobs.run(self.host, ImageJob(spec, request, model_id=self.model_id), on_event)
        except Exception as exc:  # a bug: say so in words, never a traceback
            self.failed.emit(ErrorKind.INTERNAL, f"The image run failed unexpectedly ({type(exc).__name__}: {exc}).")
            return
        if outcome.error is not None:
            error = outcome.error
            self.failed.emit(ErrorKind.CRASHED if isinstance(error, EngineCrashed) else error.kind, error.message)
        elif outcome.lost:
            self.failed.emit(SAVE_FAILED, _sentence("; ".join(outcome.lost)))
        elif grid is not None:
            if outcome.cancelled:
                self.failed.emit(CANCELLED, "Cancelled")
            else:
                self.grid_finished.emit(outcome)
        elif outcome.result is None and not self.jobs.cancelled:
            self.failed.emit(ErrorKind.INTERNAL, "The image engine ended the run without a result.")
        elif outcome.cancelled:
            self.failed.emit(CANCELLED, "Cancelled")
        else:
            record_image_run(self._workspace, self.model_id, outcome.result)  # the Models page shows it
            self.finished.emit(outcome.result)

    @Slot()
    def unload(self) -> None:
        """Stop the engine process: this gives the model's memory back in full."""
        if self._host is not None:
            self._host.close()
        self.unloaded.emit()

    @Slot()
    def shutdown(self) -> None:
        self.jobs.cancel()
        if self._host is not None:
            self._host.close()
        if self._owns_scheduler:
            self._scheduler.shutdown()
        self.jobs.close()


def _sentence(text: str) -> str:
    """The service's words as a banner sentence: a capital first, a full stop last."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
