"""Choosing among several installed upscalers on the Images page ("Upscale with"), as a user does it.

The fast tests use header-only ESRGAN files (tests/fixtures/stripped_models.py:
the probe reads tensor names, not weights) and a scripted engine host that
records which file it was asked to load; the slow test runs the real
``esrgan`` engine on two random-weight RRDBNets of different scales in
Real-ESRGAN's key layout (tests/fixtures/esrgan.py) and reads the result's
gallery record and PNG parameters.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from engines.settings import read_settings
from tests.fixtures.images_page import engine_ready, make_page, page, workspace  # noqa: F401  (fixtures)
from tests.test_gui_images_upscale import StuckUpscaler, add_image

pytestmark = pytest.mark.gui


def install(workspace, folder, *names_and_scales, real=False):
    """Import upscaler files as a user does (Models ▸ Add file…); returns their library records."""
    from engines.library.importer import import_model

    if real:
        from tests.fixtures.esrgan import write_upscaler as write
    else:
        from tests.fixtures.stripped_models import write_esrgan as write
    return [import_model(write(folder / f"{name}.safetensors", scale=scale), workspace.models)
            for name, scale in names_and_scales]


def menu_texts(page) -> tuple[list[str], list[tuple[str, bool]]]:
    """The Upscale button's menu as the user sees it on opening it: its entries, and "Upscale with"'s (checked?)."""
    menu = page.gallery_view.upscale_button.menu()
    menu.aboutToShow.emit()
    entries = [action.text() for action in menu.actions()]
    submenu = next((a.menu() for a in menu.actions() if a.menu() is not None), None)
    picks = [(a.text(), a.isChecked()) for a in submenu.actions() if not a.isSeparator()] if submenu else []
    return entries, picks


def trigger(page, text: str) -> None:
    """Click the entry ``text`` of the Upscale menu or of its "Upscale with" submenu."""
    menu = page.gallery_view.upscale_button.menu()
    menu.aboutToShow.emit()
    actions = list(menu.actions())
    for action in menu.actions():
        if action.menu() is not None:
            actions += action.menu().actions()
    next(a for a in actions if a.text() == text).trigger()


def test_one_upscaler_keeps_the_plain_menu(qtbot, page, tmp_path):
    install(page.workspace, tmp_path, ("RealESRGAN_x4plus", 4))
    assert menu_texts(page) == (["Upscale ×2", "Upscale ×4"], [])


def test_the_menu_lists_each_upscaler_and_the_pick_is_used_remembered_and_survives_its_removal(qtbot, page, tmp_path):
    x2, x4 = install(page.workspace, tmp_path, ("RealESRGAN_x2plus", 2), ("AnimeSharp_x4", 4))
    entry = add_image(page, 5)
    page.gallery_view.select(entry.id)
    assert menu_texts(page) == (
        ["Upscale ×2 with RealESRGAN_x2plus", "Upscale ×4 with AnimeSharp_x4", "Upscale with"],
        [("Default for each scale", True), ("RealESRGAN_x2plus (×2) — default for ×2", False),
         ("AnimeSharp_x4 (×4) — default for ×4", False)])

    trigger(page, "AnimeSharp_x4 (×4) — default for ×4")  # the anime model for every scale, ×2 included
    assert menu_texts(page) == (
        ["Upscale ×2 with AnimeSharp_x4", "Upscale ×4 with AnimeSharp_x4", "Upscale with"],
        [("Default for each scale", False), ("RealESRGAN_x2plus (×2) — default for ×2", False),
         ("AnimeSharp_x4 (×4) — default for ×4", True)])
    settings, problem = read_settings(page.workspace.paths.settings_file)  # saved at once, not at quit
    assert problem is None and settings.images.upscaler_id == x4.id

    host = page.upscale.action._host = StuckUpscaler(tiles=4)
    trigger(page, "Upscale ×2 with AnimeSharp_x4")
    assert page.upscale.running
    qtbot.waitUntil(lambda: "tile 1 of 4" in page.upscale_bar.label.text())  # loaded on the pool thread first
    assert [spec.model_path for _engine, spec in host.loads] == [x4.path]
    assert page.upscale_bar.label.text() == ("Upscaling the image with seed 5 ×2 (AnimeSharp_x4) · Upscaling: tile 1 "
                                             "of 4")
    page.upscale_bar.cancel_button.click()
    qtbot.waitUntil(lambda: not page.upscale.running)

    # a new page on the same settings file (as at the next start) shows the pick
    from engines.workspace import open_workspace

    again = make_page(qtbot, open_workspace())
    try:
        assert again.controls.upscaler_id == x4.id
        assert menu_texts(again)[1][2] == ("AnimeSharp_x4 (×4) — default for ×4", True)
    finally:
        again.shutdown()

    # the picked upscaler is removed: the default for the scale takes over, without a word of error
    page.workspace.models.remove(x4.id)
    page.workspace.models.add(replace(x4, id="import/other-x4", name="Other_x4"))
    assert menu_texts(page) == (
        ["Upscale ×2 with RealESRGAN_x2plus", "Upscale ×4 with Other_x4", "Upscale with"],
        [("Default for each scale", True), ("RealESRGAN_x2plus (×2) — default for ×2", False),
         ("Other_x4 (×4) — default for ×4", False)])
    host = page.upscale.action._host = StuckUpscaler(tiles=4)
    trigger(page, "Upscale ×2 with RealESRGAN_x2plus")
    assert page.upscale.running and not page.banner.isVisible()
    qtbot.waitUntil(lambda: "tile 1 of 4" in page.upscale_bar.label.text())
    assert [spec.model_path for _engine, spec in host.loads] == [x2.path]
    page.upscale_bar.cancel_button.click()
    qtbot.waitUntil(lambda: not page.upscale.running)
    assert page.workspace.settings.images.upscaler_id == x4.id  # kept: it is used again if it comes back

    trigger(page, "Default for each scale")
    assert page.workspace.settings.images.upscaler_id is None


@pytest.mark.slow
def test_real_upscale_with_the_picked_upscaler_names_it_in_the_record_and_the_png(qtbot, page, tmp_path):
    from PIL import Image

    _x2, x4 = install(page.workspace, tmp_path / "models", ("RealESRGAN_x2plus", 2), ("AnimeSharp_x4", 4),
                      real=True)
    source = add_image(page, 11)
    page.gallery_view.select(source.id)
    trigger(page, "AnimeSharp_x4 (×4) — default for ×4")
    trigger(page, "Upscale ×2 with AnimeSharp_x4")  # not the ×2 model the default would take
    assert page.upscale.running
    qtbot.waitUntil(lambda: not page.upscale.running, timeout=240_000)
    assert not page.banner.isVisible(), page.banner.text()
    made = next(e for e in page.gallery.list() if e.id != source.id)
    assert (made.width, made.height) == (192, 128)
    [step] = made.request["upscales"]
    assert (step["scale"], step["upscaler"], step["upscaler_id"]) == (2, "AnimeSharp_x4", x4.id)
    assert Image.open(made.path).text["postprocessing"] == ("Postprocess upscale by: 2, Postprocess upscaler: "
                                                            "AnimeSharp_x4")
    assert page.status_line.text() == ("Upscaled ×2 with AnimeSharp_x4 to 192×128; the result is next to the "
                                       "original in the gallery.")
