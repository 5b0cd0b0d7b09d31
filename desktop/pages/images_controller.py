"""The Images page's brain on the GUI side: the run, the gallery, the worker, as the chat page has its controller.

It keeps the view thin: the page forwards user actions here, and this
object turns them into work for the worker thread (which runs the image job
service, :mod:`engines.images.jobs`) and gallery calls. It shows nothing
itself; it emits signals the page renders, and returns what a page needs
to draw (an entry, the settings to put back, a sentence for the banner).

Nothing a gallery or a model folder can throw escapes a slot: a failure
becomes a sentence (``banner``) and a False or None return. Every image is
saved by the worker before this object hears of it, so the gallery is the
record of everything made, a cancelled batch's finished images included.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from desktop.pages.images.controls import settings_from_entry
from desktop.workers.background import run_in_background, serial_pool
from desktop.workers.image_worker import ImageWorker, images_dir, open_gallery
from engines.errors import EngineError
from engines.settings import ImagePrefs
from engines.workspace import Workspace

log = logging.getLogger(__name__)
SHUTDOWN_WAIT_MS = 15000  # for the worker to end its run once the engine is told to stop
KEY_AFTER_START_MS = 1000  # the signing key is made (or checked) once the window is up, never before it


class ImagesController(QObject):
    # The worker's signals, relayed on the GUI thread (the page connects here, never to the worker).
    loading = Signal(str)
    loaded = Signal(object)  # ImageModelInfo
    step = Signal(object)  # StepEvent
    preview = Signal(bytes)
    saved = Signal(object)  # GalleryImage, on disk and in the gallery
    finished = Signal(object)  # ImageResult of a completed run
    failed = Signal(str, str)  # kind, message
    unloaded = Signal()
    host_reset = Signal()
    notice = Signal(str)  # a sentence that cost no image: the page shows it in its banner
    credentials = Signal(str, object)  # image id, engines.images.credentials_read.Credentials
    cell = Signal(object)  # an experiment grid's CellStarted
    grid_saved = Signal(object)  # the grid image's GalleryImage
    grid_finished = Signal(object)  # GridOutcome
    _run = Signal(str, object, object)
    _unload = Signal()
    _reset_host = Signal()

    def __init__(self, workspace: Workspace, worker: ImageWorker | None = None, scheduler=None, parent=None) -> None:
        """``scheduler``: the app's one engine scheduler (the window's); ``worker``: a stand-in's (tests)."""
        super().__init__(parent)
        self.workspace = workspace
        self.gallery = open_gallery(workspace)  # the page's own connection: list, get, delete
        self.running = False
        self.run_saved: list = []  # GalleryImages of the current run, in order
        self.grid_plan = None  # the experiment grid the current (or last) run makes, if it is one
        self.grid_entry = None  # that grid's GalleryImage, once kept
        self.current_cell = None  # the grid's cell in hand (CellStarted)
        self.started = 0.0
        self._closed = False
        self._credentials_pool = serial_pool("image-credentials")
        self.worker = worker or ImageWorker(workspace, scheduler=scheduler)
        self._thread = QThread()
        self._thread.setObjectName("image-worker")
        self.worker.moveToThread(self._thread)
        w = self.worker
        self._run.connect(w.run)
        self._unload.connect(w.unload)
        self._reset_host.connect(w.reset_host)
        w.loading.connect(self._on_loading)
        w.loaded.connect(self.loaded)
        w.step.connect(self._on_step)
        w.preview.connect(self._on_preview)
        w.saved.connect(self._on_saved)
        w.notice.connect(self.notice)
        w.finished.connect(self._on_finished)
        w.failed.connect(self._on_failed)
        w.unloaded.connect(self.unloaded)
        w.host_reset.connect(self.host_reset)
        w.cell.connect(self._on_cell)
        w.grid_saved.connect(self._on_grid_saved)
        w.grid_finished.connect(self._on_grid_finished)
        self._thread.start()
        QTimer.singleShot(KEY_AFTER_START_MS, self.prepare_signing_key)

    @property
    def images_dir(self) -> Path:
        return images_dir(self.workspace)

    # ---- models ----------------------------------------------------------

    def models(self) -> list:
        return self.workspace.models.runnable("image")

    def loras(self) -> list:
        """The library's LoRAs (records of kind "lora", with the family they were trained for)."""
        try:
            return [m for m in self.workspace.models.all() if m.kind == "lora"]
        except Exception as exc:  # noqa: BLE001 - a damaged library costs the LoRA list, never the page
            log.warning("could not list the LoRAs: %s", exc)
            return []

    def tiny_vae_for(self, family: str) -> str:
        """The installed tiny VAE folder (TAESD, TAESDXL) for ``family`` ("sd" or "sdxl"); "" when none is."""
        from engines.images.vae_choice import installed_tiny_vae

        return installed_tiny_vae(family, self.workspace.models, self.workspace.paths.models)

    def loaded_model_path(self) -> str:
        info = getattr(self.worker.host, "model_info", None)
        return str(getattr(info, "path", "")) if info is not None else ""

    def add_model_folder(self, path: str):
        """Register a diffusers or ONNX folder as an installed model; returns (model or None, problem sentence)."""
        from engines.library.importer import import_model  # the probe registry, as every way in; no torch

        try:
            model = import_model(path, self.workspace.models)
        except EngineError as exc:
            return None, f"Could not add that folder: {exc.message}"
        if model.kind != "image":
            return None, f"{model.name} is not an image model; it was added to the library for the page that runs it."
        return model, ""

    def installed_model_for(self, settings: dict):
        """The installed image model an image was made with: by id, then folder, then name; None when gone."""
        models = self.models()
        for match in (lambda m: m.id == settings.get("model_id"),
                      lambda m: settings.get("model_path") and Path(m.path) == Path(settings["model_path"]),
                      lambda m: settings.get("model") in (m.name, Path(m.path).name)):
            found = next((m for m in models if match(m)), None)
            if found is not None:
                return found
        return None

    # ---- running ---------------------------------------------------------

    def generate(self, model, spec, request) -> bool:
        """Start a run of ``request`` on ``model`` (already validated by the controls); False when one runs."""
        if self.running or self._closed:
            return False
        self.running = True
        self.run_saved = []
        self.grid_plan, self.grid_entry, self.current_cell = None, None, None
        self.started = time.monotonic()
        self.worker.model_id = model.id
        self._run.emit(model.path, spec, request)
        return True

    def generate_grid(self, model, spec, plan) -> bool:
        """Start an experiment grid (a checked :class:`engines.images.grid.GridPlan`); False when a run is on."""
        if not self.generate(model, spec, plan):  # the worker tells a plan from a request
            return False
        self.grid_plan = plan
        return True

    def _on_cell(self, event) -> None:
        self.current_cell = event
        self.cell.emit(event)

    def _on_grid_saved(self, entry) -> None:
        self.gallery.remember(entry)
        self.grid_entry = entry
        self.grid_saved.emit(entry)

    def _on_grid_finished(self, outcome) -> None:
        self.running = False
        self.grid_finished.emit(outcome)

    def cancel(self) -> bool:
        if not self.running:
            return False
        self.worker.cancel()
        return True

    def unload(self) -> bool:
        if self.running:
            return False
        self._unload.emit()
        return True

    def reset_host(self) -> None:
        """Stop every image model's process (an engine install or removal comes next); ``host_reset`` follows."""
        self._reset_host.emit()

    def _on_loading(self, message: str) -> None:
        if self.running:
            self.loading.emit(message)

    def _on_step(self, event) -> None:
        if self.running:
            self.step.emit(event)

    def _on_preview(self, png: bytes) -> None:
        if self.running:
            self.preview.emit(png)

    def _on_saved(self, entry) -> None:
        self.gallery.remember(entry)  # the worker's own connection saved it; the page's lists it too
        self.run_saved.append(entry)
        self.saved.emit(entry)

    def _on_finished(self, result) -> None:
        self.running = False
        self.finished.emit(result)

    def _on_failed(self, kind: str, message: str) -> None:
        self.running = False
        self.failed.emit(kind, message)

    # ---- gallery ---------------------------------------------------------

    def gallery_entries(self) -> tuple[list, str]:
        """The gallery, newest first, and why it is incomplete ("" when it is not)."""
        problem = self.gallery.problem
        try:
            entries = self.gallery.list()
        except sqlite3.Error as exc:  # a damaged table: the page still works, and says why the strip is empty
            entries, problem = [], f"the gallery's index cannot be read: {exc}"
        if problem:
            problem = (f"{problem[0].upper()}{problem[1:]}. New images are still saved as files in "
                       f"{self.images_dir}; this list shows only the ones made now.")
        return entries, problem

    def entry(self, image_id: str):
        return self.gallery.get(image_id) if image_id else None

    def delete(self, image_id: str) -> str:
        """Delete an image's file and row; "" when done, else the sentence saying why not."""
        entry = self.entry(image_id)
        if entry is None:
            return "That image is no longer in the gallery."
        try:
            self.gallery.delete(image_id)
        except (OSError, sqlite3.Error) as exc:
            return f"Could not delete {entry.path}: {getattr(exc, 'strerror', None) or exc}"
        return ""

    def reuse(self, image_id: str):
        """(settings, installed model or None) to put an image's prompt, seed and settings back; None if gone."""
        entry = self.entry(image_id)
        if entry is None:
            return None
        settings = settings_from_entry(entry)
        return settings, self.installed_model_for(settings)

    def read_credentials(self, entry) -> None:
        """Read ``entry``'s Content Credentials off the GUI thread; ``credentials(id, Credentials)`` follows."""
        from engines.images.credentials_read import UNREADABLE, Credentials, read_credentials  # c2pa: on first use

        path, image_id = entry.path, entry.id

        def failed(error) -> None:  # read_credentials never raises; a library that will not load does
            log.warning("could not read the credentials of %s: %s", path, error)
            self.credentials.emit(image_id, Credentials(UNREADABLE, problem=f"{error}."))

        run_in_background(lambda: read_credentials(path), lambda found: self.credentials.emit(image_id, found),
                          failed, pool=self._credentials_pool)

    def prepare_signing_key(self) -> None:
        """Make the Content Credentials key at the app's first start (check it at every later one), off the GUI
        thread; a damaged key is set aside and replaced now, and ``notice`` says so. An unwritable config folder
        is only logged here: the first image to sign says it, in the banner, when it matters."""
        if self._closed:
            return
        from engines.images.signing_identity import load_or_create_identity

        config = self.workspace.paths.config

        def made(identity) -> None:
            if identity.notice and not self._closed:
                self.notice.emit(identity.notice)

        run_in_background(lambda: load_or_create_identity(config), made,
                          lambda error: log.warning("the Content Credentials key could not be made: %s", error),
                          pool=self._credentials_pool)

    # ---- remembered settings ---------------------------------------------

    def save_prefs(self, values: dict) -> None:
        """Remember the controls' values (``Settings.images``) for the next start."""
        prefs = ImagePrefs.model_validate(values)
        if prefs == self.workspace.settings.images:
            return
        self.workspace.settings.images = prefs
        try:
            self.workspace.save_settings()
        except OSError as exc:  # a full or read-only disk: the values stay in memory, the page keeps working
            log.warning("could not save the Images page's settings: %s", exc)

    # ---- end -------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop any run, the worker thread and the engine process. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.running:
            self.worker.cancel()
        self._thread.quit()
        self._thread.wait(SHUTDOWN_WAIT_MS)
        self.worker.shutdown()  # the thread is done: safe to call directly
        self._credentials_pool.waitForDone(5000)
        self.gallery.close()
