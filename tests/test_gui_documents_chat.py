"""A chat grounded in a document collection, in the real window: attach, answer, sources, reopen.

The demo Gemma 270M answers through the app's scheduler and engine host;
the question is searched with the real all-MiniLM-L6-v2 GGUF in another
host on the same scheduler, as ``atelier chat --docs`` does (the same
engines.documents function builds the grounded request).
"""

from pathlib import Path

import pytest
from PySide6.QtCore import QUrl

from engines.library.installed import InstalledModel
from engines.workspace import open_workspace
from tests.fixtures.minilm import minilm_gguf  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_an_attached_collection_grounds_the_answer_and_its_sources_are_listed_opened_and_kept(
        qtbot, monkeypatch, tmp_path, gemma_path, minilm_gguf):  # noqa: F811
    from desktop.chat.citations import source_href
    from desktop.main_window import MainWindow
    from engines.chat.citations import chat_collection, sources_in
    from engines.settings import LoadPrefs

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "harbour.txt").write_text("Harbour dues for fishing vessels under twelve metres are forty euros per "
                                        "month, payable at the quay office.\n", encoding="utf-8")
    (corpus / "garden.md").write_text("# Garden\n\nThe tomato seedlings must be planted out after the last frost, "
                                      "in mid May.\n", encoding="utf-8")
    ws = open_workspace()
    model = ws.models.add(InstalledModel("local/gemma", "Gemma 3 270M", str(gemma_path), gemma_path.stat().st_size,
                                         "llama_cpp", "gguf", "import", kind="chat"))
    ws.models.add(InstalledModel("local/minilm", "all-MiniLM-L6-v2", str(minilm_gguf), minilm_gguf.stat().st_size,
                                 "llama_cpp", "gguf", "import", kind="embedding"))
    ws.settings.last_model_id = model.id
    ws.settings.load_prefs[model.id] = LoadPrefs(context_length=2048, threads=2)
    ws.save_settings()
    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)
    opened = []
    monkeypatch.setattr("desktop.chat.chat_documents.open_source", lambda path, page, fail: opened.append((path, page)))
    win = MainWindow(ws)  # the real scheduler, engine hosts and llama.cpp
    qtbot.addWidget(win)
    win.show()
    try:
        documents = win.documents_page
        finished = []
        documents.runner.finished.connect(lambda name, summary: finished.append(summary))
        assert documents.create_collection("Harbour", [str(corpus)])
        qtbot.waitUntil(lambda: bool(finished), timeout=600_000)
        assert finished[0].indexed == 2

        win.show_page("Chat")
        page = win.chat_page
        box = page.documents.box
        assert [box.combo.itemText(i) for i in range(box.combo.count())] == ["None", "Harbour"]
        box.combo.setCurrentIndex(1)  # the one click
        assert box.note.text() == "Answers come from 'Harbour' and list their sources under them."
        page.panel.random_seed.setChecked(False)
        page.panel.seed.setValue(1)
        page.panel.max_tokens.setValue(8)
        page.composer.setPlainText("How much are the harbour dues for a fishing boat?")
        page.send_button.click()
        qtbot.waitUntil(lambda: not win.chat_controller.streaming, timeout=600_000)
        c = win.chat_controller
        conversation = c.current_id
        reply = c.messages()[-1]
        assert reply.role == "assistant" and reply.status == "complete", page.banner.text()
        sources = sources_in(c.store, conversation)[reply.id]
        # two short files fit in the context: the model was given the whole collection, the best passage first
        assert (sources.collection, sources.mode, sources.notice) == ("Harbour", "full_text", None)
        assert (Path(sources.citations[0].path).name, sources.citations[0].page) == ("harbour.txt", None)
        first = sources.citations[0]
        text = page.view.toPlainText()
        assert "Sources from 'Harbour' (the whole collection was given to the model)" in text
        assert (f"[1] harbour.txt · score {first.score:.4f} · similarity {first.similarity:.2f} · passage"
                in text)

        page.view._on_anchor_clicked(QUrl(source_href(str(reply.id), 1, "open")))
        assert opened == [(str(corpus / "harbour.txt"), None)]
        page.view._on_anchor_clicked(QUrl(source_href(str(reply.id), 1, "passage")))
        shown = page.documents.passage_box
        assert shown.windowTitle() == "[1] harbour.txt"
        assert shown.informativeText() == first.text
        assert shown.informativeText().startswith("Harbour dues for fishing vessels under twelve metres")
        shown.close()

        page.composer.setPlainText("the pharmacokinetics of monoclonal antibodies")
        page.send_button.click()
        qtbot.waitUntil(lambda: not win.chat_controller.streaming, timeout=600_000)
        nothing = sources_in(c.store, conversation)[c.messages()[-1].id]
        assert (nothing.mode, nothing.citations) == ("nothing", ())
        assert nothing.notice.startswith("Nothing relevant was found in 'Harbour': the closest of its 2 passages has "
                                         "a similarity of 0.")
        assert nothing.notice in page.view.toPlainText()

        page.new_chat()  # leave the chat, then reopen it: still attached, the sources still listed
        assert box.chosen() is None
        page._select(conversation)
        assert box.chosen() == "Harbour" and chat_collection(c.store, conversation) == "Harbour"
        reopened = page.view.toPlainText()
        assert "Sources from 'Harbour' (the whole collection was given to the model)" in reopened
        assert nothing.notice in reopened

        from PySide6.QtWidgets import QFileDialog

        exported = tmp_path / "grounded.md"  # the export keeps them too (engines.chat.export)
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(exported), ""))
        page._export(conversation, "md")
        assert ("*Sources from 'Harbour' (the whole collection was given to the model):*\n\n"
                f"- [1] harbour.txt · score {first.score:.4f} · similarity {first.similarity:.2f}\n"
                in exported.read_text(encoding="utf-8"))
    finally:
        win.close()
