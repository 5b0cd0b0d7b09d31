""""Upscale ×2 / ×4" on a gallery image, as a user does it on the Images page.

The slow test runs the real ``esrgan`` engine in an engine host through a
scheduler, on a random-weight RRDBNet in Real-ESRGAN's key layout
(tests/fixtures/esrgan.py), installed in the library as a user installs
one. The fast tests cover what needs no engine: no upscaler installed, and
progress and Cancel against a scripted host.
"""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from engines.api import ProgressEvent
from engines.diffusion.png_meta import encode_png
from engines.diffusion.types import ImageRequest
from engines.errors import EngineError, ErrorKind
from engines.images.gallery import request_record
from tests.fixtures.fake_image_host import small_png
from tests.fixtures.images_page import engine_ready, make_page, page, workspace  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


def add_image(page, seed: int, prompt: str = "a lighthouse at dusk"):
    request = ImageRequest(prompt, width=96, height=64, steps=4, seed=seed)
    png = encode_png(small_png(96, 64, seed), request, {"seed": seed, "model": "dream-a"})
    entry = page.gallery.save(png, request_record(request, model_id="import/dream-a"), seed=seed, width=96,
                              height=64, model="dream-a", backend="torch")
    page.refresh_gallery()
    return entry


def choose_upscale(page, image_id: str, scale: int) -> None:
    """Select the thumbnail, then Upscale ▸ Upscale ×N (the button's menu)."""
    page.gallery_view.select(image_id)
    action = next(a for a in page.gallery_view.upscale_button.menu().actions() if a.text() == f"Upscale ×{scale}")
    action.trigger()


def test_without_an_installed_upscaler_the_page_says_where_to_get_one(qtbot, page):
    entry = add_image(page, 3)
    choose_upscale(page, entry.id, 4)
    assert page.banner.text() == (
        "No upscaler is installed. Get Real-ESRGAN ×4 on the Models page (Catalog tab, kind Upscaler), or add an "
        "ESRGAN-family .safetensors file there with Add file…; then choose Upscale again.")
    assert not page.upscale.running and not page.upscale_bar.isVisible()
    assert page.gallery_view.ids() == [entry.id]


class StuckUpscaler:
    """A scripted engine host: one tile of progress, then it waits for Cancel as a long upscale would."""

    def __init__(self, tiles: int = 9) -> None:
        self.cancelled = threading.Event()
        self.loads = []  # (engine, spec) of each load, in order
        self.tiles = tiles

    def load(self, engine, spec, on_event=None):
        self.loads.append((engine, spec))

    def generate(self, request):
        yield ProgressEvent("upscale", f"Upscaling: tile 1 of {self.tiles}")
        self.cancelled.wait(30)
        raise EngineError(ErrorKind.CANCELLED, "Upscaling was stopped.")

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        pass


def test_progress_and_cancel_leave_the_gallery_as_it_was(qtbot, page, tmp_path):
    from engines.library.importer import import_model
    from tests.fixtures.stripped_models import write_esrgan

    upscaler = import_model(write_esrgan(tmp_path / "RealESRGAN_x2plus.safetensors", scale=2), page.workspace.models)
    entry = add_image(page, 5)
    host = page.upscale.action._host = StuckUpscaler()
    choose_upscale(page, entry.id, 2)
    assert page.upscale.running and page.upscale_bar.isVisible()
    qtbot.waitUntil(lambda: "tile 1 of 9" in page.upscale_bar.label.text())
    assert page.upscale_bar.label.text() == ("Upscaling the image with seed 5 ×2 (RealESRGAN_x2plus) · Upscaling: "
                                             "tile 1 of 9")
    assert host.loads[0][0] == "esrgan" and host.loads[0][1].model_path == upscaler.path
    page.upscale_bar.cancel_button.click()
    qtbot.waitUntil(lambda: not page.upscale.running)
    assert page.status_line.text() == "Upscale cancelled; the original is untouched."
    assert not page.upscale_bar.isVisible() and not page.banner.isVisible()
    assert [e.id for e in page.gallery.list()] == [entry.id]


@pytest.mark.slow
def test_real_upscaler_a_gallery_image_x4_lands_next_to_it_with_its_parameters_and_credentials(qtbot, page, tmp_path):
    from engines.diffusion.png_meta import read_png_parameters
    from engines.images.credentials_read import read_credentials  # c2pa-python's own Reader
    from engines.library.importer import import_model
    from tests.fixtures.esrgan import write_upscaler

    import_model(write_upscaler(tmp_path / "models" / "RealESRGAN_x4plus.safetensors"), page.workspace.models)
    source, newer = add_image(page, 11), add_image(page, 12, "a boat")
    assert page.gallery_view.ids() == [newer.id, source.id]
    tiles = []
    page.upscale.action.progress.connect(tiles.append)
    choose_upscale(page, source.id, 4)
    assert page.upscale.running
    qtbot.waitUntil(lambda: not page.upscale.running, timeout=240_000)
    assert not page.banner.isVisible(), page.banner.text()
    made = next(e for e in page.gallery.list() if e.id not in (source.id, newer.id))
    assert page.gallery_view.ids() == [newer.id, made.id, source.id]  # next to the original
    assert page.gallery_view.current_id() == made.id and page.view.kind == "image"
    assert tiles and tiles[-1].startswith("Upscaling: tile ")
    assert (made.width, made.height, made.seed, made.prompt) == (384, 256, 11, "a lighthouse at dusk")
    assert page.status_line.text() == ("Upscaled ×4 with RealESRGAN_x4plus to 384×256; the result is next to the "
                                       "original in the gallery.")
    image = Image.open(made.path)
    assert image.size == (384, 256)
    assert image.text["parameters"] == Image.open(source.path).text["parameters"]  # the source's, unchanged
    assert image.text["postprocessing"] == "Postprocess upscale by: 4, Postprocess upscaler: RealESRGAN_x4plus"
    assert read_png_parameters(made.path)["seed"] == 11
    [step] = made.request["upscales"]
    assert (step["scale"], step["upscaler"], step["source_id"]) == (4, "RealESRGAN_x4plus", source.id)
    claims = read_credentials(made.path).claims
    assert "Edited with a generative AI model (RealESRGAN_x4plus): Upscaled 4× with RealESRGAN_x4plus" in claims
    import hashlib

    digest = hashlib.sha256(open(source.path, "rb").read()).hexdigest()
    assert f"Edited from the original image (sha256 {digest[:12]}…)" in claims
    assert page.reuse_settings(made.id) == []  # the generation's settings, at the size it was made
    assert (page.controls.width_spin.value(), page.controls.height_spin.value()) == (96, 64)
    assert page.controls.prompt.toPlainText() == "a lighthouse at dusk"
