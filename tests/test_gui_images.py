"""The Images page under pytest-qt: generate, preview, cancel, crash, reuse, delete, validate.

The engine host is :class:`tests.fixtures.fake_image_host.FakeImageHost`
(real PNGs with real metadata, no torch), except for one slow test that
runs the real engine host on the tiny random-weight pipeline.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from engines.diffusion.png_meta import encode_png, read_png_parameters
from engines.diffusion.types import ImageRequest
from engines.library.installed import InstalledModel
from engines.engine_plugin import Availability
from engines.workspace import open_workspace
from tests.fixtures.fake_image_host import FakeImageHost, small_png
from tests.fixtures.images_page import engine_ready, fill, make_page, page, run, workspace  # noqa: F401  (fixtures)
from tests.fixtures.images_page import write_light_model_folder
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture, built only by the slow test)

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[1]


def test_generate_saves_to_the_gallery_and_shows_the_image(qtbot, page):
    saved_on_disk = []
    page.worker.saved.connect(lambda e: saved_on_disk.append(Path(e.path).exists()))
    fill(page, negative="blurry", seed=1234)
    run(qtbot, page)
    entries = page.gallery.list()
    assert len(entries) == 1 and saved_on_disk == [True]
    entry = entries[0]
    assert Path(entry.path).exists() and entry.seed == 1234 and entry.prompt == "a lighthouse at dawn"
    assert entry.request["model_id"] == "import/dream-a" and entry.request["img2img"] is False
    assert page.gallery_view.ids() == [entry.id] and page.gallery_view.current_id() == entry.id
    assert page.view.kind == "image" and page.view.source().width() == 64
    assert "Seed 1234" in page.seed_line.text() and "s/step" in page.seed_line.text()
    assert page.seed_line.textInteractionFlags() & Qt.TextSelectableByMouse
    assert page.status_line.text().startswith("Made 1 image")
    assert not page.banner.isVisible() and not page.progress.isVisible()
    meta = read_png_parameters(entry.path)
    assert meta["seed"] == 1234 and meta["negative_prompt"] == "blurry"
    request = page.host.requests[0]
    assert (request.width, request.height, request.steps, request.seed) == (64, 64, 3, 1234)
    assert page.host.loads[0].model_path == page.workspace.models.get("import/dream-a").path


def test_previews_and_steps_arrive_while_running(qtbot, page):
    page.host.delay = 0.03
    previews, steps, statuses = [], [], []
    page.worker.preview.connect(previews.append)
    page.worker.step.connect(steps.append)
    fill(page, steps=12, batch=2)
    qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.view.kind == "preview", timeout=5000)
    qtbot.waitUntil(lambda: "image 2/2" in page.status_line.text() or not page.running, timeout=5000)
    statuses.append(page.status_line.text())
    assert page.progress.isVisible() or not page.running
    qtbot.waitUntil(lambda: not page.running, timeout=10000)
    assert previews and all(p.startswith(b"\x89PNG") for p in previews)
    assert len(steps) == 24 and steps[-1].image_index == 1
    assert any("Step" in s for s in statuses)
    assert len(page.gallery.list()) == 2
    assert page.view.kind == "image"


def test_previews_are_throttled_to_about_ten_a_second(qtbot, workspace):
    from desktop.workers.image_worker import ImageWorker

    host = FakeImageHost(delay=0.001)
    worker = ImageWorker(workspace, host=host)  # driven directly: signals are delivered at once
    previews, finished = [], []
    worker.preview.connect(previews.append)
    worker.finished.connect(finished.append)
    spec_path = workspace.models.get("import/dream-a").path
    from engines.diffusion.types import ImageLoadSpec

    worker.run(spec_path, ImageLoadSpec(spec_path), ImageRequest("x", width=64, height=64, steps=150, seed=1))
    worker.shutdown()
    assert finished and host.previews_sent == 150
    seconds = finished[0].seconds
    assert 1 <= len(previews) <= seconds / 0.1 + 2


def test_cancel_keeps_the_images_finished_before_it(qtbot, page):
    page.host.delay = 0.02
    fill(page, steps=40, batch=3, seed=70)
    qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
    with qtbot.waitSignal(page.worker.saved, timeout=10000) as first:  # the first image is on disk
        pass
    assert page.controls.cancel_button.isEnabled()
    qtbot.mouseClick(page.controls.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not page.running, timeout=10000)
    entries = page.gallery.list()
    assert [e.seed for e in entries] == [70] and entries[0].id == first.args[0].id and Path(entries[0].path).exists()
    assert page.gallery_view.ids() == [entries[0].id]
    assert page.status_line.text() == "Cancelled · the image finished before it is kept in the gallery"
    assert page.view.kind == "image" and page._shown_id == entries[0].id  # the kept image, not a preview
    assert not page.banner.isVisible() and page.controls.generate_button.isEnabled()


def test_cancel_before_any_image_finished_saves_nothing(qtbot, page):
    page.host.delay = 0.02
    fill(page, steps=150)
    qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.status_line.text().startswith("Step 3"), timeout=5000)
    qtbot.keyClick(page.controls.prompt, Qt.Key_Escape)  # Esc cancels, wherever the focus is on the page
    qtbot.waitUntil(lambda: not page.running, timeout=5000)
    assert page.status_line.text() == "Cancelled"
    assert page.gallery.list() == [] and page.gallery_view.count() == 0
    images = page.workspace.paths.data / "images"
    assert not images.exists() or not any(images.rglob("*.png"))
    assert page.view.kind != "preview" and not page.banner.isVisible()


def test_cancel_while_loading_stops_before_generating(qtbot, workspace):
    from desktop.workers.image_worker import ImageWorker
    from engines.diffusion.types import ImageLoadSpec

    host = FakeImageHost()
    worker = ImageWorker(workspace, host=host)
    failures = []
    worker.failed.connect(lambda kind, message: failures.append((kind, message)))
    original = host.load

    def slow_load(*args, **kwargs):
        worker.cancel()  # the user presses Cancel while the model loads
        return original(*args, **kwargs)

    host.load = slow_load
    path = workspace.models.get("import/dream-a").path
    worker.run(path, ImageLoadSpec(path), ImageRequest("x", width=64, height=64, steps=3))
    worker.shutdown()
    assert failures == [("cancelled", "Cancelled")] and host.requests == []


def test_crash_shows_a_banner_and_the_next_run_works(qtbot, page):
    fill(page, seed=5)
    run(qtbot, page)
    page.host.crash_at_step = 2
    fill(page, seed=6)
    run(qtbot, page)
    assert page.banner.isVisible()
    text = page.banner.text()
    assert text.startswith("The image engine stopped unexpectedly: it was killed") and "Your images so far are saved" in text
    assert "Traceback" not in text and page.isVisible()
    assert [e.seed for e in page.gallery.list()] == [5]
    assert page.view.kind == "image"  # back to the last real image, not the crashed run's preview
    fill(page, seed=7)
    run(qtbot, page)
    assert not page.banner.isVisible()
    assert [e.seed for e in page.gallery.list()] == [7, 5]


def test_engine_errors_are_shown_inline(qtbot, page):
    from engines.errors import EngineError, ErrorKind

    page.host.fail_with = EngineError(ErrorKind.MEMORY, "The image did not fit in memory. Try a smaller size.")
    fill(page)
    run(qtbot, page)
    assert page.banner.isVisible() and page.banner.text() == "The image did not fit in memory. Try a smaller size."
    assert page.gallery.list() == []


def test_use_these_settings_again_restores_every_field(qtbot, page):
    c = page.controls
    c.select_model("import/dream-b")
    fill(page, "a red fox in snow", width=128, height=64, steps=5, seed=None, negative="text, watermark",
         guidance=3.5, sampler="DDIM", backend="onnx")
    run(qtbot, page)
    entry = page.gallery.list()[0]
    random_seed = entry.seed
    # change everything
    c.select_model("import/dream-a")
    fill(page, "something else", width=512, height=512, steps=20, seed=None, negative="", guidance=7.0,
         sampler="Euler a", backend="auto", batch=3)
    page.gallery_view.select(entry.id)
    qtbot.mouseClick(page.gallery_view.reuse_button, Qt.LeftButton)
    assert c.prompt.toPlainText() == "a red fox in snow"
    assert c.negative.toPlainText() == "text, watermark"
    assert (c.width_spin.value(), c.height_spin.value()) == (128, 64)
    assert c.preset_combo.currentText() == "Custom"
    assert c.steps_spin.value() == 5 and c.guidance_spin.value() == 3.5
    assert c.sampler_combo.currentText() == "DDIM"
    assert not c.random_seed.isChecked() and c.seed() == random_seed
    assert c.backend_combo.currentData() == "onnx"
    assert c.current_model_id() == "import/dream-b"
    assert c.batch_spin.value() == 1
    assert not page.banner.isVisible()
    # the same settings make the same request again
    run(qtbot, page)
    first, second = page.host.requests
    assert first.seed is None and second == dataclasses.replace(first, seed=random_seed)


def test_reuse_falls_back_to_the_png_parameters(qtbot, page):
    request = ImageRequest("a castle", negative_prompt="fog", width=96, height=64, steps=7, guidance=5.0,
                           scheduler="Euler a", seed=99)
    png = encode_png(small_png(96, 64, 99), request, {"seed": 99, "model": "dream-b"})
    entry = page.gallery.save(png, {}, seed=99, width=96, height=64, model="dream-b", backend="torch")
    page.refresh_gallery()
    notes = page.reuse_settings(entry.id)
    c = page.controls
    assert notes == []
    assert c.prompt.toPlainText() == "a castle" and c.negative.toPlainText() == "fog"
    assert (c.width_spin.value(), c.height_spin.value(), c.steps_spin.value()) == (96, 64, 7)
    assert c.guidance_spin.value() == 5.0 and c.sampler_combo.currentText() == "Euler a" and c.seed() == 99
    assert c.current_model_id() == "import/dream-b" and c.backend_combo.currentData() == "torch"


def test_reuse_of_a_model_that_is_gone_keeps_the_current_one(qtbot, page):
    fill(page, seed=3)
    run(qtbot, page)
    entry = page.gallery.list()[0]
    page.workspace.models.remove("import/dream-a")
    page.refresh_models()
    notes = page.reuse_settings(entry.id)
    assert notes and "not installed" in notes[0] and page.banner.isVisible()
    assert page.controls.seed() == 3


def test_delete_asks_then_removes_file_and_row(qtbot, page, monkeypatch):
    fill(page, seed=11)
    run(qtbot, page)
    entry = page.gallery.list()[0]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    qtbot.mouseClick(page.gallery_view.delete_button, Qt.LeftButton)
    assert Path(entry.path).exists() and page.gallery.get(entry.id) is not None
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    qtbot.mouseClick(page.gallery_view.delete_button, Qt.LeftButton)
    assert not Path(entry.path).exists()
    assert page.gallery.get(entry.id) is None and page.gallery.list() == []
    assert page.gallery_view.count() == 0 and page.view.kind == "empty" and page.seed_line.text() == ""


def test_clicking_a_thumbnail_shows_that_image(qtbot, page):
    for seed in (1, 2):
        fill(page, seed=seed)
        run(qtbot, page)
    older = page.gallery.list()[1]
    assert older.seed == 1
    page.gallery_view.list.setCurrentRow(1)
    assert page._shown_id == older.id and page.seed_line.text().startswith("Seed 1 ")
    assert page.copy_image(older.id)
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().image().width() == 64


def test_validation_is_shown_inline_and_nothing_runs(qtbot, page):
    fill(page, width=500, height=512)
    assert page.controls.size_note.isVisible() and "multiple of 8" in page.controls.size_note.text()
    qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
    assert not page.running and page.host.requests == [] and page.host.loads == []
    assert page.controls.validation.isVisible()
    assert "width must be a multiple of 8 (got 500; try 496)" in page.controls.validation.text()
    page.controls.prompt.setPlainText("   ")
    page.controls.set_size(512, 512)
    assert not page.controls.size_note.isVisible()
    qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
    assert "the prompt is empty" in page.controls.validation.text() and page.host.requests == []
    fill(page)
    run(qtbot, page)
    assert not page.controls.validation.isVisible()


def test_size_far_from_the_native_size_is_hinted(qtbot, page):
    assert page.controls.preset_combo.currentText() == "512 × 512" and not page.controls.size_note.isVisible()
    page.controls.set_size(1536, 1536)
    assert page.controls.size_note.isVisible() and "trained at 512×512" in page.controls.size_note.text()
    page.controls.preset_combo.setCurrentText("512 × 768")
    assert (page.controls.width_spin.value(), page.controls.height_spin.value()) == (512, 768)
    assert not page.controls.size_note.isVisible()


def test_lcm_on_a_normal_model_is_refused_before_running(qtbot, page):
    fill(page, sampler="LCM")
    qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
    assert not page.running and "LCM sampler only works with LCM or Turbo" in page.controls.validation.text()


def choose_init_image(qtbot, page, path) -> list[str]:
    """Choose ``path`` as the init image, wait for its read (on a pool thread) to end; the problems it raised."""
    group = page.controls.init_group
    problems = []
    group.problem.connect(problems.append)
    group.set_image_file(str(path))
    assert group.loading  # nothing was read on the GUI thread
    qtbot.waitUntil(lambda: not group.loading, timeout=10000)
    group.problem.disconnect(problems.append)
    return problems


def test_img2img_sends_the_init_image_and_strength(qtbot, page, tmp_path):
    source = tmp_path / "start.png"
    small_png(80, 48, 3).save(source)
    assert choose_init_image(qtbot, page, source) == []
    assert page.controls.init_group.image_size == (80, 48)
    page.controls.init_group.set_strength(0.5)
    fill(page, steps=10)
    run(qtbot, page)
    request = page.host.requests[0]
    assert request.init_image == source.read_bytes() and request.strength == 0.5
    assert page.gallery.list()[0].request["img2img"] is True
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    problems = choose_init_image(qtbot, page, bad)
    assert len(problems) == 1 and problems[0].startswith(f"The init image {bad} could not be read (")
    assert page.banner.isVisible() and page.banner.text() == problems[0]
    assert page.controls.request().init_image == source.read_bytes()  # the image chosen before stays
    page.controls.init_group.clear()
    assert page.controls.request().init_image is None and not page.banner.isVisible()


def test_hostile_init_images_are_refused_off_the_gui_thread(qtbot, page, tmp_path):
    from tests.fixtures.bad_images import header_only_png

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(12000, 12000))
    expected = {
        fifo: f"The init image {fifo} is a FIFO (named pipe), not an image file.",
        Path("/dev/zero"): "The init image /dev/zero is a character device, not an image file.",
        empty: f"The init image {empty} is empty (0 bytes); choose an image file.",
        bomb: f"The init image {bomb} is 12000×12000 pixels (144 megapixels); Atelier takes at most 64 megapixels. "
              "Scale it down first.",
    }
    for path, message in expected.items():
        assert choose_init_image(qtbot, page, path) == [message]
        assert page.banner.text() == message and page.controls.init_group.image_bytes is None
        fill(page)
        assert page.controls.request().init_image is None  # and never b"": the run stays txt2img, knowingly
    good = tmp_path / "good.png"
    small_png(64, 64, 1).save(good)
    assert choose_init_image(qtbot, page, good) == []
    assert not page.banner.isVisible()  # the init image's problem went with it


def test_engine_unavailable_shows_the_panel(qtbot, workspace, monkeypatch):
    import desktop.pages.images_page as images_page

    reason = "the Python package 'torch' is not installed."
    monkeypatch.setattr(images_page, "image_engine_availability", lambda: Availability(False, reason))
    page = make_page(qtbot, workspace)
    try:
        assert page.engine_panel.isVisible() and not page.view.isVisible()
        assert page.engine_message.text() == f"The image engine is not installed: {reason}"
        assert not page.controls.generate_button.isEnabled()
        fill(page)
        assert not page.generate() and page.host.requests == []
        monkeypatch.setattr(images_page, "image_engine_availability", lambda: Availability(True))
        assert page.check_engine()
        assert page.view.isVisible() and page.controls.generate_button.isEnabled()
    finally:
        page.shutdown()


def test_no_models_says_where_to_get_one(qtbot, engine_ready, tmp_path):
    ws = open_workspace()
    page = make_page(qtbot, ws)
    try:
        assert "Download SD-Turbo from the Models page" in page.controls.model_note.text()
        assert page.controls.add_button.isVisible()
        fill(page)
        qtbot.mouseClick(page.controls.generate_button, Qt.LeftButton)
        assert not page.running and "choose an image model first" in page.controls.validation.text().lower()
        bad = tmp_path / "not-a-model"
        bad.mkdir()
        (bad / "readme.txt").write_text("hi")
        assert page.add_model_folder(str(bad)) is None
        assert page.banner.isVisible() and "model_index.json" in page.banner.text()
        good = write_light_model_folder(tmp_path / "sd-turbo")
        model = page.add_model_folder(str(good))
        assert model is not None and model.source == "import" and model.engine == "diffusers"
        assert page.controls.current_model_id() == model.id and ws.models.get(model.id) is not None
        assert not page.banner.isVisible()
        assert not page.controls.validation.isVisible()  # "choose an image model first" went once one was
        # a Turbo model: the settings it needs are one click away
        assert page.controls.recommend_button.isVisible() and page.controls.steps_spin.value() == 3
        qtbot.mouseClick(page.controls.recommend_button, Qt.LeftButton)
        assert page.controls.steps_spin.value() == 2 and page.controls.guidance_spin.value() == 0.0
        assert page.controls.sampler_combo.currentText() == "Euler a"
        assert page.add_model_folder(str(good)).id == model.id  # adding it twice reuses the entry
    finally:
        page.shutdown()


def test_page_opens_on_the_existing_gallery_newest_first(qtbot, workspace, engine_ready):
    from desktop.workers.image_worker import open_gallery

    gallery = open_gallery(workspace)
    request = ImageRequest("old", width=64, height=64, seed=1)
    older = gallery.save(encode_png(small_png(64, 64, 1), request, {"seed": 1}), {"prompt": "old"}, seed=1, width=64,
                         height=64, model="m", backend="torch")
    newer = gallery.save(encode_png(small_png(64, 64, 2), request, {"seed": 2}), {"prompt": "new"}, seed=2, width=64,
                         height=64, model="m", backend="torch")
    gallery.close()
    page = make_page(qtbot, workspace)
    try:
        assert page.gallery_view.ids() == [newer.id, older.id]
        assert page.gallery_view.count_label.text() == "2 images"
        qtbot.waitUntil(lambda: not page.gallery_view._pending, timeout=10_000)  # thumbnails filled in
    finally:
        page.shutdown()


def test_shutdown_closes_the_engine_host(qtbot, workspace, engine_ready):
    page = make_page(qtbot, workspace)
    fill(page)
    run(qtbot, page)
    page.shutdown()
    page.shutdown()
    assert page.host.closed >= 1


@pytest.mark.slow
def test_real_engine_makes_an_image_and_cancel_keeps_the_images_finished_before_it(qtbot, workspace, request):
    """The real worker, engine host and tiny pipeline: the first image of a batch is made and kept, Cancel ends the rest.

    (One test for both, so the suite starts the real image engine once here.)
    """
    from desktop.pages.images_page import ImagesPage, image_engine_availability

    state = image_engine_availability()
    assert state.available, state.reason
    tiny = request.getfixturevalue("tiny_sd")
    model = workspace.models.add(InstalledModel("import/tiny-sd", "tiny-sd", str(tiny), 0, "diffusers", "diffusers",
                                                "import"))
    page = ImagesPage(workspace)  # the real worker and engine host
    qtbot.addWidget(page)
    page.show()
    first = []

    def cancel_after_the_first_image(entry) -> None:  # on the worker thread, the moment image 1 is saved
        if not first:
            first.append(entry)
            page.worker.cancel()

    page.worker.saved.connect(cancel_after_the_first_image, Qt.DirectConnection)
    try:
        page.controls.select_model(model.id)
        fill(page, "a tiny test", width=64, height=64, steps=30, seed=11, batch=4)
        run(qtbot, page, timeout=240_000)
        entries = page.gallery.list()
        assert [e.seed for e in entries] == [11] and entries[0].id == first[0].id
        assert Path(entries[0].path).exists()
        meta = read_png_parameters(entries[0].path)
        assert meta["seed"] == 11 and meta["steps"] == 30 and meta["width"] == 64
        assert meta["atelier"]["request"]["prompt"] == "a tiny test"
        assert "Seed 11" in page.seed_line.text()
        assert page.status_line.text() == "Cancelled · the image finished before it is kept in the gallery"
        assert page.gallery_view.ids() == [entries[0].id] and page.view.kind == "image"
        assert not page.banner.isVisible(), page.banner.text()
    finally:
        page.shutdown()
