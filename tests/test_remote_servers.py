"""Remote servers as state: remotes.json, names and URLs in words, keys never in a file, NAME/MODEL resolved.

No connection is made here (the servers in these tests are never asked):
what is checked is what Atelier keeps, refuses and resolves. The
behaviour against real servers is in test_remote_failures.py (a stub on
127.0.0.1 that fails on demand) and test_remote_llama_server.py
(llama-cpp-python's own server).
"""

from __future__ import annotations

import json

import pytest

from engines.errors import EngineError, ErrorKind
from engines.library.resolve import resolve_model
from engines.remote import RemoteModel, RemoteServer, RemoteServers, find_remote_model, remote_models
from engines.remote.keys import keyring_user, read_key
from engines.remote.manage import add_server, remove_server
from engines.remote.urls import is_loopback, normalise_base_url, require_allowed
from engines.workspace import open_workspace


@pytest.fixture
def servers(atelier_home) -> RemoteServers:
    return RemoteServers.beside(open_workspace().models.file)


@pytest.fixture
def memory_keyring():
    """A working keyring in this process, put back as it was afterwards."""
    import keyring
    from keyring.backend import KeyringBackend
    from keyring.errors import PasswordDeleteError

    class Memory(KeyringBackend):
        priority = 1

        def __init__(self) -> None:
            super().__init__()
            self.saved: dict[tuple[str, str], str] = {}

        def get_password(self, service, username):
            return self.saved.get((service, username))

        def set_password(self, service, username, password):
            self.saved[(service, username)] = password

        def delete_password(self, service, username):
            if self.saved.pop((service, username), None) is None:
                raise PasswordDeleteError("not there")

    before = keyring.get_keyring()
    backend = Memory()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)


def test_servers_live_beside_the_model_list_and_keep_what_a_newer_atelier_wrote(servers: RemoteServers) -> None:
    assert servers.file.name == "remotes.json" and servers.file.parent == open_workspace().models.file.parent
    servers.add(RemoteServer("box", "http://box:8000/v1", api_key_env="BOX_KEY", models=("qwen", "llama")))
    data = json.loads(servers.file.read_text())
    data["servers"][0]["priority"] = 3  # a field from a newer version
    data["mirrors"] = ["x"]
    servers.file.write_text(json.dumps(data))
    servers.add(RemoteServer("gpu", "https://gpu.example/v1"))
    again = json.loads(servers.file.read_text())
    assert again["servers"][0]["priority"] == 3 and again["mirrors"] == ["x"]
    assert [s.name for s in servers.all()] == ["box", "gpu"]
    assert servers.get("box").models == ("qwen", "llama") and servers.get("box").api_key_env == "BOX_KEY"


