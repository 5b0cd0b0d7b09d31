"""The Documents page under pytest-qt: collections, indexing with progress, file states, removal; the grounding prompt.

The end-to-end test indexes real files (a Debian package's HTML manual, a
text file, a zero-byte file) with the real all-MiniLM-L6-v2 GGUF in an
engine host, on the window's one scheduler, as a user's click does.
"""

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from engines.library.installed import InstalledModel
from engines.workspace import open_workspace
from tests.fixtures.minilm import minilm_gguf  # noqa: F401  (session fixture)

pytestmark = pytest.mark.gui

DEBIAN_HTML = Path("/usr/share/doc/libffi8/html/Closure-Example.html")


def make_window(qtbot, workspace, monkeypatch):
    from desktop.main_window import MainWindow
    from desktop.pages.chat_controller import ChatController
    from tests.fixtures.fake_host import FakeHost

    monkeypatch.setattr(MainWindow, "ensure_models_page", lambda self: None)
    host = FakeHost()
    window = MainWindow(workspace, ChatController(workspace, host=host))
    window.host = host
    qtbot.addWidget(window)
    window.show()
    window.show_page("Documents")
    return window


def add_minilm(workspace, path) -> InstalledModel:
    return workspace.models.add(InstalledModel("local/all-minilm-l6-v2", "all-MiniLM-L6-v2", str(path),
                                               path.stat().st_size, "llama_cpp", "gguf", "import", kind="embedding"))


def test_without_an_embedding_model_the_page_says_what_to_do(qtbot, monkeypatch):
    from desktop.pages.documents.model_choice import NO_MODEL

    window = make_window(qtbot, open_workspace(), monkeypatch)
    page = window.documents_page
    try:
        assert page.no_model.isVisible() and page.no_model.label.text() == NO_MODEL
        assert "Catalog (all-MiniLM-L6-v2 is small and fast for English" in NO_MODEL
        assert page.create_collection("Taxes") is False
        assert page.banner.text() == "Install an embedding model first (see above): a collection is searched with one."
        assert page.collection_list.count() == 0 and not page.index_button.isEnabled()
        page.no_model.button.click()
        assert window.stack.currentIndex() == 3  # the Models page's place (its slot, in this test)
    finally:
        window.close()


def test_the_grounding_prompt_is_shown_edited_saved_and_restored(qtbot):
    from desktop.pages.settings_page import SettingsPage
    from engines.settings import DEFAULT_GROUNDING_PROMPT

    workspace = open_workspace()
    page = SettingsPage(workspace)
    qtbot.addWidget(page)
    section = page.grounding
    assert section.prompt.toPlainText() == DEFAULT_GROUNDING_PROMPT
    assert section.note.text() == "Atelier's default prompt."
    section.prompt.setPlainText("Answer only from these notes:\n{documents}")
    assert section.save()
    assert open_workspace().settings.grounding_prompt == "Answer only from these notes:\n{documents}"
    assert section.note.text() == "Your own prompt; it applies to the next grounded answer."
    section.prompt.setPlainText("   ")
    assert not section.save()
    assert section.note.text().startswith("The prompt is empty, so it was not saved: the one saved before stays")
    assert open_workspace().settings.grounding_prompt == "Answer only from these notes:\n{documents}"
    section.restore_button.click()
    assert section.prompt.toPlainText() == DEFAULT_GROUNDING_PROMPT
    assert open_workspace().settings.grounding_prompt == DEFAULT_GROUNDING_PROMPT


