""""Upscale ×2 / ×4" on a gallery image: the Images page's side of ``atelier upscale``.

It runs the one upscale path (:mod:`engines.images.upscale_job`: the
``esrgan`` engine in an engine host, through the window's one scheduler, so
an upscale and an image or a chat reply take turns on the CPU) on a pool
thread, and reports per-tile progress; :meth:`UpscaleAction.cancel` stops
the engine within a tile. The upscaler is the one the user picked in the
gallery's "Upscale with" menu while it is installed, else the installed one
that suits the scale best (:mod:`engines.library.upscaler_choice`, as the
CLI chooses); the progress line and the status name it. With none
installed the user is told where to get one. The
result is signed as an edit of the source (Content Credentials with the
source as its parent), keeps the source's parameters and records the step
(in the PNG, and as ``upscale`` in the gallery record, whose generation
settings stay the source's, so "use these settings again" restores how the
original was made). It is saved into the gallery on the GUI thread, next
to the original.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from desktop.workers.background import run_in_background, serial_pool
from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)
CLIENT = "images page upscale"  # whom the scheduler's fair queue serves
NO_UPSCALER = ("No upscaler is installed. Get Real-ESRGAN ×4 on the Models page (Catalog tab, kind Upscaler), or "
               "add an ESRGAN-family .safetensors file there with Add file…; then choose Upscale again.")


class UpscaleAction(QObject):
    progress = Signal(str)  # "Upscaling: tile 3 of 16"
    finished = Signal(object, object)  # the new GalleryImage, the source's GalleryImage
    failed = Signal(str, str)  # kind (an ErrorKind value, "cancelled"), message
    _tile = Signal(str)

    def __init__(self, workspace, gallery, scheduler=None, parent=None) -> None:
        """``gallery``: the page's gallery (saved into on the GUI thread); ``scheduler``: the window's one."""
        super().__init__(parent)
        self.workspace = workspace
        self.gallery = gallery
        self._scheduler = scheduler
        self._owns_scheduler = False
        self._host = None
        self._pool = serial_pool("image-upscale")
        self.running = False
        self.scale = 0
        self.model = None  # the upscaler of the running (or last) upscale
        self._tile.connect(self.progress)  # from the pool thread, queued onto the GUI thread

    # ---- starting ------------------------------------------------------------

    def choose_upscaler(self, scale: int, wanted_id: str | None = None):
        """The upscaler ``wanted_id`` while installed, else the one that suits ``scale`` best; EngineError(NOT_FOUND)
        saying what to do if none is installed."""
        from engines.library.upscaler_choice import chosen_upscaler

        model = chosen_upscaler(self.workspace.models.runnable("upscaler"), scale, wanted_id)
        if model is None:
            raise EngineError(ErrorKind.NOT_FOUND, NO_UPSCALER)
        return model

    def start(self, entry, scale: int, upscaler_id: str | None = None) -> str:
        """Upscale the gallery image ``entry`` ``scale``× in the background; "" when it started, else why not.

        ``upscaler_id``: the upscaler the user picked (None, or one removed since: the best for ``scale``).
        """
        from engines.diffusion.upscale_types import UpscaleRequest
        from engines.images.init_image import read_init_image

        if self.running:
            return "An upscale is already running; wait for it or cancel it."
        try:
            model = self.choose_upscaler(scale, upscaler_id)
            source = read_init_image(Path(entry.path), role="image to upscale")
        except EngineError as exc:
            return exc.message
        request = UpscaleRequest(image=source, scale=scale, source_name=Path(entry.path).name)
        problems = request.validate()
        if problems:
            return "Cannot upscale this image: " + "; ".join(problems) + "."
        host = self._upscale_host()
        config = self.workspace.paths.config

        def work():
            from engines.images.upscale_job import run_upscale, sign_upscaled

            _info, result = run_upscale(host, model.path, request, on_progress=self._tile.emit)
            return result, sign_upscaled(result, source, config)

        self.running, self.scale, self.model = True, scale, model
        run_in_background(work, lambda done: self._done(entry, model, done), self._failed, pool=self._pool)
        return ""

    def cancel(self) -> bool:
        if not self.running or self._host is None:
            return False
        self._host.cancel()
        return True

    def _upscale_host(self):
        if self._host is None:
            if self._scheduler is None:
                self._scheduler = self.workspace.scheduler()
                self._owns_scheduler = True
            self._host = self._scheduler.host_for(CLIENT)
        return self._host

    # ---- the result ------------------------------------------------------------

    def _done(self, source, model, done) -> None:
        self.running = False
        result, signed = done
        record = dict(source.request or {})
        steps = list(record.get("upscales") or ())
        steps.append({"scale": result.scale, "upscaler": result.model_name, "upscaler_id": model.id,
                      "source_id": source.id, "source_width": result.source_width,
                      "source_height": result.source_height})
        record["upscales"] = steps
        try:
            entry = self.gallery.save(signed.png, record, seed=source.seed, width=result.width, height=result.height,
                                      model=source.model, backend=source.backend)
        except Exception as exc:  # noqa: BLE001 - the gallery's index; NotIndexed still wrote the file
            entry = getattr(exc, "entry", None)
            if entry is None:
                self.failed.emit(ErrorKind.INTERNAL, f"The upscaled image could not be saved: {exc}")
                return
            log.warning("the upscaled image is not indexed: %s", exc)
        self.finished.emit(entry, source)
        for notice in signed.notices:
            log.warning("upscale credentials: %s", notice)

    def _failed(self, error) -> None:
        self.running = False
        if isinstance(error, EngineError):
            kind = "cancelled" if error.kind == ErrorKind.CANCELLED else error.kind
            self.failed.emit(kind, error.message)
        else:
            self.failed.emit(ErrorKind.INTERNAL, f"The upscale failed unexpectedly ({error}).")

    def shutdown(self) -> None:
        if self.running:
            self.cancel()
        self._pool.waitForDone(15000)
        if self._host is not None:
            self._host.close()
        if self._owns_scheduler and self._scheduler is not None:
            self._scheduler.shutdown()


class UpscaleBar(QWidget):
    """The line under the image while an upscale runs: what it does, tile by tile, and Cancel."""

    cancel_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.label.setObjectName("StatusLine")
        self.label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel upscale")
        self.cancel_button.setToolTip("Stop the upscale; the original image is untouched")
        self.cancel_button.clicked.connect(self.cancel_requested)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.cancel_button)
        self._what = ""
        self.hide()

    def started(self, what: str) -> None:
        self._what = what
        self.label.setText(f"{what}…")
        self.cancel_button.setEnabled(True)
        self.show()

    def show_progress(self, message: str) -> None:
        self.label.setText(f"{self._what} · {message}" if self._what else message)

    def cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
        self.label.setText(f"{self._what} · cancelling…")

    def ended(self) -> None:
        self.hide()


class PageUpscale(QObject):
    """The Images page's upscale flow: the gallery's "Upscale ×N" → :class:`UpscaleAction` → the strip and banner.

    Kept out of images_page.py (a thin view that was near its size limit):
    the page makes one of these and adds its :class:`UpscaleBar`.
    """

    def __init__(self, page, scheduler=None) -> None:
        super().__init__(page)
        self.page = page
        self.action = UpscaleAction(page.workspace, page.controller.gallery, scheduler, parent=self)
        self.bar = page.upscale_bar
        page.gallery_view.upscale_requested.connect(self.upscale_image)
        page.gallery_view.upscaler_chosen.connect(self.choose)
        page.gallery_view.set_upscaler_source(self.upscalers)
        self.action.progress.connect(self.bar.show_progress)
        self.action.finished.connect(self._done)
        self.action.failed.connect(self._failed)
        self.bar.cancel_requested.connect(self.cancel)

    @property
    def running(self) -> bool:
        return self.action.running

    def upscalers(self):
        """What the gallery's Upscale menus offer: the installed upscalers and the one picked (None: the defaults)."""
        from engines.library.upscaler_choice import upscaler_options

        return upscaler_options(self.page.workspace.models.runnable("upscaler")), self.page.controls.upscaler_id

    def choose(self, upscaler_id: str) -> None:
        """The user picked an upscaler ("" for the default for each scale): used from now on, and remembered."""
        self.page.controls.upscaler_id = upscaler_id or None
        self.page.save_prefs()

    def upscale_image(self, image_id: str, scale: int) -> bool:
        """Upscale a gallery image ``scale``× in the background; False (and the banner says why) when it cannot."""
        page = self.page
        entry = page.controller.entry(image_id)
        if entry is None or not page._exists(entry):
            return False
        problem = self.action.start(entry, scale, page.controls.upscaler_id)
        if problem:
            page._show_banner(problem)
            return False
        page._show_banner("")
        self.bar.started(f"Upscaling the image with seed {entry.seed} ×{scale} ({self.action.model.name})")
        return True

    def cancel(self) -> None:
        if self.action.cancel():
            self.bar.cancelling()

    def _done(self, entry, source) -> None:
        page = self.page
        self.bar.ended()
        page.controller.gallery.remember(entry)
        page.gallery_view.add_entry(entry, select=not page.running, beside=source.id)
        if not page.running:
            page._display(entry)
        page.status_line.setText(f"Upscaled ×{self.action.scale} with {self.action.model.name} to {entry.width}×"
                                 f"{entry.height}; the result is next to the original in the gallery.")

    def _failed(self, kind: str, message: str) -> None:
        self.bar.ended()
        if kind == "cancelled":
            self.page.status_line.setText("Upscale cancelled; the original is untouched.")
        else:
            self.page._show_banner(f"Could not upscale: {message}")

    def shutdown(self) -> None:
        self.action.shutdown()
