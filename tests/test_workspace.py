"""Paths, settings and the installed-model store: the app's own files."""

import json

import pytest

from engines.library.demo import DEMO_ID, register_demo
from engines.library.installed import InstalledModel, InstalledModels
from engines.paths import app_paths
from engines.settings import LoadPrefs, Settings, load_settings, save_settings
from engines.workspace import open_workspace


def test_atelier_home_moves_every_folder(atelier_home):
    paths = app_paths()
    for folder in (paths.data, paths.config, paths.cache, paths.logs, paths.models):
        assert folder.is_dir() and atelier_home in folder.parents
    assert paths.database.parent == paths.data


def test_settings_round_trip_and_per_model_prefs(tmp_path):
    path = tmp_path / "settings.json"
    settings = Settings(theme="dark")
    settings.load_prefs["m"] = LoadPrefs(context_length=8192, threads=3)
    save_settings(path, settings)
    again = load_settings(path)
    assert again.theme == "dark" and again.prefs_for("m").context_length == 8192
    assert again.prefs_for("other") == LoadPrefs()
    assert json.loads(path.read_text())["schema_version"] == 1


def test_unreadable_settings_are_kept_aside_not_lost(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{not json")
    assert load_settings(path) == Settings()
    assert list(tmp_path.glob("settings.unreadable-*.json"))


def test_installed_models_store(tmp_path):
    store = InstalledModels(tmp_path / "models.json")
    model = store.add(InstalledModel("local/a", "A", str(tmp_path / "a.gguf"), 10, "llama_cpp", "gguf", "import"))
    assert model.added_at > 0
    assert store.unique_id("local", "a") == "local/a-2"
    assert store.find_by_path(tmp_path / "a.gguf").id == "local/a"
    assert store.remove("local/a").id == "local/a" and store.all() == []


def test_demo_model_is_registered_once_and_stays_removed(atelier_home):
    workspace = open_workspace()
    demo = workspace.models.get(DEMO_ID)
    assert demo is not None and demo.source == "demo" and "base model" in demo.description
    workspace.models.remove(DEMO_ID)
    assert register_demo(workspace.models, workspace.paths.models) is None
    assert open_workspace().models.get(DEMO_ID) is None


def test_a_workspace_opens_on_damaged_state_files_and_says_so(atelier_home):
    paths = app_paths()
    paths.settings_file.write_text("null")
    (paths.data / "models.json").write_text("[]")
    workspace = open_workspace()
    assert workspace.settings == Settings()
    (settings_copy,) = paths.config.glob("settings.unreadable-*.json")
    (models_copy,) = paths.data.glob("models.unreadable-*.json")
    assert workspace.problems == [
        f"The settings file (settings.json) could not be read (it holds null instead of an object). It was kept as "
        f"{settings_copy} and a new one was started.",
        f"The model list (models.json) could not be read (it holds a list instead of an object). It was kept as "
        f"{models_copy} and a new one was started.",
    ]


@pytest.mark.slow
def test_models_list_warns_about_a_set_aside_model_list_and_still_works(atelier_home):
    import subprocess
    import sys
    from pathlib import Path

    data = atelier_home / "data"
    data.mkdir(parents=True)
    (data / "models.json").write_text('{"models": [{"id": "local/a", "name": "A", "path": 5}]')  # torn
    run = subprocess.run([sys.executable, "-m", "desktop", "models", "list", "--json"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120)
    (kept,) = data.glob("models.unreadable-*.json")
    assert run.returncode == 0, run.stderr
    assert run.stderr == (f"warning: The model list (models.json) could not be read (it is not valid JSON: Expecting ',' "
                          f"delimiter: line 1 column 55 (char 54)). It was kept as {kept} and a new one was started.\n")
    assert json.loads(run.stdout)["models"] is not None


@pytest.mark.slow
@pytest.mark.gui
def test_the_installed_tab_says_the_model_list_was_set_aside(qtbot, atelier_home):
    from desktop.pages.models_page import ModelsPage
    from desktop.workers.background import wait_for_background

    paths = app_paths()
    (paths.data / "models.json").write_text("null")
    library = open_workspace().library()
    page = ModelsPage(library)
    qtbot.addWidget(page)
    try:
        tab = page.installed_tab
        tab.refresh()
        (kept,) = paths.data.glob("models.unreadable-*.json")
        expected = (f"The model list (models.json) could not be read (it holds null instead of an object). It was kept "
                    f"as {kept} and a new one was started.")
        qtbot.waitUntil(lambda: tab.banner.text() == expected, timeout=30000)
        assert tab.banner.isVisibleTo(tab)
    finally:
        page.shutdown(stop_downloads=True)
        page.wait_idle()
        wait_for_background()