@pytest.mark.slow
def test_a_collection_is_made_indexed_to_the_end_listed_and_removed(qtbot, monkeypatch, tmp_path,
                                                                    minilm_gguf):  # noqa: F811
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "garden.txt").write_text("The tomato seedlings must be planted out after the last frost, in mid May. "
                                       "Water them every evening during the first week.\n", encoding="utf-8")
    (corpus / "empty.txt").write_bytes(b"")
    workspace = open_workspace()
    add_minilm(workspace, minilm_gguf)
    window = make_window(qtbot, workspace, monkeypatch)
    page = window.documents_page
    try:
        assert not page.no_model.isVisible()
        assert page.model_combo.currentText() == "all-MiniLM-L6-v2"
        events, summaries = [], []
        page.runner.progress.connect(lambda name, p: events.append((name, p.files_done, p.files_total,
                                                                    p.passages_done, p.last)))
        page.runner.finished.connect(lambda name, summary: summaries.append(summary))
        index = page.library.index

        def pause_after_garden(name, on_progress, stop):  # Pause, as pressed while the first text is embedded
            def progress(p):
                on_progress(p)
                if p.last is not None and p.last.state == "indexed":
                    page.runner.pause()
            return index(name, progress, stop)

        monkeypatch.setattr(page.library, "index", pause_after_garden)
        assert page.create_collection("Manuals", [str(corpus), str(DEBIAN_HTML)])
        assert page.index_button.text() == "Pause" and page.progress_bar.isVisible()
        qtbot.waitUntil(lambda: bool(summaries), timeout=600_000)
        paused = summaries.pop()
        assert paused.stopped and paused.indexed == 1 and events[-1][1:3] == (2, 3)  # empty.txt, garden.txt
        assert page.progress_label.text() == ("'Manuals': Paused: 1 files indexed, "
                                              f"{paused.passages} passages embedded; Index resumes where it stopped.")
        shown = {page.files.index(i, 1).data(): page.files.index(i, 0).data() for i in range(page.files.rowCount())}
        # what the run has not reached yet is listed, pending
        assert shown == {"empty.txt": "Skipped", "garden.txt": "Indexed", "Closure-Example.html": "Pending"}

        monkeypatch.setattr(page.library, "index", index)
        events.clear()
        page.index_button.click()  # resumes: the file indexed before is not read again
        qtbot.waitUntil(lambda: bool(summaries), timeout=600_000)
        summary = summaries[0]
        assert (summary.files_total, summary.unchanged, summary.indexed, summary.skipped) == (
            3, 1, 1, [(str(corpus / "empty.txt"), "the file is empty (0 bytes)")])  # garden.txt is not read again
        assert [e[1] for e in events] == sorted(e[1] for e in events) and events[-1][1:3] == (3, 3)
        assert {e[0] for e in events} == {"Manuals"} and events[-1][3] == summary.passages > 0
        assert page.progress_label.text().startswith("'Manuals': Done in ")
        assert page.progress_label.text().endswith(f"3 files, 1 indexed, 1 unchanged, 1 skipped, 0 removed; "
                                                   f"{summary.passages} passages embedded.")
        assert page.index_button.text() == "Index" and not page.progress_bar.isVisible()
        rows = {Path(r["path"]).name: r for r in page.files.rows}
        assert {name: r["state"] for name, r in rows.items()} == {
            "Closure-Example.html": "indexed", "garden.txt": "indexed", "empty.txt": "skipped"}
        shown = {page.files.index(i, 1).data(): (page.files.index(i, 0).data(), page.files.index(i, 2).data())
                 for i in range(page.files.rowCount())}
        assert shown["empty.txt"] == ("Skipped", "the file is empty (0 bytes)")
        assert shown["garden.txt"] == ("Indexed", "1 passage")
        assert page.counts_label.text() == "2 indexed, 1 skipped"
        assert [page.collection_list.item(i).text() for i in range(page.collection_list.count())] == ["Manuals"]
        assert window.chat_page.documents.box.combo.findText("Manuals") == 1  # offered in the chat at once

        (corpus / "garden.txt").write_text("Changed: the seedlings go out in June.\n", encoding="utf-8")
        page.show_files()
        assert {Path(r["path"]).name: r["state"] for r in page.files.rows}["garden.txt"] == "changed"

        page.confirm = lambda title, text: (title, text) == (
            "Remove file", f"Take Closure-Example.html out of 'Manuals'? Its passages are deleted from the index; "
                           "the file itself is not touched.")
        page.table.selectRow(next(i for i, r in enumerate(page.files.rows) if r["path"] == str(DEBIAN_HTML)))
        window.activateWindow()  # a window manager does this; offscreen, the test does
        qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
        page.table.setFocus()
        qtbot.keyClick(page.table, Qt.Key.Key_Delete)  # as the "Remove file…" button, after the same question
        assert sorted(Path(r["path"]).name for r in page.files.rows) == ["empty.txt", "garden.txt"]
        assert page.progress_label.text().startswith("Removed Closure-Example.html: 1 file and ")

        page.confirm = lambda title, text: title == "Remove collection" and text.startswith(
            "Remove the collection 'Manuals'? Its passages and vectors are deleted from the index")
        page.remove_collection_button.click()
        qtbot.waitUntil(lambda: page.collection_list.count() == 0, timeout=60_000)
        assert page.progress_label.text().startswith("Removed 'Manuals': 2 files and ")
        assert page.library.collections() == []
        assert window.chat_page.documents.box.combo.count() == 1  # only "None" left
    finally:
        window.close()


