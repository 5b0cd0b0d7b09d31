"""State files that never lose the user's data: corrupt, foreign-shaped, newer, or shared.

Classes covered: corrupt files (torn, garbage, wrong JSON type, wrong field
types), files from a newer version (unknown fields, a higher version), and
read-modify-write by two writers of one file (the two-process tests are in
test_two_processes.py).
"""

from __future__ import annotations

import json
import threading

import pytest

from engines.errors import EngineError
from engines.library.installed import InstalledModel, InstalledModels
from engines.settings import LoadPrefs, Settings, load_settings, read_settings, save_settings
from engines.storage import read_state, state_file

TORN = b'{"version": 1, "models": [{"id": "local/a", "name": "A", "path": "/m/a.gguf", "size_'


def model(model_id: str, path: str = "/m/x.gguf") -> InstalledModel:
    return InstalledModel(model_id, model_id.upper(), path, 10, "llama_cpp", "gguf", "import")


def unreadable_copies(folder, stem):
    return sorted(folder.glob(f"{stem}.unreadable-*.json"))


# ---- the reader every state file uses ------------------------------------------------


@pytest.mark.parametrize(("content", "reason"), [
    (b"{", "it is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"\x00\xff\xfe garbage", "it is not UTF-8 text"),
    (b"[]", "it holds a list instead of an object"),
    (b"null", "it holds null instead of an object"),
    (b'"x"', "it holds a string instead of an object"),
    (b"   ", "it is empty"),
])
def test_an_unreadable_state_file_is_set_aside_with_its_bytes_and_a_message(tmp_path, content, reason):
    path = tmp_path / "thing.json"
    path.write_bytes(content)
    state = read_state(path, "The thing list")
    (kept,) = unreadable_copies(tmp_path, "thing")
    assert state.data == {} and state.writable and state.kept_as == kept
    assert kept.read_bytes() == content and not path.exists()
    assert state.problem == f"The thing list (thing.json) could not be read ({reason}). It was kept as {kept} and a new one was started."


def test_set_aside_never_replaces_an_earlier_copy(tmp_path):
    path = tmp_path / "thing.json"
    for n in range(3):  # three damaged files within the same second
        path.write_bytes(b"{torn %d" % n)
        read_state(path, "The thing list")
    assert sorted(p.read_bytes() for p in unreadable_copies(tmp_path, "thing")) == [b"{torn 0", b"{torn 1", b"{torn 2"]


def test_a_file_that_cannot_be_set_aside_is_reported_and_not_writable(tmp_path, monkeypatch):
    path = tmp_path / "thing.json"
    path.write_bytes(b"{")

    def refuse(p):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(state_file, "set_aside", refuse)
    state = read_state(path, "The thing list")
    assert not state.writable and path.read_bytes() == b"{"
    assert state.problem == (
        f"The thing list ({path}) cannot be read (it is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)) and could not be moved aside (Permission denied). Atelier will not change "
        "it; fix or move the file, then restart.")


# ---- settings.json (D4, D25) ----------------------------------------------------------


@pytest.mark.parametrize(("content", "reason"), [
    ("null", "it holds null instead of an object"),
    ("[]", "it holds a list instead of an object"),
    ('"x"', "it holds a string instead of an object"),
    ('{"schema_version": null}', "its schema_version is null, not a positive whole number"),
    ('{"schema_version": "abc"}', 'its schema_version is "abc", not a positive whole number'),
])
def test_settings_that_are_json_but_not_settings_give_defaults_and_a_message(tmp_path, content, reason):
    path = tmp_path / "settings.json"
    path.write_text(content)
    settings, problem = read_settings(path)
    (kept,) = unreadable_copies(tmp_path, "settings")
    assert settings == Settings() and kept.read_text() == content
    assert problem == f"The settings file (settings.json) could not be read ({reason}). It was kept as {kept} and a new one was started."
    save_settings(path, settings)  # and the app goes on: the next save writes a fresh file
    assert load_settings(path) == Settings() and kept.read_text() == content


def test_settings_from_a_newer_version_keep_their_fields_and_version(tmp_path):
    path = tmp_path / "settings.json"
    newer = {"schema_version": 2, "theme": "dark", "favourite_models": ["a", "b"],
             "load_prefs": {"m": {"context_length": 8192, "rope_scaling": 2.0}}}
    path.write_text(json.dumps(newer))
    settings, problem = read_settings(path)
    assert problem is None and settings.theme == "dark" and settings.prefs_for("m").context_length == 8192
    settings.overflow_policy = "stop"
    settings.load_prefs["m"] = LoadPrefs(context_length=4096)  # as the GUI does: a new object, without the unknown field
    save_settings(path, settings)
    saved = json.loads(path.read_text())
    assert saved["schema_version"] == 2 and saved["favourite_models"] == ["a", "b"] and saved["overflow_policy"] == "stop"
    assert saved["load_prefs"]["m"]["rope_scaling"] == 2.0 and saved["load_prefs"]["m"]["context_length"] == 4096


def test_two_writers_of_settings_keep_each_others_changes(tmp_path):
    path = tmp_path / "settings.json"
    save_settings(path, Settings(theme="light"))
    gui, cli = load_settings(path), load_settings(path)
    gui.theme = "dark"
    gui.load_prefs["a"] = LoadPrefs(threads=3)
    save_settings(path, gui)
    cli.offline = True
    cli.load_prefs["b"] = LoadPrefs(threads=5)
    save_settings(path, cli)
    again = load_settings(path)
    assert (again.theme, again.offline) == ("dark", True)
    assert again.prefs_for("a").threads == 3 and again.prefs_for("b").threads == 5
    del gui.load_prefs["a"]  # a removal is a change too
    save_settings(path, gui)
    assert set(load_settings(path).load_prefs) == {"b"}


# ---- models.json (D3) ------------------------------------------------------------------


def test_a_torn_model_list_is_set_aside_and_the_next_write_keeps_it(tmp_path):
    path = tmp_path / "models.json"
    path.write_bytes(TORN)
    store = InstalledModels(path)
    assert store.all() == []
    (kept,) = unreadable_copies(tmp_path, "models")
    assert store.problem == (
        f"The model list (models.json) could not be read (it is not valid JSON: Unterminated string starting at: "
        f"line 1 column 79 (char 78)). It was kept as {kept} and a new one was started.")
    store.add(model("local/new"))
    assert kept.read_bytes() == TORN and [m.id for m in store.all()] == ["local/new"]
    assert store.problem is not None  # said until the user has seen it: the GUI and the CLI show it


@pytest.mark.parametrize(("content", "reason"), [
    ("[]", "it holds a list instead of an object"),
    ("null", "it holds null instead of an object"),
    ('{"models": 5}', 'its "models" is int, not a list'),
])
def test_a_model_list_of_the_wrong_shape_crashes_nothing(tmp_path, content, reason):
    path = tmp_path / "models.json"
    path.write_text(content)
    store = InstalledModels(path)
    assert store.all() == [] and store.get("x") is None
    assert f"({reason})" in store.problem
    assert [p.read_text() for p in unreadable_copies(tmp_path, "models")] == [content]


def test_an_invalid_record_is_skipped_alone_and_written_back_untouched(tmp_path):
    path = tmp_path / "models.json"
    bad = {"id": "local/bad", "name": "Bad", "path": 5, "size_bytes": "big", "engine": "llama_cpp", "format": "gguf",
           "source": "import"}
    good = {"id": "local/good", "name": "Good", "path": "/m/good.gguf", "size_bytes": 7, "engine": "llama_cpp",
            "format": "gguf", "source": "import"}
    path.write_text(json.dumps({"version": 1, "models": [bad, good, 42]}))
    store = InstalledModels(path)
    assert [m.id for m in store.all()] == ["local/good"]
    assert store.problem == (
        "2 of the models in models.json could not be read and were left as written: "
        "model 'local/bad': path: Input should be a valid string; model #3: it is a number, not an object.")
    store.add(model("local/new"))
    saved = json.loads(path.read_text())["models"]
    assert [r if not isinstance(r, dict) else r["id"] for r in saved] == ["local/good", "local/new", "local/bad", 42]
    assert bad in saved and not unreadable_copies(tmp_path, "models")


def test_fields_and_the_version_of_a_newer_model_list_are_kept(tmp_path):
    path = tmp_path / "models.json"
    record = {"id": "local/a", "name": "A", "path": "/m/a.gguf", "size_bytes": 7, "engine": "llama_cpp",
              "format": "gguf", "source": "import", "license": "apache-2.0", "tags": ["fast"]}
    path.write_text(json.dumps({"version": 3, "library_id": "xyz", "models": [record]}))
    store = InstalledModels(path)
    assert store.get("local/a").name == "A" and store.get("local/a").kind == "chat" and store.problem is None
    store.add(model("local/b"))
    saved = json.loads(path.read_text())
    assert saved["version"] == 3 and saved["library_id"] == "xyz"
    assert saved["models"][0] == {**record, "sha256": None, "description": "", "added_at": 0.0, "kind": "chat", "base": None}


def test_a_model_list_that_cannot_be_set_aside_is_never_overwritten(tmp_path, monkeypatch):
    path = tmp_path / "models.json"
    path.write_bytes(TORN)

    def refuse(p):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(state_file, "set_aside", refuse)
    store = InstalledModels(path)
    assert store.all() == [] and "could not be moved aside (Permission denied)" in store.problem
    with pytest.raises(EngineError) as err:
        store.add(model("local/new"))
    assert err.value.message == store.problem
    assert path.read_bytes() == TORN


def test_threads_adding_models_at_once_keep_every_record(tmp_path):
    store = InstalledModels(tmp_path / "models.json")
    threads = [threading.Thread(target=lambda t=t: [store.add(model(f"local/{t}-{i}")) for i in range(25)]) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.all()) == 100
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
