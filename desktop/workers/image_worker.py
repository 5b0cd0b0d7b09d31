"""Runs image generations on a worker thread and saves every image at once.

The worker drives the image engine through the app's one scheduler
(:mod:`engines.scheduler`: torch, diffusers and ONNX Runtime live only in
the engine host it starts), so an image and a chat reply take turns on a
small machine's CPU instead of thrashing each other. The worker lives in
its own QThread; it talks to the GUI only through queued signals. Stop is not a signal (a queued signal
would wait behind the busy generation loop): the GUI calls
:meth:`ImageWorker.cancel`, which sets the engine host's shared flag.

Each image is written to the gallery here, in the worker thread, the
moment the engine reports it finished (an ``ImageDoneEvent``) and before
the GUI hears of it, so an image is never lost because the batch was
cancelled, the engine crashed, or the window closed. Live previews are
thinned to about ten a second so painting never falls behind a fast GPU.

The engine host runs under this interpreter, or under the private image
engine's Python when one is installed (the scheduler asks
:func:`engines.envs.image_host_launch` each time it starts one), and
:meth:`ImageWorker.reset_host` unloads every image model after the private
engine was installed or removed, so the next run uses the new one. Without
a scheduler given, the worker opens one of its own (tests, a lone page).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from engines.api import FinishedEvent, ProgressEvent
from engines.diffusion.types import ImageDoneEvent, ImageLoadSpec, ImageRequest, PreviewEvent, StepEvent
from engines.errors import EngineCrashed, EngineError, ErrorKind
from engines.images.gallery import FilesOnlyGallery, Gallery, NotIndexed, request_record
from engines.images.gallery import open_gallery as open_gallery_at
from engines.scheduler.work import IMAGE_ENGINES
from desktop.workers.speed_recorder import record_image_run

ENGINE_NAME = "diffusers"
CLIENT = "images page"  # whom the scheduler's fair queue serves
PREVIEW_INTERVAL_S = 0.1  # at most ~10 previews a second reach the GUI
CANCELLED = "cancelled"  # the ``kind`` of failed() when the user stopped the run
SAVE_FAILED = "save_failed"  # the ``kind`` of failed() when an image could not be written


def open_gallery(workspace) -> Gallery | FilesOnlyGallery:
    """The gallery of ``workspace``: PNGs under ``<data>/images``, rows in the app database (files only when the
    database cannot be used)."""
    return open_gallery_at(workspace.paths.database, workspace.paths.data / "images")


class ImageWorker(QObject):
    loading = Signal(str)  # a status line while the model loads
    loaded = Signal(object)  # ImageModelInfo, once the model is ready
    step = Signal(object)  # StepEvent
    preview = Signal(bytes)  # a small PNG of the image so far
    saved = Signal(object)  # GalleryImage, already on disk and in the database, as each image finishes
    finished = Signal(object)  # ImageResult of a completed (not cancelled) run
    failed = Signal(str, str)  # kind (ErrorKind value, CANCELLED or SAVE_FAILED), message for the user
    unloaded = Signal()
    host_reset = Signal()  # the host was stopped and dropped (after reset_host)

    def __init__(self, workspace, host=None, gallery_factory=None, scheduler=None) -> None:
        super().__init__()
        self._workspace = workspace
        self._injected = host is not None
        self._host = host
        self._scheduler = scheduler
        self._owns_scheduler = False
        self._gallery_factory = gallery_factory or (lambda: open_gallery(workspace))
        self._gallery: Gallery | None = None
        self._cancelled = threading.Event()
        self._save_error = ""  # why the last image could not be saved, in words ("" when all were)
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
        """Called from the GUI thread: sets the flag the engine checks at every step."""
        self._cancelled.set()
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
        """Load ``model_path`` (if it is not loaded already), make the images and save each one as it is done."""
        self._cancelled.clear()
        self._save_error = ""
        if not spec.model_path:
            spec = ImageLoadSpec(model_path, spec.backend, spec.device, spec.dtype)
        try:
            result = self._generate(model_path, spec, request)
        except EngineCrashed as exc:
            self.failed.emit(ErrorKind.CRASHED, exc.message)
            return
        except EngineError as exc:
            self.failed.emit(exc.kind, exc.message)
            return
        except Exception as exc:  # a bug: say so in words, never a traceback
            self.failed.emit(ErrorKind.INTERNAL, f"The image run failed unexpectedly ({type(exc).__name__}: {exc}).")
            return
        if self._save_error:
            self.failed.emit(SAVE_FAILED, self._save_error)
            return
        if result is None and not self._cancelled.is_set():
            self.failed.emit(ErrorKind.INTERNAL, "The image engine ended the run without a result.")
            return
        if result is None or result.cancelled:
            self.failed.emit(CANCELLED, "Cancelled")
            return
        record_image_run(self._workspace, self.model_id, result)  # the Models page shows it beside the estimate
        self.finished.emit(result)

    def _generate(self, model_path: str, spec: ImageLoadSpec, request: ImageRequest):
        info = getattr(self.host, "model_info", None)
        if info is None or str(getattr(info, "path", "")) != str(spec.model_path):
            self.loading.emit(f"Loading {Path(model_path).name}…")

        def on_load_event(event) -> None:
            if isinstance(event, ProgressEvent):
                self.loading.emit(event.message)

        info = self.host.load(ENGINE_NAME, spec, on_load_event)
        self.loaded.emit(info)
        if self._cancelled.is_set():
            return None
        record = request_record(request, spec.model_path, spec.backend, self.model_id)
        last_preview = 0.0
        result = None
        for event in self.host.generate(request):
            if self._cancelled.is_set():
                self.host.cancel()  # a cancel that came before generate() reset the host's flag
            if isinstance(event, ImageDoneEvent):
                self._save(event.image, record, info)
            elif isinstance(event, StepEvent):
                self.step.emit(event)
            elif isinstance(event, PreviewEvent):
                now = time.monotonic()
                if now - last_preview >= PREVIEW_INTERVAL_S:
                    last_preview = now
                    self.preview.emit(event.png)
            elif isinstance(event, FinishedEvent):
                result = event.result
        return result

    def _save(self, image, record: dict, info) -> None:
        """Write one finished image to the gallery; on failure stop the run (the next ones could not be kept)."""
        try:
            if self._gallery is None:
                self._gallery = self._gallery_factory()  # SQLite connection opened in this thread
            entry = self._gallery.save(image.png, record, seed=image.seed, width=image.width, height=image.height,
                                       model=info.name, backend=info.backend)
        except NotIndexed as exc:  # the file is on disk; only its gallery row is missing
            self._save_error = (f"The image was saved as {exc.path}, but the gallery could not record it "
                                f"({exc.cause}).")
        except Exception as exc:  # disk full, folder not writable, database locked or corrupt...
            detail = getattr(exc, "strerror", None) or str(exc)
            self._save_error = f"The image could not be saved to {self._images_dir()}: {detail}"
        else:
            self.saved.emit(entry)
            return
        self.host.cancel()

    def _images_dir(self) -> Path:
        return self._workspace.paths.data / "images"

    @Slot()
    def unload(self) -> None:
        """Stop the engine process: this gives the model's memory back in full."""
        if self._host is not None:
            self._host.close()
        self.unloaded.emit()

    @Slot()
    def shutdown(self) -> None:
        self._cancelled.set()
        if self._host is not None:
            self._host.close()
        if self._owns_scheduler:
            self._scheduler.shutdown()
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None