def test_the_progress_line_and_the_file_names_say_where_a_run_is():
    from desktop.pages.documents.file_table import detail_of, shown_name
    from desktop.pages.documents.progress_text import progress_words
    from engines.documents import IndexFileResult, IndexProgress

    early = IndexProgress(4270, files_done=4, passages_done=2, skipped=3, current="/d/adduser/README",
                          seconds_left=65_000)
    assert progress_words(early) == "4 of 4270 files · 2 passages · 3 skipped · last read README"  # no guess yet
    later = IndexProgress(4270, files_done=400, passages_done=900, current="/d/bash/INSTALL.md", seconds_left=4000,
                          last=IndexFileResult("/d/bash/INSTALL.md", "partial"))
    assert progress_words(later) == "400 of 4270 files · 900 passages · about 1 h 07 min left · reading INSTALL.md"
    assert shown_name("/d/adduser/README", ["/x", "/d/"]) == "adduser/README"
    assert shown_name("/elsewhere/a.pdf", ["/d"]) == "a.pdf"
    assert detail_of({"state": "partial", "passages": 12, "pages": 40, "note": "", "reason": ""}) == (
        "12 passages; 40 pages; part of it is indexed; Index resumes after what is stored")


def test_a_pdf_source_opens_at_its_page_where_the_default_viewer_takes_one(monkeypatch, tmp_path):
    import subprocess

    from desktop.chat import citations

    pdf = str(tmp_path / "logbook.pdf")
    defaults = {"value": "org.gnome.Evince.desktop"}
    monkeypatch.setattr(citations.sys, "platform", "linux")
    monkeypatch.setattr(citations.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 0, stdout=defaults["value"] + "\n" if command[1:] == ["query", "default", "application/pdf"] else ""))
    assert citations.page_command(pdf, 3) == ["/usr/bin/evince", "--page-index", "3", pdf]
    defaults["value"] = "okularApplication_pdf.desktop"
    assert citations.page_command(pdf, 3) == ["/usr/bin/okular", "--page", "3", pdf]
    defaults["value"] = "org.pwmt.zathura.desktop"
    assert citations.page_command(pdf, 2) == ["/usr/bin/zathura", "--page", "2", pdf]
    defaults["value"] = "firefox.desktop"  # a viewer that takes no page on its command line: the file is opened
    assert citations.page_command(pdf, 2) is None
    assert citations.page_command(str(tmp_path / "notes.txt"), None) is None


