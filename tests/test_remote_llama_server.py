"""Atelier chats through llama-cpp-python's own server as a remote engine (issue 12).

The server is the real one (``python -m llama_cpp.server`` serving the
demo GGUF on 127.0.0.1, tests/fixtures/llama_server.py). Through it:
``atelier remote add/list/remove``, ``atelier chat --model box/gemma``
(streamed, and --json with its figures), a ChatTurn that streams, keeps its
history and stops mid-reply, and the chat page with the remote model
chosen: picked, said to be remote, streamed, stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.api import SamplingParams, TokenEvent
from engines.chat import ChatStore
from engines.chat.session import ChatTurn
from engines.remote import RemoteHost, RemoteServers
from engines.remote.manage import add_server
from engines.workspace import open_workspace
from tests.fixtures.cli_runner import error_lines, run_atelier
from tests.fixtures.llama_server import llama_server  # noqa: F401  (session fixture)
from tests.fixtures.waits import HANG_S

pytestmark = pytest.mark.slow

WAIT_MS = int(HANG_S * 1000)  # a hang guard (tests/fixtures/waits.py), not a speed check


def test_remote_add_list_chat_and_remove_on_the_command_line(llama_server: str) -> None:
    run = run_atelier("remote", "add", "box", llama_server)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().strip() == (f"Added 'box' ({llama_server}): 1 model, gemma. Use them as box/MODEL, "
                                           "e.g. box/gemma.")
    listed = run_atelier("remote", "list")
    assert listed.returncode == 0
    lines = listed.stdout.decode().splitlines()
    assert lines[0].startswith(f"box  {llama_server}  (no key; models as of ") and lines[1:] == ["  box/gemma"]
    data = json.loads(run_atelier("remote", "list", "--json").stdout)
    assert [(s["name"], s["base_url"], s["models"], s["key_in_keyring"]) for s in data["servers"]] == [
        ("box", llama_server, ["box/gemma"], False)]

    streamed = run_atelier("chat", "--model", "box/gemma", "--prompt", "The three primary colors are",
                           "--max-tokens", "16", "--seed", "3")
    assert streamed.returncode == 0, streamed.stderr
    text = streamed.stdout.decode()
    assert text.endswith("\n") and text.strip()
    assert streamed.stderr == b""  # no demo note: the remote model is not the local demo
    as_json = run_atelier("chat", "--model", "box/gemma", "--prompt", "The three primary colors are",
                          "--max-tokens", "16", "--seed", "3", "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert (result["model"], result["template_source"], result["seed"]) == ("box/gemma", "remote", 3)
    assert 0 < result["completion_tokens"] <= 16 and result["finish_reason"] in ("stop", "length")
    assert result["time_to_first_token_s"] is not None
    assert result["text"] + "\n" == text  # the same seed, the same reply: the request carried it

    removed = run_atelier("remote", "remove", "box")
    assert (removed.returncode, removed.stdout.decode().strip()) == (0, f"Removed 'box' ({llama_server}).")
    gone = run_atelier("chat", "--model", "box/gemma", "--prompt", "hi")
    assert gone.returncode == 2 and error_lines(gone)[0].startswith(
        "error: No installed model, catalog model or file is called 'box/gemma'.")


def test_a_chat_turn_streams_keeps_history_and_stops_mid_reply(llama_server: str, tmp_path: Path) -> None:
    servers = RemoteServers.beside(open_workspace().models.file)
    spec = add_server(servers, "box", llama_server).server.spec("gemma")
    host = RemoteHost(on_models=servers.set_models)
    with ChatStore(tmp_path / "atelier.sqlite3") as store:
        chat = store.create_conversation()
        store.set_sampling(chat.id, SamplingParams(max_tokens=12, seed=7))
        store.add_message(chat.id, "user", "The three primary colors are")
        first = ChatTurn(store, host, chat.id, spec, engine="remote").run(lambda event: None)
        assert first.error is None and first.result.finish_reason in ("stop", "length") and first.text
        store.add_message(chat.id, "user", "And the secondary ones?")
        second = ChatTurn(store, host, chat.id, spec, engine="remote").run(lambda event: None)
        assert second.error is None and second.result.completion_tokens > 0
        assert [(m.role, m.status) for m in store.messages(chat.id)] == [
            ("user", "complete"), ("assistant", "complete"), ("user", "complete"), ("assistant", "complete")]

        store.set_sampling(chat.id, SamplingParams(max_tokens=400, seed=7))
        store.add_message(chat.id, "user", "Tell me a long story about a lighthouse keeper.")
        seen: list[str] = []

        def stop_after_three(event) -> None:
            if isinstance(event, TokenEvent):
                seen.append(event.text)
                if len(seen) == 3:
                    host.cancel()  # what the Stop button does, from the GUI thread

        stopped = ChatTurn(store, host, chat.id, spec, engine="remote").run(stop_after_three)
        assert stopped.error is None and stopped.result.finish_reason == "cancelled"
        reply = store.messages(chat.id)[-1]
        assert (reply.status, reply.content) == ("cancelled", "".join(seen))
        assert 3 <= len(seen) < 400


@pytest.mark.gui
def test_the_chat_page_with_a_remote_model_streams_and_stops(qtbot, llama_server: str) -> None:
    from desktop.pages.chat_controller import ChatController
    from desktop.pages.chat_page import ChatPage

    workspace = open_workspace()
    add_server(RemoteServers.beside(workspace.models.file), "box", llama_server)
    controller = ChatController(workspace)
    page = ChatPage(controller)
    qtbot.addWidget(page)
    page.show()
    try:
        combo = page.panel.model_combo
        names = [combo.itemText(i) for i in range(combo.count())]
        assert "gemma · box (remote)" in names  # beside the local demo, marked remote
        combo.setCurrentIndex(names.index("gemma · box (remote)"))
        assert controller.current_model().id == "box/gemma"
        assert page.panel.model_note.text() == f"Runs on the remote server 'box' ({llama_server})"
        assert not page.panel.load_box.isEnabled()
        assert page.panel.load_note.text() == "This model runs on a remote server, which loads it with its own settings."
        assert not page.panel.top_k.isEnabled() and page.panel.temperature.isEnabled()
        assert "Your messages are sent to it." in page.view.toPlainText()

        page.panel.max_tokens.setValue(16)
        page.composer.setPlainText("The three primary colors are")
        page.send_button.click()
        qtbot.waitUntil(lambda: not controller.streaming, timeout=WAIT_MS)
        messages = controller.messages()
        assert [(m.role, m.status) for m in messages] == [("user", "complete"), ("assistant", "complete")]
        assert messages[1].content and messages[1].stats["template"] == "the server's"
        assert page.status_line.text() == f"box/gemma · on {llama_server}"
        assert page.banner.isHidden()

        page.panel.max_tokens.setValue(400)
        controller.save_chat_settings(sampling=page.panel.sampling())
        page.composer.setPlainText("Now tell me a long story about a lighthouse keeper.")
        with qtbot.waitSignal(controller.stream_text, timeout=WAIT_MS):
            page.send_button.click()
        page.stop_button.click()
        qtbot.waitUntil(lambda: not controller.streaming, timeout=WAIT_MS)
        last = controller.messages()[-1]
        assert last.status == "cancelled" and last.content
        assert page.status_line.text() == "Stopped."

        combo.setCurrentIndex(next(i for i in range(combo.count()) if "(remote)" not in combo.itemText(i)))
        assert page.panel.load_box.isEnabled() and page.panel.top_k.isEnabled()  # a local model: Atelier's settings
        assert page.panel.load_note.text() == "Changes apply on the next message (the model reloads)."
    finally:
        controller.shutdown()
