"""The Images page's Experiment section (X/Y plot) under pytest-qt, on the scripted engine host.

The host (:class:`tests.fixtures.fake_image_host.FakeImageHost`) makes real
PNGs with real metadata without torch; the grid is drawn, signed and kept
by the real job service. The same grid on the real tiny pipeline is
test_image_grid_cli.py's.
"""

from __future__ import annotations

from PIL import Image
import pytest
from PySide6.QtCore import Qt

from engines.diffusion.png_meta import read_png_parameters
from tests.fixtures.images_page import engine_ready, fill, page, workspace  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


def make_grid(qtbot, page, x, y=None):
    panel = page.grid_panel
    qtbot.mouseClick(panel.toggle, Qt.LeftButton)
    assert panel.body.isVisible()
    panel.set_axis(0, *x)
    panel.set_axis(1, *(y or ("", "")))
    qtbot.mouseClick(panel.make_button, Qt.LeftButton)


def assert_cells_are_the_grids_ingredients(grid_path, cell_paths):
    """The grid's Content Credentials, read by c2pa-python's Reader: made by the model, each cell a component."""
    import hashlib
    import io
    import json

    c2pa = pytest.importorskip("c2pa")
    from engines.images.credentials import GENERATED, c2pa_context

    with c2pa.Reader("image/png", io.BytesIO(open(grid_path, "rb").read()), context=c2pa_context()) as reader:
        report = json.loads(reader.json())
    manifest = report["manifests"][report["active_manifest"]]
    [created] = [action for assertion in manifest["assertions"] if assertion["label"].startswith("c2pa.actions")
                 for action in assertion["data"]["actions"]]
    assert (created["action"], created["digitalSourceType"]) == ("c2pa.created", GENERATED)
    assert created["description"] == ("Experiment grid (X/Y plot) of 4 generated images: 2×2 grid: Steps 1, 2 × "
                                      "Seed 5, 6")
    ingredients = manifest["ingredients"]
    assert [(i["title"], i["relationship"]) for i in ingredients] == [(f"cell {n}", "componentOf")
                                                                      for n in range(1, 5)]
    assert [i["description"] for i in ingredients] == [
        f"sha256 {hashlib.sha256(open(path, 'rb').read()).hexdigest()}" for path in cell_paths]
    links = created["parameters"]["ingredients"]  # the created action points at every cell
    assert len(links) == 4 and all("c2pa.ingredient" in link["url"] for link in links)


def test_make_grid_keeps_every_cell_and_shows_the_labelled_grid(qtbot, page):
    from engines.images.grid_draw import layout

    fill(page, steps=3, seed=42)
    make_grid(qtbot, page, ("steps", "1, 2"), ("seed", "5,6"))
    assert page.running and not page.grid_panel.make_button.isEnabled()  # it follows Generate
    qtbot.waitUntil(lambda: not page.running, timeout=60000)

    assert [(r.steps, r.seed, r.batch_count) for r in page.host.requests] == [(1, 5, 1), (2, 5, 1), (1, 6, 1),
                                                                              (2, 6, 1)]
    grid = page.controller.grid_entry
    cells = page.controller.run_saved
    assert [(c.steps, c.seed) for c in cells] == [(1, 5), (2, 5), (1, 6), (2, 6)]
    assert sorted(page.gallery_view.ids()) == sorted([c.id for c in cells] + [grid.id])
    assert page.gallery_view.current_id() == grid.id and page._shown_id == grid.id
    assert page.view.kind == "image"
    assert Image.open(grid.path).size == layout(page.controller.grid_plan).size == (grid.width, grid.height)
    meta = read_png_parameters(grid.path)
    assert meta["parameters"].endswith('Script: X/Y plot, X Type: Steps, X Values: "1,2", Y Type: Seed, '
                                       'Y Values: "5,6"')
    assert_cells_are_the_grids_ingredients(grid.path, [c.path for c in cells])
    assert page.seed_line.text() == f"Grid 2×2 · Steps 1, 2 × Seed 5, 6 · seed 5 · {grid.width}×{grid.height}"
    assert page.status_line.text().startswith("Made a 2×2 grid of 4 images in ")
    assert page.status_line.text().endswith(" s; each cell is in the gallery too.")
    page.gallery_view.select(cells[1].id)  # a cell shows its own settings, the grid again what it varies
    assert page.seed_line.text().startswith("Seed 5  ·  64×64 · 2 steps")
    page.gallery_view.select(grid.id)
    qtbot.waitUntil(lambda: page.seed_line.text().startswith("Grid 2×2 · Steps 1, 2 × Seed 5, 6"), timeout=60000)
    assert not page.banner.isVisible() and page.grid_panel.make_button.isEnabled()

    # "Use these settings again" on the grid: its first cell's settings, and its axes back in the panel
    page.grid_panel.set_axis(0, "guidance", "1")
    page.grid_panel.set_axis(1, "", "")
    page.controls.steps_spin.setValue(9)
    page.gallery_view.reuse_requested.emit(grid.id)
    qtbot.waitUntil(lambda: page.grid_panel.axis_texts() == ["steps=1, 2", "seed=5, 6"], timeout=60000)
    assert page.controls.steps_spin.value() == 1 and page.controls.seed() == 5


def test_bad_values_are_refused_in_the_banner_and_nothing_runs(qtbot, page):
    fill(page)
    make_grid(qtbot, page, ("guidance", "3, abc"))
    assert not page.running and page.host.requests == []
    assert page.banner.isVisible()
    assert page.banner.text() == "Can’t make the grid: guidance=abc: 'abc' is not a number."
    page.grid_panel.set_axis(0, "prompt", "cat, dog")
    qtbot.mouseClick(page.grid_panel.make_button, Qt.LeftButton)
    assert page.banner.text() == (
        "Can’t make the grid: prompt=: the first value, 'cat', is not in the prompt; Prompt S/R replaces the first "
        "value's text in the prompt by each value, so it must be a word or phrase of it.")
    assert not page.running and page.host.requests == []


def test_cancel_keeps_the_cells_made_and_draws_the_partial_grid(qtbot, page):
    page.host.delay = 0.05
    fill(page, steps=6, seed=1)
    make_grid(qtbot, page, ("seed", "1-4"))
    qtbot.waitUntil(lambda: len(page.controller.run_saved) >= 1, timeout=60000)
    page.cancel()
    qtbot.waitUntil(lambda: not page.running, timeout=60000)
    made = len(page.controller.run_saved)
    assert 1 <= made < 4
    grid = page.controller.grid_entry
    assert grid is not None and grid.request["grid"]["made"] == list(range(made))
    assert read_png_parameters(grid.path)["parameters"].endswith(f"Grid cells made: {made} of 4")
    kept, them = ("it is", "it") if made == 1 else ("they are", "them")
    assert page.status_line.text() == (f"Cancelled after {made} of 4 cells: {kept} kept in the gallery; the "
                                       f"partial grid shows {them}, the rest marked “not made”")
    assert page._shown_id == grid.id
