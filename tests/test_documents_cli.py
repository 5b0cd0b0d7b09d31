"""``atelier docs`` end to end: the real all-MiniLM-L6-v2 in an engine host, real documents, the real CLI.

Every test runs the console script as a user does (tests/fixtures/cli_runner.py)
in the test's own ATELIER_HOME, so the database, the engine host and the
scheduler are the ones a user gets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.cli_runner import atelier_script, cli_env, error_lines, run_atelier
from tests.fixtures.documents_corpus import write_bad_files, write_docx, write_epub, write_pdf
from tests.fixtures.minilm import minilm_gguf  # noqa: F401  (session fixture)
from tests.fixtures.waits import wait_until

pytestmark = pytest.mark.slow

DEBIAN_HTML = Path("/usr/share/doc/libffi8/html/Closure-Example.html")


def out(run: subprocess.CompletedProcess) -> str:
    return run.stdout.decode("utf-8", "backslashreplace")


def ok(run: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert run.returncode == 0, error_lines(run)
    return run


def make_corpus(root: Path) -> Path:
    corpus = root / "corpus"
    corpus.mkdir()
    write_pdf(corpus / "harbour.pdf")
    (corpus / "notes.md").write_text("# Garden\n\nThe tomato seedlings must be planted out after the last frost, "
                                     "in mid May.\n", encoding="utf-8")
    write_docx(corpus / "memo.docx", ["The annual general meeting of the rowing club is on the third Sunday of "
                                      "March, in the boathouse."])
    write_epub(corpus / "novel.epub", ["Captain Mirren sailed the schooner Albatross around Cape Horn in winter."])
    (corpus / "fib.py").write_text("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
                                   "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n")
    (corpus / "cafe.txt").write_bytes("Le café ouvre à sept heures et ferme à minuit, sauf le dimanche où il est "
                                      "fermé toute la journée.".encode("cp1252"))
    (corpus / ".hidden.txt").write_text("never indexed")
    return corpus


def docs_json(*args: str) -> dict:
    return json.loads(out(ok(run_atelier("docs", *args, "--json"))))


def test_add_list_query_and_remove_real_documents(tmp_path, minilm_gguf):  # noqa: F811
    corpus = make_corpus(tmp_path)
    bad = write_bad_files(corpus / "bad")
    os.close(os.open(os.fsencode(str(corpus)) + b"/caf\xe9-latin1-name.txt", os.O_CREAT | os.O_WRONLY))
    added = ok(run_atelier("docs", "add", "mine", str(corpus), "--embedding-model", str(minilm_gguf)))
    lines = out(added).splitlines()
    assert lines[0] == "mine: 15 files, 6 indexed, 0 unchanged, 9 skipped, 0 removed; " + lines[0].split("; ")[1]
    assert lines[0].split("; ")[1].startswith("8 passages embedded in ")
    skipped = {line.split(": ", 1)[0].removeprefix("  skipped "): line.split(": ", 1)[1] for line in lines[1:]}
    assert skipped == {
        **{str(corpus / "bad" / name): reason for name, reason in bad.items()},
        str(corpus / "bad" / "truncated.pdf"): skipped[str(corpus / "bad" / "truncated.pdf")],
        str(corpus) + "/caf\\xe9-latin1-name.txt": "the file name is not valid UTF-8; rename the file to index it",
    }
    assert skipped[str(corpus / "bad" / "truncated.pdf")].startswith("the PDF is damaged or truncated (")
    assert "indexing: 15/15 files, 8 passages" in added.stderr.decode()

    listed = docs_json("list", "mine")
    states = {Path(f["path"]).name: (f["state"], f["passages"]) for f in listed["files"]}
    assert states["harbour.pdf"] == ("indexed", 3) and states["notes.md"] == ("indexed", 1)
    assert {states[n][0] for n in ("memo.docx", "novel.epub", "fib.py", "cafe.txt")} == {"indexed"}
    assert states["huge.txt"] == ("skipped", 0) and ".hidden.txt" not in states
    assert listed["dimensions"] == 384 and listed["model_path"] == str(minilm_gguf)

    page_two = docs_json("query", "mine", "How much are the harbour dues for a small fishing boat?", "--top", "3")
    best = page_two["hits"][0]
    assert (Path(best["path"]).name, best["page"]) == ("harbour.pdf", 2)
    assert best["text"].startswith("Harbour dues for fishing vessels under twelve metres are forty euros")
    assert best["similarity"] >= page_two["threshold"]
    lamp = docs_json("query", "mine", "When was the lamp at Point Reyes first lit?")["hits"][0]
    assert (Path(lamp["path"]).name, lamp["page"]) == ("harbour.pdf", 1)
    cafe = docs_json("query", "mine", "café dimanche")["hits"][0]
    assert Path(cafe["path"]).name == "cafe.txt" and "ouvre à sept heures" in cafe["text"]

    nothing = ok(run_atelier("docs", "query", "mine", "the pharmacokinetics of monoclonal antibodies"))
    assert out(nothing).startswith("Nothing relevant was found in 'mine': the closest of its 8 passages has a "
                                   "similarity of 0.")

    # A second run reads nothing unchanged; a changed file is embedded again; a deleted one leaves the index.
    (corpus / "notes.md").write_text("# Garden\n\nSow the carrots directly in April.\n", encoding="utf-8")
    (corpus / "memo.docx").unlink()
    states = {Path(f["path"]).name: f["state"] for f in docs_json("list", "mine")["files"]}
    assert (states["notes.md"], states["memo.docx"], states["fib.py"]) == ("changed", "deleted", "indexed")
    again = out(ok(run_atelier("docs", "add", "mine", str(corpus)))).splitlines()[0]
    assert again.startswith("mine: 14 files, 1 indexed, 4 unchanged, 9 skipped, 1 removed; 1 passages embedded in ")
    carrots = docs_json("query", "mine", "When do I sow carrots?")["hits"][0]
    assert Path(carrots["path"]).name == "notes.md" and "carrots" in carrots["text"]

    removed = ok(run_atelier("docs", "remove", "mine", str(corpus / "harbour.pdf")))
    assert out(removed).strip() == "Removed 1 path(s) from 'mine': 1 files and 3 passages deleted from the index."
    # taken out of a folder the collection holds, it stays out when the folder is read again, until added again
    refreshed = out(ok(run_atelier("docs", "add", "mine", str(corpus)))).splitlines()[0]
    assert refreshed.startswith("mine: 13 files, 0 indexed, 4 unchanged, 9 skipped, 0 removed")
    listed = docs_json("list", "mine")
    assert listed["excluded"] == [str(corpus / "harbour.pdf")]
    assert "harbour.pdf" not in {Path(f["path"]).name for f in listed["files"]}
    back = out(ok(run_atelier("docs", "add", "mine", str(corpus / "harbour.pdf")))).splitlines()[0]
    assert back.startswith("mine: 14 files, 1 indexed, 4 unchanged, 9 skipped, 0 removed; 3 passages embedded")
    assert docs_json("list", "mine")["excluded"] == []
    ok(run_atelier("docs", "remove", "mine", str(corpus / "harbour.pdf")))  # a source of its own now: just removed
    gone = ok(run_atelier("docs", "remove", "mine"))
    assert out(gone).strip() == "Removed 'mine': 13 files and 4 passages deleted from the index."
    assert docs_json("list") == {"collections": []}
    database = Path(os.environ["ATELIER_HOME"]) / "data" / "documents.sqlite3"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM passages").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'tomato OR carrots'").fetchone()[0] == 0


def test_bad_requests_are_one_error_line(tmp_path, minilm_gguf):  # noqa: F811
    (tmp_path / "a.txt").write_text("Some text.")
    missing = run_atelier("docs", "add", "x", str(tmp_path / "a.txt"))
    assert (missing.returncode, error_lines(missing)) == (2, [
        "error: the new collection 'x' needs an embedding model: pass --embedding-model ID_OR_PATH (a GGUF "
        "embedding model such as all-MiniLM-L6-v2; 'atelier models list --catalog' lists some)"])
    nowhere = run_atelier("docs", "add", "x", str(tmp_path / "nowhere"), "--embedding-model", str(minilm_gguf))
    assert (nowhere.returncode, error_lines(nowhere)) == (2, [f"error: Not found: {tmp_path / 'nowhere'}"])
    unknown = run_atelier("docs", "query", "nope", "anything")
    assert (unknown.returncode, error_lines(unknown)) == (2, [
        "error: There is no collection named 'nope' (there are no collections yet: 'atelier docs add NAME "
        "PATH...' makes one)."])
    top = run_atelier("docs", "query", "nope", "anything", "--top", "0")
    assert (top.returncode, error_lines(top)) == (2, ["error: --top must be between 1 and 100"])


def indexed_files(database: Path) -> int:
    """Files marked indexed, read as another process would while the indexer writes."""
    if not database.exists():
        return 0
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        try:
            return db.execute("SELECT count(*) FROM files WHERE state = 'indexed'").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is being created
            return 0


def _notes(folder: Path, count: int) -> None:
    folder.mkdir()
    for number in range(count):
        (folder / f"note-{number:02d}.txt").write_text(f"Note {number}: the parcel number {number * 7} was "
                                                        f"delivered to warehouse {number % 5}.")


def test_a_kill_9_midway_resumes_with_no_passage_stored_twice(tmp_path, minilm_gguf):  # noqa: F811
    corpus = tmp_path / "many"
    _notes(corpus, 40)
    database = Path(os.environ["ATELIER_HOME"]) / "data" / "documents.sqlite3"
    child = subprocess.Popen([atelier_script(), "docs", "add", "many", str(corpus), "--embedding-model",
                              str(minilm_gguf)], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    try:
        wait_until(lambda: indexed_files(database) >= 3, "three files indexed", child)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.communicate()
    done_before = indexed_files(database)
    assert 3 <= done_before < 40, "the run ended before it could be killed midway"
    resumed = out(ok(run_atelier("docs", "add", "many", str(corpus)))).splitlines()[0]
    assert resumed.startswith(f"many: 40 files, {40 - done_before} indexed, {done_before} unchanged, 0 skipped, "
                              f"0 removed; ")
    # one file may have had its passage stored and not yet been marked done when the kill came
    embedded = int(resumed.split("; ")[1].split()[0])
    assert embedded in (40 - done_before, 40 - done_before - 1)
    with sqlite3.connect(database) as db:
        per_file = db.execute("SELECT f.path, count(p.id) FROM files f LEFT JOIN passages p ON p.file_id = f.id "
                              "GROUP BY f.id").fetchall()
    assert len(per_file) == 40 and {count for _, count in per_file} == {1}


def test_chat_with_docs_answers_with_its_citations_and_says_when_nothing_is_relevant(tmp_path, minilm_gguf,  # noqa: F811
                                                                                      gemma_path):
    corpus = make_corpus(tmp_path)
    ok(run_atelier("docs", "add", "mine", str(corpus), "--embedding-model", str(minilm_gguf)))
    grounded = json.loads(out(ok(run_atelier(
        "chat", "--model", str(gemma_path), "--docs", "mine", "--prompt", "How much are the harbour dues for a "
        "fishing boat?", "--max-tokens", "16", "--seed", "1", "--json"))))
    # The whole collection (8 short passages) fits in 4,096 tokens: the model gets all of it, and the sources
    # are the passages the search found relevant, best first.
    assert grounded["grounding"] == "full_text" and grounded["notice"] is None
    first = grounded["citations"][0]
    assert (Path(first["path"]).name, first["page"], first["number"]) == ("harbour.pdf", 2, 1)
    assert first["text"].startswith("Harbour dues for fishing vessels under twelve metres")
    assert grounded["prompt_tokens"] > 300  # every document went in, not only the question

    small = json.loads(out(ok(run_atelier(
        "chat", "--model", str(gemma_path), "--docs", "mine", "--prompt", "How much are the harbour dues for a "
        "fishing boat?", "--ctx", "256", "--max-tokens", "8", "--seed", "1", "--json"))))
    assert small["grounding"] == "excerpts"  # a 256-token context takes only the best passages
    assert [Path(c["path"]).name for c in small["citations"]][:1] == ["harbour.pdf"]

    nothing = run_atelier("chat", "--model", str(gemma_path), "--docs", "mine", "--prompt",
                          "the pharmacokinetics of monoclonal antibodies", "--max-tokens", "8", "--seed", "1")
    assert nothing.returncode == 0, error_lines(nothing)
    notes = [line for line in error_lines(nothing) if line.startswith("note: Nothing relevant")]
    assert notes and notes[0].startswith("note: Nothing relevant was found in 'mine': the closest of its 8 passages "
                                         "has a similarity of 0.")
    assert "Sources" not in out(nothing)
    text = ok(run_atelier("chat", "--model", str(gemma_path), "--docs", "mine", "--prompt", "When was the lamp at "
                          "Point Reyes first lit?", "--max-tokens", "8", "--seed", "1"))
    sources = out(text).split("Sources (the whole collection was given to the model):\n")[1].splitlines()
    assert sources[0].startswith(f"[1] {corpus / 'harbour.pdf'}, page 1, characters 0-")
    raw = run_atelier("chat", "--model", str(gemma_path), "--docs", "mine", "--prompt", "x", "--raw")
    assert (raw.returncode, error_lines(raw)) == (2, ["error: --docs needs chat mode (the documents go in a system "
                                                      "message); drop --raw"])


def test_ctrl_c_pauses_and_the_same_command_resumes(tmp_path, minilm_gguf):  # noqa: F811
    corpus = tmp_path / "many"
    _notes(corpus, 30)
    database = Path(os.environ["ATELIER_HOME"]) / "data" / "documents.sqlite3"
    child = subprocess.Popen([atelier_script(), "docs", "add", "many", str(corpus), "--embedding-model",
                              str(minilm_gguf)], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    wait_until(lambda: indexed_files(database) >= 2, "two files indexed", child)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate()
    assert child.returncode == 130, stderr
    assert ("note: paused: what was indexed of 'many' is kept; run the same command again to resume"
            in stderr.decode().splitlines())
    done_before = indexed_files(database)
    assert done_before < 30, "the run ended before Ctrl-C"
    resumed = out(ok(run_atelier("docs", "add", "many", str(corpus)))).splitlines()[0]
    assert resumed.startswith(f"many: 30 files, {30 - done_before} indexed, {done_before} unchanged, 0 skipped")
    assert docs_json("list")["collections"][0]["passages"] == 30


def test_another_embedding_model_indexes_the_collection_again(tmp_path, minilm_gguf):  # noqa: F811
    corpus = tmp_path / "few"
    _notes(corpus, 3)
    other = tmp_path / "models" / "minilm-copy.gguf"
    other.parent.mkdir()
    shutil.copyfile(minilm_gguf, other)
    ok(run_atelier("docs", "add", "few", str(corpus), "--embedding-model", str(minilm_gguf)))
    same = out(ok(run_atelier("docs", "add", "few", str(corpus), "--embedding-model", str(minilm_gguf))))
    assert same.startswith("few: 3 files, 0 indexed, 3 unchanged,")
    again = out(ok(run_atelier("docs", "add", "few", str(corpus), "--embedding-model", str(other))))
    assert again.startswith("few: 3 files, 3 indexed, 0 unchanged, 0 skipped, 0 removed; 3 passages embedded in ")
    listed = docs_json("list", "few")
    assert listed["model_path"] == str(other) and listed["model"] == "minilm-copy"
    assert [f["state"] for f in listed["files"]] == ["indexed"] * 3


def test_embedding_models_in_the_catalog_have_verdicts_and_a_missing_one_names_the_pull(tmp_path):
    listed = json.loads(out(ok(run_atelier("models", "list", "--catalog", "--json"))))
    rows = {row["id"]: row for row in listed["models"]
            if row["kind"] == "embedding"}
    assert len(rows) == 4 and all(row["verdict"] != "wont_fit" for row in rows.values())
    speed = rows["all-minilm-l6-v2-q8_0"]["speed"]  # what indexing reads a second, not a decode rate
    assert speed["unit"] == "tokens/s" and speed["basis"].startswith("22 MFLOP per token read, at 14% of the ")
    (tmp_path / "a.txt").write_text("Some text.")
    missing = run_atelier("docs", "add", "x", str(tmp_path / "a.txt"), "--embedding-model", "all-minilm-l6-v2-q8_0")
    assert (missing.returncode, error_lines(missing)) == (2, [
        "error: all-MiniLM-L6-v2 is in the catalog but not downloaded yet. Get it with 'atelier models pull "
        "all-minilm-l6-v2-q8_0'."])


def test_files_of_formats_atelier_does_not_read_are_one_line_per_kind(tmp_path, minilm_gguf):  # noqa: F811
    corpus = tmp_path / "mixed"
    corpus.mkdir()
    (corpus / "notes.txt").write_text("The boiler is serviced every October.")
    for name in ("a.gz", "b.gz", "c.gz", "photo.jpg", "tune.mp3"):
        (corpus / name).write_bytes(b"\x1f\x8b not a document")
    lines = out(ok(run_atelier("docs", "add", "m", str(corpus), "--embedding-model", str(minilm_gguf)))).splitlines()
    assert lines[0].startswith("m: 6 files, 1 indexed, 0 unchanged, 5 skipped, 0 removed; 1 passages embedded in ")
    assert lines[1:] == ["  skipped 3 file(s): '.gz' files are not a document format Atelier reads",
                         "  skipped 1 file(s): '.jpg' files are not a document format Atelier reads",
                         "  skipped 1 file(s): '.mp3' files are not a document format Atelier reads"]
    listed = {Path(f["path"]).name: f["reason"] for f in docs_json("list", "m")["files"]}
    assert listed["photo.jpg"] == ("'.jpg' files are not a document format Atelier reads (PDF, DOCX, EPUB, HTML, "
                                   "Markdown, text, source code)")
