"""Paths, settings and the installed-model store: the app's own files."""

import json

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
