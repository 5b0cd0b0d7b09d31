"""The Images page: controls on the left, the image in the middle, the gallery below it.

A thin view: layout, wiring and what to show. The run, the gallery and the
worker belong to :class:`desktop.pages.images_controller.ImagesController`
(as the chat page's belong to its ChatController); the image engine runs in
an engine-host child process, so this page never imports torch, diffusers
or ONNX Runtime. Every image is signed and saved by the image job service
the moment it is finished and before the page hears of it. The selected
image's Content Credentials are read off the GUI thread and shown under
it. The controls' values are remembered across restarts
(``Settings.images``), saved a moment after each edit and at every Generate.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication, QImage, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.images.controls import ImageControls
from desktop.pages.images.credentials_view import CredentialsLine
from desktop.pages.images.engine_panel import EngineEnvLine, EngineMissingPanel
from desktop.pages.images.gallery_view import GalleryView
from desktop.pages.images.grid_panel import GridPanel, GridRunView, plan_from
from desktop.pages.images.image_view import ImageView
from desktop.pages.images.inpaint_panel import InpaintMode
from desktop.pages.images.settings_memory import not_restored_line
from desktop.pages.images.status import BACKEND_NAMES, cancelled_message, crash_message, format_step
from desktop.pages.images.upscale_action import PageUpscale, UpscaleBar
from desktop.open_external import open_path, reveal_path
from desktop.pages.images_controller import ImagesController
from desktop.widgets.labels import banner_label
from desktop.workers.image_worker import CANCELLED, ENGINE_NAME, ImageWorker
from engines.byte_sizes import format_bytes
from engines.diffusion.request_words import steps_words
from engines.errors import ErrorKind
from engines.workspace import Workspace

EMPTY_VIEW_TEXT = "Write a prompt and press Generate (Ctrl+Enter).\nYour image appears here as it forms."
PREFS_SAVE_DELAY_MS = 1500  # typing saves once it pauses, not at every key


def image_engine_availability():
    """Whether the "diffusers" image engine can run here, found without importing it."""
    from engines.engine_plugin import Availability
    from engines.registry import discover

    try:
        plugin = discover().get(ENGINE_NAME)
    except Exception as exc:  # a broken environment must not break the page
        return Availability(False, f"the engine list could not be read ({exc}).")
    if plugin is None:
        return Availability(False, "this installation has no image engine (the 'diffusers' engine is not registered).")
    return plugin.availability()


class ImagesPage(QWidget):
    def __init__(self, workspace: Workspace, worker: ImageWorker | None = None, parent=None, engine_env=None,
                 scheduler=None, controller: ImagesController | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        if engine_env is None:
            from engines.envs import ImageEngineEnv, image_engine_root

            engine_env = ImageEngineEnv(image_engine_root(workspace.paths))
        self.engine_env = engine_env  # the private image engine (engines.envs), installed on demand
        self._pending_remove = False
        self.engine_available = True
        self._shown_id = ""  # the gallery image in the view ("" for none)
        self._closed = False
        self._init_problem_shown = False  # the banner holds an init-image problem (cleared by a good image)
        self._prefs_timer = QTimer(self)
        self._prefs_timer.setSingleShot(True)
        self._prefs_timer.setInterval(PREFS_SAVE_DELAY_MS)
        self._prefs_timer.timeout.connect(self.save_prefs)
        self._build()
        # the window's scheduler, shared with the chat page and the server
        self.controller = controller or ImagesController(workspace, worker=worker, scheduler=scheduler)
        self.upscale = PageUpscale(self, scheduler)  # "Upscale ×2 / ×4" on a gallery image
        self._wire()
        self.controls.set_tiny_vae_finder(self.controller.tiny_vae_for)
        self.refresh_models()
        self._show_banner(not_restored_line(self.controls.apply_prefs(workspace.settings.images, self.grid_panel)))
        self.controls.changed.connect(self._prefs_timer.start)  # after restoring: restoring is not an edit
        self.grid_panel.changed.connect(self._prefs_timer.start)
        self.refresh_gallery()
        self.check_engine()

    # The controller's parts, under the names the page always had.
    @property
    def worker(self) -> ImageWorker:
        return self.controller.worker

    @property
    def gallery(self):
        return self.controller.gallery

    @property
    def running(self) -> bool:
        return self.controller.running

    # ---- layout ----------------------------------------------------------

    def _build(self) -> None:
        splitter = QSplitter(Qt.Horizontal)
        splitter.setChildrenCollapsible(False)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self.controls = ImageControls()
        self.grid_panel = GridPanel()  # the Experiment section (X/Y plot), folded under the controls
        left = QWidget()
        left_col = QVBoxLayout(left)
        left_col.setContentsMargins(0, 0, 0, 0)
        left_col.addWidget(self.controls, 1)
        left_col.addWidget(self.grid_panel)
        splitter.addWidget(left)

        center = QWidget()
        col = QVBoxLayout(center)
        col.setContentsMargins(16, 12, 16, 12)
        col.setSpacing(8)
        self.title = QLabel("Images")
        self.title.setObjectName("PageTitle")
        col.addWidget(self.title)
        self.banner = banner_label()
        col.addWidget(self.banner)

        self.stack = QStackedWidget()
        self.view = ImageView()
        self.view.show_message(EMPTY_VIEW_TEXT)
        self.stack.addWidget(self.view)
        self.engine_panel = EngineMissingPanel()
        self.engine_panel.set_env(self.engine_env)
        self.engine_message = self.engine_panel.message
        self.stack.addWidget(self.engine_panel)
        self.inpaint = InpaintMode(self.stack, self.view)  # the mask painter, in the view's place when asked
        col.addWidget(self.inpaint.bar)
        col.addWidget(self.stack, 1)

        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(6)
        self.progress.hide()
        col.addWidget(self.progress)
        # Two lines of their own, each wrapping: side by side they were cut off in a small window.
        self.status_line = QLabel()
        self.status_line.setObjectName("StatusLine")
        self.status_line.setWordWrap(True)
        self.seed_line = QLabel()
        self.seed_line.setObjectName("SeedLine")
        self.seed_line.setWordWrap(True)
        self.seed_line.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
        self.seed_line.setToolTip("Select the seed to copy it; “Use these settings again” restores it.")
        col.addWidget(self.status_line)
        col.addWidget(self.seed_line)
        self.credentials_line = CredentialsLine()  # the shown image's Content Credentials, once read
        col.addWidget(self.credentials_line)
        self.engine_line = EngineEnvLine()
        col.addWidget(self.engine_line)
        self.upscale_bar = UpscaleBar()  # an upscale's progress and Cancel, while one runs
        col.addWidget(self.upscale_bar)

        self.gallery_view = GalleryView()
        col.addWidget(self.gallery_view)
        splitter.addWidget(center)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([340, 760])

    def _wire(self) -> None:
        c, k, g = self.controls, self.controller, self.gallery_view
        c.generate_requested.connect(self.generate)
        c.cancel_requested.connect(self.cancel)
        c.add_model_requested.connect(self._choose_model_folder)
        c.unload_requested.connect(self.unload)
        c.init_group.problem.connect(self._show_init_problem)
        c.init_group.changed.connect(self._clear_init_problem)
        self.inpaint.wire(self, self._show_banner)
        k.loading.connect(self.status_line.setText)
        k.loaded.connect(lambda info: c.set_native_size(getattr(info, "native_size", None)))
        k.step.connect(self._on_step)
        k.preview.connect(lambda png: self.view.show_png(png, kind="preview"))
        k.saved.connect(self._on_saved)
        k.notice.connect(self._show_banner)
        k.finished.connect(self._on_finished)
        k.failed.connect(self._on_failed)
        k.unloaded.connect(lambda: self.status_line.setText("Image model unloaded; its memory was given back."))
        k.host_reset.connect(self._on_host_reset)
        k.credentials.connect(self._on_credentials)
        self.grid_run = GridRunView(self)  # after the page's own slots: for a grid, its words replace theirs
        p = self.engine_panel
        p.installed.connect(self._on_engine_installed)
        p.removed.connect(self._on_engine_removed)
        p.remove_failed.connect(self._on_engine_remove_failed)
        self.engine_line.remove_requested.connect(self.remove_engine)
        g.selected.connect(self.show_image)
        g.open_requested.connect(self.open_image)
        g.copy_requested.connect(self.copy_image)
        g.reveal_requested.connect(self.reveal_image)
        g.delete_requested.connect(self.delete_image)
        g.reuse_requested.connect(self.reuse_settings)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, activated=self.generate)
        # Esc stops a run; while nothing runs it is left to whatever else wants it (dialogs, other pages).
        self.cancel_shortcut = QShortcut(QKeySequence(Qt.Key_Escape), self, activated=self.cancel)
        self.cancel_shortcut.setEnabled(False)

    # ---- engine and models ----------------------------------------------

    def check_engine(self) -> bool:
        """Ready when this interpreter has the engine, or when the private one is installed."""
        state = image_engine_availability()
        if state.available:
            self.engine_line.hide()
            self.show_engine_ready()
            return True
        env = self._engine_env_status()
        if env is not None and env.state == "ready":
            self.engine_line.show_status(env)
            self.show_engine_ready()
            return True
        self.engine_line.hide()
        self.show_engine_missing(state.reason)
        self.engine_panel.show_status(env)
        return False

    def _engine_env_status(self):
        try:
            return self.engine_env.status()
        except Exception as exc:  # noqa: BLE001 - a broken state file must not break the page
            self._show_banner(f"Could not read the image engine's state: {exc}")
            return None

    def _on_engine_installed(self, status) -> None:
        self.controller.reset_host()  # the next run starts the host under the new engine's Python
        self.check_engine()
        self.status_line.setText("Image engine installed. Choose a model and press Generate.")

    def remove_engine(self, confirm: bool = True) -> bool:
        """Delete the private image engine (after stopping its process); the page offers the install again."""
        if self.running or self._pending_remove:
            return False
        if confirm:
            answer = QMessageBox.question(
                self, "Remove image engine",
                "Remove Atelier's image engine (PyTorch, diffusers, ONNX Runtime) and give its disk space back? "
                "Your images and models stay. You can install it again later.",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No,
            )
            if answer != QMessageBox.Yes:
                return False
        self._pending_remove = True
        self.engine_line.remove_button.setEnabled(False)
        self.status_line.setText("Removing the image engine…")
        self.controller.reset_host()  # its process must be gone before its files are
        return True

    def _on_host_reset(self) -> None:
        if self._pending_remove and not self.engine_panel.remove_engine():
            self._on_engine_remove_failed("another install or removal is still running")

    def _on_engine_removed(self, freed: int) -> None:
        self._pending_remove = False
        self.engine_line.remove_button.setEnabled(True)
        self.check_engine()
        self.status_line.setText(f"Image engine removed: {format_bytes(freed)} given back.")

    def _on_engine_remove_failed(self, message: str) -> None:
        self._pending_remove = False
        self.engine_line.remove_button.setEnabled(True)
        self.status_line.setText("")
        self._show_banner(f"Could not remove the image engine: {message}")
        self.check_engine()

    def show_engine_missing(self, reason: str) -> None:
        """The engine cannot run here: say why and disable Generate (the gallery keeps working)."""
        self.engine_available = False
        self.engine_panel.set_reason(reason)
        self.stack.setCurrentWidget(self.engine_panel)
        self.controls.set_running(self.running, can_generate=False)
        self.controls.generate_button.setToolTip(f"The image engine is not installed: {reason}")

    def show_engine_ready(self) -> None:
        self.engine_available = True
        self.stack.setCurrentWidget(self.view)
        self.controls.set_running(self.running, can_generate=True)
        self.controls.generate_button.setToolTip("Make the image (Ctrl+Enter)")

    def refresh_models(self, selected_id: str | None = None) -> None:
        self.controls.set_loras(self.controller.loras())  # first: the model's choice judges them
        self.controls.set_models(self.controller.models(), selected_id)

    def _choose_model_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add an image model folder (diffusers or ONNX)", str(Path.home()))
        if path:
            self.add_model_folder(path)

    def add_model_folder(self, path: str):
        """Register a diffusers or ONNX folder as an installed model; None (and a banner) when it is not one."""
        model, problem = self.controller.add_model_folder(path)
        if model is None:
            self._show_banner(problem)
            return None
        self.refresh_models(model.id)
        self._show_banner("")
        self.status_line.setText(f"Added {model.name}.")
        return model

    # ---- running ---------------------------------------------------------

    def generate(self, axes: list[str] | None = None) -> bool:
        """Validate the controls and start a run; problems are shown inline and nothing runs.

        ``axes``: an experiment grid's (``steps=4,8``...) that varies the controls' request; its problems go to the
        banner."""
        if self.running or not self.engine_available:
            return False
        problems = self.controls.problems()
        self.controls.show_problems(problems)
        if problems:
            return False
        model = self.controls.current_model()
        spec = self.controls.load_spec()
        request, problem = self.inpaint.apply(self.controls.request())  # the mask and margins, from Inpaint
        if request is None:
            self._show_banner(problem)
            return False
        if axes is not None:
            request, problem = plan_from(request, axes, spec.model_path)
            if request is None:
                self._show_banner(problem)
                return False
        fresh = self.controller.loaded_model_path() != spec.model_path
        start = self.controller.generate if axes is None else self.controller.generate_grid
        if not start(model, spec, request):
            return False
        self._show_banner("")
        self.save_prefs()
        self.controls.set_running(True)
        self.cancel_shortcut.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first step
        self.progress.show()
        self.seed_line.setText("")
        self.status_line.setText(f"Loading {model.name}…" if fresh else "Starting…")
        return True

    def cancel(self) -> None:
        if self.controller.cancel():
            self.status_line.setText("Cancelling…")
            self.controls.cancel_button.setEnabled(False)

    def unload(self) -> None:
        self.controller.unload()

    def _on_step(self, event) -> None:
        total = max(event.total, 1) * max(event.batch_count, 1)
        self.progress.setRange(0, total)
        self.progress.setValue(event.image_index * event.total + event.step)
        self.status_line.setText(format_step(event))

    def _on_saved(self, entry) -> None:
        first = len(self.controller.run_saved) == 1
        self.gallery_view.add_entry(entry, select=first)
        if first:
            self._display(entry)

    def _on_finished(self, result) -> None:
        self._end_run()
        count = len(result.images)
        backend = BACKEND_NAMES.get(result.backend, result.backend)
        made = f"Made {count} images" if count != 1 else "Made 1 image"
        self.status_line.setText(f"{made} in {result.seconds:.1f} s · {backend} · {result.device} · {result.dtype}")
        saved = self.controller.run_saved
        if saved:
            first = saved[0]
            self._display(first)  # the batch's first image, selected in the strip, replaces the last preview
            seeds = f"Seed {first.seed}" if count == 1 else f"Seed {first.seed} (batch {result.seeds[0]}–{result.seeds[-1]})"
            self.seed_line.setText(f"{seeds}  ·  {result.seconds_per_step:.2f} s/step")

    def _on_failed(self, kind: str, message: str) -> None:
        self._end_run()
        self._restore_view()
        if kind == CANCELLED:
            self.status_line.setText(cancelled_message(len(self.controller.run_saved)))
            return
        self.status_line.setText("")
        if kind == ErrorKind.CRASHED:
            self._show_banner(crash_message(message))
        else:
            self._show_banner(message)

    def _end_run(self) -> None:
        self.cancel_shortcut.setEnabled(False)
        self.progress.hide()
        self.controls.set_running(False, can_generate=self.engine_available)

    def _restore_view(self) -> None:
        """After a failed or cancelled run: the first image this run kept, else the one shown before."""
        if self.controller.run_saved:
            self._display(self.controller.run_saved[0])
            return
        if self.view.kind == "preview" or not self._shown_id:
            entry = self.controller.entry(self._shown_id)
            if entry is not None:
                self._display(entry)
            else:
                self.view.show_message(EMPTY_VIEW_TEXT)

    # ---- gallery ---------------------------------------------------------

    def refresh_gallery(self) -> None:
        entries, problem = self.controller.gallery_entries()
        self.gallery_view.set_entries(entries)
        self.gallery_view.set_problem(problem)

    def show_image(self, image_id: str) -> None:
        entry = self.controller.entry(image_id)
        if entry is not None and not self.running:
            self._display(entry)
            made = time.strftime("%d %b %Y, %H:%M", time.localtime(entry.created_at))
            backend = BACKEND_NAMES.get(entry.backend, entry.backend)
            self.status_line.setText(f"{entry.model} · {backend} · made {made}")

    def _display(self, entry) -> None:
        self._shown_id = entry.id
        self.view.show_file(entry.path)
        guidance = f"{entry.guidance:g}"
        self.seed_line.setText(f"Seed {entry.seed}  ·  {entry.width}×{entry.height} · {steps_words(entry.steps)} · "
                               f"{entry.scheduler} · CFG {guidance}")
        if self.credentials_line.image_id != entry.id:
            self.credentials_line.show_pending(entry.id)
            self.controller.read_credentials(entry)

    def _on_credentials(self, image_id: str, credentials) -> None:
        self.credentials_line.show_credentials(image_id, credentials)

    def reuse_settings(self, image_id: str) -> list[str]:
        """Put an image's prompt, seed (fixed) and settings back into the controls."""
        found = self.controller.reuse(image_id)
        if found is None:
            return []
        settings, model = found
        notes = self.controls.apply_settings(settings, model.id if model else None)
        if model is None:
            notes.insert(0, f"the model {settings.get('model') or 'it used'} is not installed, so the current one stays")
        self.controls.show_problems([])
        if notes:
            self._show_banner("Settings restored, but " + "; ".join(notes) + ".")
        else:
            self._show_banner("")
        self.status_line.setText(f"Settings of the image with seed {settings.get('seed')} restored.")
        return notes

    def delete_image(self, image_id: str, confirm: bool = True) -> bool:
        entry = self.controller.entry(image_id)
        if entry is None:
            return False
        if confirm:
            answer = QMessageBox.question(
                self, "Delete image",
                f"Delete this image (seed {entry.seed}) from the gallery and from the disk?\n\n{entry.path}",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No,
            )
            if answer != QMessageBox.Yes:
                return False
        problem = self.controller.delete(image_id)
        if problem:
            self._show_banner(problem)
            return False
        self.gallery_view.remove(image_id)
        if self._shown_id == image_id:
            self._shown_id = ""
            self.seed_line.setText("")
            self.credentials_line.clear()
            if not self.running:
                self.view.show_message(EMPTY_VIEW_TEXT)
        self.status_line.setText("Image deleted.")
        return True

    def open_image(self, image_id: str) -> bool:
        entry = self.controller.entry(image_id)
        if entry is None or not self._exists(entry):
            return False
        self._show_banner("")
        return open_path(entry.path, self._show_banner)

    def copy_image(self, image_id: str) -> bool:
        entry = self.controller.entry(image_id)
        if entry is None or not self._exists(entry):
            return False
        image = QImage(entry.path)
        if image.isNull():
            self._show_banner(f"Could not read {entry.path}.")
            return False
        QGuiApplication.clipboard().setImage(image)
        self.status_line.setText("Image copied to the clipboard.")
        return True

    def reveal_image(self, image_id: str) -> bool:
        entry = self.controller.entry(image_id)
        if entry is None or not self._exists(entry):
            return False
        self._show_banner("")
        return reveal_path(entry.path, self._show_banner)

    def _exists(self, entry) -> bool:
        if entry.exists:
            return True
        self._show_banner(f"The image file is missing: {entry.path}. Delete it from the gallery to tidy up.")
        return False

    # ---- misc ------------------------------------------------------------

    def _show_banner(self, text: str) -> None:
        self._init_problem_shown = False
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def _show_init_problem(self, text: str) -> None:
        self._show_banner(text)
        self._init_problem_shown = True

    def _clear_init_problem(self) -> None:
        if self._init_problem_shown:
            self._show_banner("")

    # ---- remembered settings ---------------------------------------------

    def save_prefs(self) -> None:
        """Remember the controls' values (``Settings.images``) for the next start."""
        self._prefs_timer.stop()
        self.controller.save_prefs(self.controls.prefs(self.grid_panel))

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if not self.running:
            self.refresh_models()  # the Models page may have added one

    def shutdown(self) -> None:
        """Stop any run, the worker thread and the engine process. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._prefs_timer.isActive():
            self.save_prefs()
        self.engine_panel.shutdown()
        self.upscale.shutdown()
        self.controller.shutdown()
