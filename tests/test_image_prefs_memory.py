"""The Images page remembers its LoRAs, Speed section and Experiment axes across restarts.

Through the real settings file of the test's ATELIER_HOME and a new page
(the fake engine host: nothing runs), with LoRA files that are headers only
(tests/fixtures/stripped_models.py, so their families are real) and a tiny
VAE folder that passes the cheap check (config + weights file, no torch).
What cannot come back (a LoRA no longer installed, one for another family, a
tiny decode without a tiny VAE) is said in one line; a bad value in a
hand-edited or newer file falls back to its default alone.
"""

from __future__ import annotations

import json
import logging

import pytest

from engines.library.installed import InstalledModel
from engines.settings import ImagePrefs, load_settings, read_settings
from engines.workspace import open_workspace
from tests.fixtures.images_page import engine_ready, make_page  # noqa: F401  (fixtures)
from tests.fixtures.images_page import workspace_with_loras

pytestmark = pytest.mark.gui
SD1_ID = "local/kohya-sd1-style.safetensors"
SDXL_ID = "local/kohya-sdxl-style.safetensors"


def write_light_tiny_vae(folder):
    """What the Speed section checks before offering the tiny choices (engines.diffusion.taesd.tiny_vae_problem)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def workspace(tmp_path):
    ws = workspace_with_loras(tmp_path)
    assert {SD1_ID, SDXL_ID} <= {m.id for m in ws.models.all()}
    return ws


def write_settings_file(images: dict) -> None:
    ws = open_workspace()
    ws.paths.settings_file.write_text(json.dumps({"schema_version": 1, "images": images}), encoding="utf-8")


def test_loras_speed_and_experiment_axes_come_back_after_a_restart(qtbot, workspace, engine_ready, tmp_path):
    workspace.models.add(InstalledModel("taesd", "TAESD", str(write_light_tiny_vae(tmp_path / "taesd")), 0,
                                        "diffusers", "diffusers", "download", kind="vae"))
    first = make_page(qtbot, workspace)
    c, grid = first.controls, first.grid_panel
    assert c.lora_picker.add_by_id(SD1_ID, 0.6) is not None
    speed = c.speed_options
    assert speed.preview_combo.currentData() == "tiny"  # the section's own default once a tiny VAE is there
    speed.preview_combo.setCurrentIndex(speed.preview_combo.findData("latent"))
    speed.decode_combo.setCurrentIndex(speed.decode_combo.findData("tiny"))
    speed.cache_check.setChecked(True)
    speed.cache_spin.setValue(4)
    first.save_prefs()
    grid.set_open(True)
    assert first._prefs_timer.isActive()  # the Experiment section's edits are saved a moment later, as the controls'
    grid.set_axis(0, "seed", "1-4")
    grid.set_axis(1, "sampler", "Euler, DDIM, LCM")
    settings_file = workspace.paths.settings_file
    first.shutdown()  # a close saves what the timer had not yet
    saved = json.loads(settings_file.read_text(encoding="utf-8"))["images"]
    assert {key: saved[key] for key in ("loras", "previews", "final_decode", "step_cache", "step_cache_interval",
                                        "grid_axes", "experiment_open")} == {
        "loras": [{"id": SD1_ID, "weight": 0.6}], "previews": "latent", "final_decode": "tiny", "step_cache": True,
        "step_cache_interval": 4, "grid_axes": ["seed=1-4", "sampler=Euler, DDIM, LCM"], "experiment_open": True}

    again = make_page(qtbot, open_workspace())  # a fresh start reads settings.json
    try:
        c, grid, speed = again.controls, again.grid_panel, again.controls.speed_options
        assert [(row.choice.id, row.weight()) for row in c.lora_picker.rows] == [(SD1_ID, 0.6)]
        assert c.request().loras[0].weight == 0.6 and c.lora_picker.problems() == []
        assert (speed.preview_combo.currentData(), speed.decode_combo.currentData()) == ("latent", "tiny")
        assert speed.request_fields() == {"vae": str(tmp_path / "taesd"), "preview_vae": "", "deep_cache": 4}
        assert grid.toggle.isChecked() and grid.body.isVisibleTo(again)
        assert (grid.x_combo.currentData(), grid.x_values.text()) == ("seed", "1-4")
        assert (grid.y_combo.currentData(), grid.y_values.text()) == ("sampler", "Euler, DDIM, LCM")
        assert not again.banner.isVisible()  # everything came back: nothing to say
        speed.cache_check.setChecked(False)  # off, but the interval chosen stays for the next time
        grid.set_axis(1, "", "")
        grid.set_open(False)
        again.save_prefs()
        prefs = load_settings(settings_file).images
        assert (prefs.step_cache, prefs.step_cache_interval) == (False, 4)
        assert (prefs.grid_axes, prefs.experiment_open) == (["seed=1-4"], False)
    finally:
        again.shutdown()


def test_what_cannot_come_back_is_said_in_one_line(qtbot, workspace, engine_ready):
    write_settings_file({"model_id": "import/sd-one", "final_decode": "tiny", "previews": "tiny",
                         "loras": [{"id": SDXL_ID, "weight": 0.5}, {"id": "local/gone.safetensors", "weight": 0.8},
                                   {"id": SD1_ID, "weight": 1.25}]})
    page = make_page(qtbot, open_workspace())
    try:
        assert page.banner.isVisible()
        assert page.banner.text() == (
            "Your last settings are back, but the LoRA kohya sdxl style was left out: kohya sdxl style.safetensors "
            "is a LoRA for SDXL, but sd-one is SD 1.x: a LoRA works only with the model family it was trained "
            "for; the LoRA local/gone.safetensors (weight 0.8) is not installed, so it was left out; the tiny "
            "final decode needs the tiny VAE for SD 1.x/2.x models, which is not installed: the full decode is "
            "used.")
        c = page.controls
        assert [(row.choice.id, row.weight()) for row in c.lora_picker.rows] == [(SD1_ID, 1.25)]  # the one that fits
        speed = c.speed_options  # no tiny VAE: the section's own rule (latent previews, full decode, its note)
        assert (speed.preview_combo.currentData(), speed.decode_combo.currentData()) == ("latent", "full")
        assert speed.note.text() == ("Tiny-VAE previews and decoding need the tiny VAE for SD 1.x/2.x models: get "
                                     "TAESD on the Models page (atelier models pull taesd).")
        page.save_prefs()  # "tiny" previews stay the wish: the real picture once a tiny VAE is installed
        assert load_settings(page.workspace.paths.settings_file).images.previews == "tiny"
    finally:
        page.shutdown()


def test_a_removed_model_is_named_and_its_loras_are_judged_against_the_one_chosen(qtbot, workspace, engine_ready):
    write_settings_file({"model_id": "import/sd-gone", "loras": [{"id": SD1_ID, "weight": 0.7}]})
    page = make_page(qtbot, open_workspace())
    try:
        assert page.banner.text() == "Your last settings are back, but the model import/sd-gone is no longer " \
                                     "installed, so sd-one was chosen."
        assert [(row.choice.id, row.weight()) for row in page.controls.lora_picker.rows] == [(SD1_ID, 0.7)]
    finally:
        page.shutdown()


def test_bad_values_in_the_file_fall_back_one_by_one_and_the_rest_is_kept(qtbot, workspace, engine_ready, caplog):
    write_settings_file({"model_id": "import/sd-one", "prompt": "kept", "loras": [{"id": SD1_ID, "weight": 99}],
                         "previews": "hologram", "final_decode": 3, "step_cache": "sometimes",
                         "step_cache_interval": 9, "grid_axes": ["colour=red, blue"], "experiment_open": "perhaps"})
    with caplog.at_level(logging.WARNING, logger="engines.settings"):
        settings, problem = read_settings(open_workspace().paths.settings_file)
    assert problem is None  # the file is not set aside for a few bad values
    assert settings.images == ImagePrefs(model_id="import/sd-one", prompt="kept")
    assert ("unusable image settings ['experiment_open', 'final_decode', 'grid_axes', 'loras', 'previews', "
            "'step_cache', 'step_cache_interval']; using their defaults") in caplog.messages
    page = make_page(qtbot, open_workspace())
    try:
        c, grid = page.controls, page.grid_panel
        assert c.prompt.toPlainText() == "kept" and c.lora_picker.rows == []
        assert c.speed_options.request_fields() == {"vae": "full", "preview_vae": "", "deep_cache": 0}
        assert c.speed_options.cache_spin.value() == 3
        assert (grid.x_combo.currentData(), grid.x_values.text(), grid.y_combo.currentData()) == ("steps", "", "")
        assert not grid.toggle.isChecked() and not page.banner.isVisible()
    finally:
        page.shutdown()


@pytest.mark.parametrize("images, field", [
    ({"loras": [{"id": SD1_ID, "weight": 1.0}] * 9}, "loras"),  # more than can be applied at once
    ({"loras": [{"id": "", "weight": 1.0}]}, "loras"),
    ({"loras": [{"weight": 1.0}]}, "loras"),
    ({"loras": [{"id": SD1_ID, "weight": -10.5}]}, "loras"),
    ({"loras": {"id": SD1_ID}}, "loras"),
    ({"grid_axes": ["steps=1,2", "seed=1", "guidance=3"]}, "grid_axes"),  # X and Y only
    ({"grid_axes": ["steps 1,2"]}, "grid_axes"),
    ({"grid_axes": [7]}, "grid_axes"),
    ({"step_cache_interval": 1}, "step_cache_interval"),
    ({"final_decode": "PATH"}, "final_decode"),
])
def test_each_unusable_remembered_value_falls_back_to_its_default(images, field):
    prefs = ImagePrefs.model_validate({**images, "prompt": "kept"})
    assert getattr(prefs, field) == getattr(ImagePrefs(), field) and prefs.prompt == "kept"


def test_the_remembered_limits_are_the_engines_and_the_sections():
    """engines.settings sits below the image engines, so it restates their limits: they must stay the same."""
    from desktop.pages.images.grid_panel import SETTINGS as PANEL_SETTINGS
    from engines.diffusion.types import MAX_LORA_WEIGHT, MAX_LORAS
    from engines.images.grid import SETTINGS as GRID_SETTINGS
    from engines.settings import GRID_AXIS_NAMES, LORA_WEIGHT_LIMIT, REMEMBERED_LORAS_MAX

    assert (REMEMBERED_LORAS_MAX, LORA_WEIGHT_LIMIT) == (MAX_LORAS, MAX_LORA_WEIGHT)
    assert set(GRID_AXIS_NAMES) == set(GRID_SETTINGS) == {name for name, _label, _example in PANEL_SETTINGS}
    prefs = ImagePrefs.model_validate({"loras": [{"id": SD1_ID, "weight": -MAX_LORA_WEIGHT}] * MAX_LORAS})
    assert len(prefs.loras) == MAX_LORAS