def test_files_dropped_on_the_page_join_the_collection_and_another_model_reindexes_it(qtbot, monkeypatch, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    workspace = open_workspace()
    for stem, name in (("all-minilm-l6-v2-f16", "all-MiniLM-L6-v2"), ("bge-small-en-v1.5-q8_0", "BGE small en v1.5")):
        workspace.models.add(InstalledModel(f"local/{stem}", name, str(tmp_path / f"{stem}.gguf"), 1, "llama_cpp",
                                            "gguf", "import", kind="embedding"))
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n")
    (folder / "song.mp3").write_bytes(b"ID3")
    (tmp_path / "b.txt").write_text("b")
    window = make_window(qtbot, workspace, monkeypatch)
    page = window.documents_page
    started = []
    monkeypatch.setattr(page, "start_indexing", started.append)  # the indexing itself: the end-to-end test
    try:
        assert [page.model_combo.itemText(i) for i in range(page.model_combo.count())] == [
            "all-MiniLM-L6-v2", "BGE small en v1.5"]
        assert page.create_collection("Notes", [str(folder)]) and started == ["Notes"]
        assert [tuple(page.files.index(row, column).data() for column in range(3)) for row in range(2)] == [
            ("Pending", "a.md", "not indexed yet"),
            ("Skipped", "song.mp3", "'.mp3' files are not a document format Atelier reads (PDF, DOCX, EPUB, HTML, "
                                    "Markdown, text, source code)")]
        assert not page.create_collection("Notes")
        assert page.banner.text() == "There is already a collection named 'Notes': choose another name."

        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "b.txt"))])
        page.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                  Qt.KeyboardModifier.NoModifier))
        assert sorted(page.library.sources("Notes")) == [str(tmp_path / "b.txt"), str(folder)]
        assert started == ["Notes", "Notes"] and page.files.rowCount() == 3

        asked = []
        page.confirm = lambda title, text: asked.append((title, text)) or True
        page.model_combo.setCurrentIndex(1)
        page.model_combo.activated.emit(1)
        assert asked == [("Change the embedding model", "Index 'Notes' again with BGE small en v1.5? Every file is "
                          "embedded again; until then the collection answers from what is re-indexed.")]
        collection = page.library.collection("Notes")
        assert (collection.model_name, Path(collection.model_path).name) == (
            "BGE small en v1.5", "bge-small-en-v1.5-q8_0.gguf")
        assert started == ["Notes"] * 3
    finally:
        window.close()


def test_the_chat_documents_box_says_where_the_passages_go(qtbot):
    from desktop.chat.chat_documents import DocumentsBox

    box = DocumentsBox()
    qtbot.addWidget(box)
    box.set_collections([], None)
    assert box.note.text() == "No collections yet: make one on the Documents page, then attach it here."
    box.set_collections(["Taxes"], "Gone")  # attached, then removed on the Documents page: still shown, marked
    assert [box.combo.itemText(i) for i in range(box.combo.count())] == ["None", "Taxes", "Gone (removed)"]
    box.combo.setCurrentIndex(1)
    assert box.note.text() == "Answers come from 'Taxes' and list their sources under them."
    box.set_remote("lab")
    assert box.note.text() == ("Answers come from 'Taxes'. The model runs on the remote server 'lab', so the "
                               "passages found are sent to it with your question.")


