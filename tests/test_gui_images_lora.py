"""The Images page's LoRA picker and speed options, as a user drives them.

Fast tests run the page on the fake engine host (real PNGs, no torch) with
LoRA files that are headers only (tests/fixtures/stripped_models.py), so
their families are real: SD 1.x (768-wide) and SDXL (2048-wide) LoRAs
against an SD 1.x model folder. One slow test runs the real engine host on
the tiny pipeline with a LoRA made by peft and the tiny TAESD for previews:
picked → the request carries it → the image is made with it → "use these
settings again" restores it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engines.diffusion.png_meta import read_png_parameters
from engines.diffusion.types import LoraSpec
from engines.library.importer import import_model
from engines.library.installed import InstalledModel
from tests.fixtures.images_page import engine_ready, fill, make_page, run  # noqa: F401  (fixtures)
from tests.fixtures.images_page import workspace_with_loras, write_light_model_folder
from tests.fixtures.tiny_lora import write_peft_lora
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture, built only by the slow test)
from tests.fixtures.tiny_taesd import tiny_taesd  # noqa: F401  (session fixture, built only by the slow test)

pytestmark = pytest.mark.gui
XL_REFUSAL = ("kohya sdxl style.safetensors is a LoRA for SDXL, but sd-one is SD 1.x: a LoRA works only with the "
              "model family it was trained for.")


@pytest.fixture
def workspace(tmp_path):
    return workspace_with_loras(tmp_path)


@pytest.fixture
def page(qtbot, workspace, engine_ready):  # noqa: F811
    page = make_page(qtbot, workspace)
    yield page
    page.shutdown()


def combo_rows(combo):
    model = combo.model()
    return [(combo.itemText(i), model.item(i).isEnabled(), combo.itemData(i, Qt.ToolTipRole))
            for i in range(combo.count())]


def test_the_picker_lists_the_librarys_loras_with_their_family_and_greys_out_another_familys(qtbot, page, tmp_path):
    picker = page.controls.lora_picker
    rows = combo_rows(picker.add_combo)
    assert [(text, enabled) for text, enabled, _ in rows] == [("kohya sd1 style · SD 1.x", True),
                                                                ("kohya sdxl style · SDXL", False)]
    assert rows[1][2] == XL_REFUSAL  # the engine's own sentence, before anything runs
    assert picker.add_by_id(picker.choices()[1].id) is None  # a greyed-out one cannot be picked either
    assert picker.rows == [] and not picker.note.isVisible()


def test_a_picked_lora_and_its_weight_reach_the_request_and_come_back_with_the_settings(qtbot, page, tmp_path):
    picker = page.controls.lora_picker
    picker.add_combo.activated.emit(0)  # the user picks "kohya sd1 style · SD 1.x"
    [row] = picker.rows
    row.slider.setValue(-35)  # the slider and the spin box stay in step
    assert row.spin.value() == -0.35
    row.spin.setValue(0.6)
    assert row.slider.value() == 60
    assert not combo_rows(picker.add_combo)[0][1]  # picked once: greyed out in the list
    fill(page, "a castle", seed=5)
    run(qtbot, page)
    path = str(tmp_path / "loras" / "kohya sd1 style.safetensors")
    assert page.host.requests[0].loras == (LoraSpec(path, 0.6, "kohya sd1 style"),)
    entry = page.gallery.list()[0]
    assert entry.request["loras"] == [{"path": path, "weight": 0.6, "name": "kohya sd1 style"}]
    row.remove_button.click()
    assert picker.rows == [] and page.controls.request().loras == ()
    assert page.reuse_settings(entry.id) == []
    assert [r.spec() for r in picker.rows] == [LoraSpec(path, 0.6, "kohya sd1 style")]
    assert not page.banner.isVisible()
    page.workspace.models.remove(picker.choices()[0].id)  # the user removes it from the library
    page.refresh_models()
    assert picker.problems() == ["The LoRA kohya sd1 style is no longer in the library"]
    assert page.reuse_settings(entry.id) == ["the LoRA kohya sd1 style (weight 0.6) is not installed, so it was left out"]
    assert page.banner.text() == ("Settings restored, but the LoRA kohya sd1 style (weight 0.6) is not installed, "
                                  "so it was left out.")


def test_a_lora_that_no_longer_fits_the_model_blocks_generate_with_the_engines_sentence(qtbot, page, tmp_path):
    picker = page.controls.lora_picker
    picker.add_combo.activated.emit(0)
    two = write_light_model_folder(tmp_path / "sd-two")
    config = two / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "cross_attention_dim": 1024}))
    page.workspace.models.add(InstalledModel("import/sd-two", "sd-two", str(two), 1000, "diffusers", "diffusers",
                                             "import"))
    page.refresh_models("import/sd-two")
    assert page.controls.current_model_id() == "import/sd-two"
    fill(page, "a castle")
    assert page.generate() is False
    assert page.controls.validation.text() == (
        "Can’t generate yet: kohya sd1 style.safetensors is a LoRA for SD 1.x, but sd-two is SD 2.x: a LoRA works "
        "only with the model family it was trained for.")
    picker.rows[0].remove_button.click()
    assert not page.controls.validation.isVisible()  # fixed: the problem goes at once


def test_no_lora_installed_says_how_to_add_one(qtbot, engine_ready, tmp_path):  # noqa: F811
    from engines.workspace import open_workspace

    ws = open_workspace()
    folder = write_light_model_folder(tmp_path / "plain")
    ws.models.add(InstalledModel("import/plain", "plain", str(folder), 1000, "diffusers", "diffusers", "import"))
    page = make_page(qtbot, ws)
    try:
        picker = page.controls.lora_picker
        assert picker.add_combo.count() == 0 and not picker.add_combo.isEnabled()
        assert picker.note.text() == ("No LoRAs installed yet. Add a LoRA's .safetensors file on the Models page "
                                      "(Add file…) or put it in the models folder; it is listed here with the model "
                                      "family it was trained for.")
        speed = page.controls.speed_options
        assert speed.note.text() == ("Tiny-VAE previews and decoding need the tiny VAE for SD 1.x/2.x models: get "
                                     "TAESD on the Models page (atelier models pull taesd).")
        assert speed.request_fields() == {"vae": "full", "preview_vae": "", "deep_cache": 0}
        speed.cache_check.setChecked(True)
        speed.cache_spin.setValue(4)
        fill(page, "a castle")
        run(qtbot, page)
        assert page.host.requests[0].deep_cache == 4
    finally:
        page.shutdown()


@pytest.mark.slow
def test_real_engine_a_lora_and_tiny_vae_previews_from_the_page(qtbot, engine_ready, request, tmp_path):  # noqa: F811
    from desktop.pages.images_page import ImagesPage
    from engines.workspace import open_workspace

    tiny, taesd = request.getfixturevalue("tiny_sd"), request.getfixturevalue("tiny_taesd")
    ws = open_workspace()
    ws.models.add(InstalledModel("import/tiny-sd", "tiny-sd", str(tiny), 0, "diffusers", "diffusers", "import"))
    ws.models.add(InstalledModel("taesd", "TAESD", str(taesd), 0, "diffusers", "diffusers", "download", kind="vae"))
    ink = import_model(write_peft_lora(tiny, tmp_path / "ink.safetensors"), ws.models)
    page = ImagesPage(ws)  # the real worker and engine host
    qtbot.addWidget(page)
    page.show()
    previews = []
    page.controller.preview.connect(previews.append)
    try:
        page.controls.select_model("import/tiny-sd")
        speed = page.controls.speed_options
        assert speed.preview_combo.currentData() == "tiny"  # installed: the real-picture preview is the default
        speed.decode_combo.setCurrentIndex(speed.decode_combo.findData("tiny"))
        assert page.controls.lora_picker.add_by_id(ink.id, 0.8) is not None
        fill(page, "a tiny test", width=64, height=64, steps=2, seed=7)
        run(qtbot, page, timeout=240_000)
        assert not page.banner.isVisible(), page.banner.text()
        [entry] = page.gallery.list()
        meta = read_png_parameters(entry.path)
        assert meta["parameters"].splitlines()[0] == "a tiny test <lora:ink:0.8>"
        stored = meta["atelier"]["request"]
        assert stored["preview_vae"] == str(taesd) and stored["vae"] == str(taesd)
        assert previews and all(p.startswith(b"\x89PNG") for p in previews)
        page.controls.lora_picker.clear()
        speed.decode_combo.setCurrentIndex(speed.decode_combo.findData("full"))
        assert page.reuse_settings(entry.id) == []
        assert page.controls.request().loras == (LoraSpec(str(Path(ink.path)), 0.8, "ink"),)
        assert page.controls.request().vae == str(taesd)
    finally:
        page.shutdown()


def test_the_models_page_lists_each_lora_with_the_family_it_was_trained_for(qtbot, workspace):
    from desktop.pages.models.table_models import InstalledTableModel

    table = InstalledTableModel()
    table.set_rows(workspace.models.all(), [])
    rows = [(table.index(r, table.NAME).data(), table.index(r, table.FORMAT).data()) for r in range(table.rowCount())]
    assert rows == [("Gemma 3 270M (demo)", "GGUF"), ("kohya sd1 style", "LoRA for SD 1.x"),
                    ("kohya sdxl style", "LoRA for SDXL"), ("sd-one", "Diffusers")]