def test_a_damaged_file_is_set_aside_with_a_message_never_read_as_empty_and_overwritten(servers: RemoteServers) -> None:
    servers.file.parent.mkdir(parents=True, exist_ok=True)
    servers.file.write_text('{"servers": [')
    assert servers.all() == []
    assert servers.problem.startswith("The list of remote servers (remotes.json) could not be read (it is not valid "
                                      "JSON: ")
    kept = list(servers.file.parent.glob("remotes.unreadable-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == '{"servers": ['


def test_one_bad_record_is_skipped_with_its_reason_and_kept_as_written(servers: RemoteServers) -> None:
    servers.file.parent.mkdir(parents=True, exist_ok=True)
    servers.file.write_text(json.dumps({"servers": [{"name": "ok", "base_url": "http://ok:1/v1"},
                                                    {"name": "bad", "base_url": 5}]}))
    assert [s.name for s in servers.all()] == ["ok"]
    assert servers.problem == ("1 of the remote servers in remotes.json could not be read and was left as written: "
                               "server '#2': base_url: Input should be a valid string.")
    servers.remove("ok")
    assert json.loads(servers.file.read_text())["servers"] == [{"name": "bad", "base_url": 5}]


@pytest.mark.parametrize(("name", "why"), [
    ("Box", "'Box' cannot name a remote server: use 1 to 32 lower-case letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (e.g. box)."),
    ("a/b", "'a/b' cannot name a remote server: use 1 to 32 lower-case letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (e.g. box)."),
    ("local", "'local' is taken by Atelier's own model ids (local/…): choose another name for the server."),
    ("demo", "'demo' is taken by Atelier's own model ids (demo/…): choose another name for the server."),
])
def test_names_that_would_be_ambiguous_as_model_ids_are_refused(servers: RemoteServers, name: str, why: str) -> None:
    with pytest.raises(EngineError) as refused:
        add_server(servers, name, "http://127.0.0.1:9/v1")
    assert (refused.value.kind, refused.value.message) == (ErrorKind.BAD_INPUT, why)


def test_a_taken_name_is_refused_before_any_connection(servers: RemoteServers) -> None:
    servers.add(RemoteServer("box", "http://box:8000/v1"))
    with pytest.raises(EngineError) as refused:
        add_server(servers, "box", "http://192.0.2.1:8000/v1")  # TEST-NET: would hang if it were asked
    assert refused.value.message == ("A remote server called 'box' exists already. Remove it first ('atelier remote "
                                     "remove box'), or choose another name.")


@pytest.mark.parametrize(("url", "base"), [
    ("http://box:8000/v1/", "http://box:8000/v1"),
    ("  HTTPS://GPU.Example/v1  ", "https://gpu.example/v1"),
    ("http://[::1]:8080/v1", "http://[::1]:8080/v1"),
    ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1"),
])
def test_base_urls_are_normalised(url: str, base: str) -> None:
    assert normalise_base_url(url) == base


@pytest.mark.parametrize(("url", "why"), [
    ("box:8000/v1", "'box:8000/v1' is not a URL: it needs http:// or https://, e.g. http://box:8000/v1."),
    ("ftp://box/v1", "The URL must start with http:// or https://, not ftp://."),
    ("http://user:secret@box/v1", "Put no user name or key in the URL: it would be saved in clear. Give the key with "
                                  "--api-key-env VAR, or let Atelier keep it in the system keyring."),
    ("http://box/v1?key=1", "The URL must not have a '?' query or '#' part: give the API's base URL, e.g. "
                            "http://box:8000/v1."),
    ("http://box:99999/v1", "'http://box:99999/v1' is not a valid URL (Port out of range 0-65535)."),
    ("http://", "The URL 'http://' has no host name."),
    ("http://box/\x1b[2J", "The URL contains spaces or control characters."),
])
def test_urls_that_cannot_work_or_would_leak_a_secret_are_refused_in_words(url: str, why: str) -> None:
    with pytest.raises(EngineError) as refused:
        normalise_base_url(url)
    assert (refused.value.kind, refused.value.message) == (ErrorKind.BAD_INPUT, why)


def test_offline_mode_allows_loopback_servers_only(monkeypatch) -> None:
    assert [is_loopback(u) for u in ("http://127.0.0.1:8/v1", "http://127.5.6.7/v1", "http://[::1]/v1",
                                     "http://localhost:1/v1", "http://10.0.0.2/v1", "http://box/v1",
                                     "http://127.0.0.1.evil.example/v1")] == [True, True, True, True, False, False,
                                                                              False]
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    require_allowed("here", "http://127.0.0.1:8080/v1")  # no error
    with pytest.raises(EngineError) as refused:
        require_allowed("box", "http://10.0.0.2:8000/v1")
    assert (refused.value.kind, refused.value.message) == (ErrorKind.OFFLINE, (
        "Atelier is in offline mode, and the remote server 'box' (10.0.0.2) is not on this computer. Turn offline "
        "mode off in Settings to use it; servers on 127.0.0.1 work offline."))


def test_offline_mode_refuses_adding_a_server_elsewhere_without_connecting(servers, monkeypatch) -> None:
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    with pytest.raises(EngineError) as refused:
        add_server(servers, "box", "http://192.0.2.1:8000/v1")
    assert refused.value.kind == ErrorKind.OFFLINE and servers.all() == []


def test_a_key_comes_from_its_environment_variable_at_each_request(monkeypatch) -> None:
    monkeypatch.setenv("BOX_KEY", "  sk-123 ")
    assert read_key("box", "BOX_KEY", False) == "sk-123"
    assert read_key("box", None, False) is None  # a server that needs no key
    monkeypatch.delenv("BOX_KEY")
    with pytest.raises(EngineError) as missing:
        read_key("box", "BOX_KEY", False)
    assert missing.value.message == ("The key for the remote server 'box' comes from the environment variable "
                                     "BOX_KEY, which is not set here. Set it where Atelier starts from, then try again.")


def test_without_a_keyring_the_key_is_refused_plainly_and_nothing_is_added(servers, monkeypatch) -> None:
    import keyring
    from keyring.backends import fail

    from engines.remote import manage

    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # what a headless Linux without a secret service has
    monkeypatch.setattr(manage, "check_server", lambda *a, **k: [])  # the server answered; only the keyring is at stake
    try:
        with pytest.raises(EngineError) as refused:
            add_server(servers, "box", "http://127.0.0.1:9/v1", key="sk-123")
    finally:
        keyring.set_keyring(before)
    assert (refused.value.kind, refused.value.message) == (ErrorKind.UNAVAILABLE, (
        "No system keyring is available here, so the key for 'box' was not saved. Keep it in an environment variable "
        "instead and add the server with --api-key-env VAR (e.g. --api-key-env BOX_KEY)."))
    assert servers.all() == []


def test_a_typed_key_goes_to_the_keyring_never_to_the_file_and_leaves_with_the_server(servers, memory_keyring,
                                                                                      monkeypatch) -> None:
    from engines.remote import manage
    from engines.remote.http import ListedModel

    monkeypatch.setattr(manage, "check_server", lambda *a, **k: [ListedModel("qwen")])
    added = add_server(servers, "box", "http://127.0.0.1:9/v1", key="sk-secret-123")
    assert added.server.key_in_keyring and added.summary() == (
        "Added 'box' (http://127.0.0.1:9/v1): 1 model, qwen. Use them as box/MODEL, e.g. box/qwen.")
    assert "sk-secret-123" not in servers.file.read_text()
    assert memory_keyring.saved == {("atelier", keyring_user("box")): "sk-secret-123"}
    assert read_key("box", None, True) == "sk-secret-123"
    remove_server(servers, "box")
    assert memory_keyring.saved == {} and servers.all() == []


def test_removing_an_unknown_server_names_the_ones_there_are(servers) -> None:
    servers.add(RemoteServer("box", "http://box:8000/v1"))
    with pytest.raises(EngineError) as refused:
        remove_server(servers, "gpu")
    assert refused.value.message == "No remote server is called 'gpu'. The remote servers are: box."


def test_models_appear_as_name_slash_model_marked_remote(servers) -> None:
    servers.add(RemoteServer("box", "http://box:8000/v1", models=("Qwen/Qwen2.5-7B-Instruct", "llama")))
    models = remote_models(servers)
    assert [m.id for m in models] == ["box/Qwen/Qwen2.5-7B-Instruct", "box/llama"]
    first = models[0]
    assert (first.name, first.kind, first.engine, first.source) == (
        "Qwen/Qwen2.5-7B-Instruct · box (remote)", "chat", "remote", "remote")
    assert first.spec.model == "Qwen/Qwen2.5-7B-Instruct" and first.spec.base_url == "http://box:8000/v1"
    assert find_remote_model("box/Qwen/Qwen2.5-7B-Instruct", servers) == first
    assert find_remote_model("box/not-listed-yet", servers).model == "not-listed-yet"  # the server decides at load
    assert find_remote_model("gpu/llama", servers) is None and find_remote_model("box/", servers) is None


def test_the_one_resolver_gives_chat_the_remote_model_and_tells_other_commands_what_it_is(servers) -> None:
    workspace = open_workspace()
    servers.add(RemoteServer("box", "http://box:8000/v1", models=("llama",)))
    found = resolve_model("box/llama", workspace.models, kind="chat", remotes=servers)
    assert isinstance(found.remote, RemoteModel) and found.remote.id == "box/llama"
    with pytest.raises(EngineError) as refused:
        resolve_model("box/llama", workspace.models, kind="image")  # e.g. atelier image --model box/llama
    assert refused.value.message == (
        "'box/llama' is a model on the remote server 'box', with no file here: only chat runs it (atelier chat "
        "--model box/llama). 'atelier remote list' shows the remote servers.")
    with pytest.raises(EngineError) as wrong_kind:
        resolve_model("box/llama", workspace.models, kind="image", remotes=servers)
    assert wrong_kind.value.message == "'box/llama' (on a remote server) is a chat model, but this needs an image model."
    assert resolve_model("demo", workspace.models, kind="chat", remotes=servers).installed is not None