def test_a_grounded_turn_asks_the_shared_grounding_and_stop_during_the_search_writes_nothing(qtbot, monkeypatch,
                                                                                             tmp_path):
    """Fast: FakeHost for the chat model, the grounding function stood in for (the slow test runs the real one)."""
    import threading

    from engines.api import ChatMessage
    from engines.documents import Grounding, grounding as grounding_module
    from engines.settings import LoadPrefs

    workspace = open_workspace()
    model = workspace.models.add(InstalledModel("local/fake", "Fake", str(tmp_path / "fake.gguf"), 1, "llama_cpp",
                                                "gguf", "import"))
    workspace.settings.last_model_id = model.id
    workspace.settings.load_prefs[model.id] = LoadPrefs(context_length=8192)
    workspace.settings.grounding_prompt = "Use these: {documents}"
    window = make_window(qtbot, workspace, monkeypatch)
    window.documents_page.library.add("Notes", [], str(tmp_path / "minilm.gguf"), "MiniLM")
    page = window.chat_page
    calls, searching, release = [], threading.Event(), threading.Event()

    def grounded_request(library, collection, request, context, template):
        calls.append((collection, request.messages[-1].content, context, template))
        searching.set()
        release.wait(60)
        return Grounding("Use these: [1] a.md\nA", (), "excerpts"), request.__class__(
            (ChatMessage("system", "Use these: [1] a.md\nA"), *request.messages), request.sampling)

    monkeypatch.setattr(grounding_module, "grounded_request", grounded_request)
    try:
        page.documents.attach("Notes")
        page.composer.setPlainText("What is in my notes?")
        page.send_button.click()
        qtbot.waitUntil(searching.is_set, timeout=60_000)
        page.stop_button.click()
        release.set()
        qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=60_000)
        assert calls == [("Notes", "What is in my notes?", 8192, "Use these: {documents}")]
        assert window.host.requests == []  # stopped before the model was asked
        assert [m.role for m in window.chat_controller.messages()][:1] == ["user"]
        assert all(m.content == "" for m in window.chat_controller.messages() if m.role == "assistant")

        searching.clear()
        page.composer.setPlainText("And now?")
        page.send_button.click()  # not stopped: the model gets the grounded system message first
        qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=60_000)
        assert window.host.requests[-1].messages[0] == ChatMessage("system", "Use these: [1] a.md\nA")

        monkeypatch.undo()  # the real grounding: the collection was removed since it was attached
        window.documents_page.library.remove("Notes")
        page.composer.setPlainText("And the third?")
        page.send_button.click()
        qtbot.waitUntil(lambda: not window.chat_controller.streaming, timeout=60_000)
        assert page.banner.text() == ("The collection 'Notes' attached to this chat no longer exists: attach another "
                                      "in the Documents box, or choose None.")
        assert len(window.host.requests) == 1
    finally:
        window.close()


def test_a_second_collection_is_indexed_when_the_run_in_hand_ends(qtbot, monkeypatch, tmp_path):
    import threading

    from engines.documents import IndexSummary

    workspace = open_workspace()
    workspace.models.add(InstalledModel("local/minilm", "all-MiniLM-L6-v2", str(tmp_path / "minilm.gguf"), 1,
                                        "llama_cpp", "gguf", "import", kind="embedding"))
    window = make_window(qtbot, workspace, monkeypatch)
    page = window.documents_page
    gates, ran = {"A": threading.Event(), "B": threading.Event()}, []

    def index(name, on_progress, stop):  # the real run is the end-to-end test's; here only the order matters
        ran.append(name)
        gates[name].wait(60)
        return IndexSummary(name, 1, indexed=1, passages=2, seconds=1.0)

    monkeypatch.setattr(page.library, "index", index)
    try:
        for name in ("A", "B"):
            page.library.add(name, [], str(tmp_path / "minilm.gguf"), "all-MiniLM-L6-v2")
        page.refresh(select="A")
        assert page.start_indexing("A")
        assert not page.start_indexing("B")
        assert page.banner.text() == "'B' is indexed when 'A' is done."
        qtbot.waitUntil(lambda: ran == ["A"], timeout=60_000)
        gates["A"].set()
        qtbot.waitUntil(lambda: ran == ["A", "B"], timeout=60_000)
        assert page.progress_label.text() == "Indexing 'B'…" and not page.banner.isVisible()
        gates["B"].set()
        qtbot.waitUntil(lambda: not page.runner.running and page.progress_label.text().startswith("'B': Done"),
                        timeout=60_000)
    finally:
        for gate in gates.values():
            gate.set()
        window.close()
