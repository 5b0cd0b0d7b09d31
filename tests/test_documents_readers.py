"""Documents, without a model: reading every format, refusing bad files with their reason, splitting, storing.

The end-to-end tests (a real embedding model in an engine host, the CLI)
are in tests/test_documents_cli.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.doc_index import file_bytes
from engines.doc_index.file_bytes import Unreadable, read_document_bytes
from engines.doc_index.passages import split_passages
from engines.doc_index.readers import decode_text, read_document
from engines.doc_index.store import DocumentStore, NewPassage
from tests.fixtures.documents_corpus import PDF_PAGES, write_bad_files, write_docx, write_epub, write_pdf


def read(path: Path):
    return read_document(str(path), read_document_bytes(str(path)).data)


def test_pdf_text_is_kept_per_page_with_its_number(tmp_path):
    document = read(write_pdf(tmp_path / "harbour.pdf"))
    assert document.format == "pdf"
    assert [page for page, _ in document.pages] == [1, 2, 3]
    assert [" ".join(text.split()) for _, text in document.pages] == list(PDF_PAGES)
    assert document.note == ""


def test_docx_epub_html_and_markdown_give_their_visible_text(tmp_path):
    docx = read(write_docx(tmp_path / "memo.docx", ["First paragraph.", "Second paragraph."]))
    assert docx.pages == ((None, "First paragraph.\nSecond paragraph."),)
    epub = read(write_epub(tmp_path / "book.epub", ["It was a dark night.", "Morning came."]))
    assert epub.pages == ((None, "C0\nChapter 1\nIt was a dark night.\n\nC1\nChapter 2\nMorning came."),)
    (tmp_path / "page.html").write_bytes(b"<html><head><script>var x = 1;</script><style>b{}</style></head>"
                                         b"<body><h1>Title</h1><p>Some  <b>bold</b>\n text.</p><ul><li>one</li>"
                                         b"<li>two</li></ul></body></html>")
    assert read(tmp_path / "page.html").pages == ((None, "Title\nSome bold text.\none\ntwo"),)
    (tmp_path / "notes.md").write_text("# Notes\r\n\r\n- a *b*\r\n", encoding="utf-8")
    assert read(tmp_path / "notes.md").pages == ((None, "# Notes\n\n- a *b*\n"),)


def test_real_html_documentation_from_debian_is_read():
    page = Path("/usr/share/doc/libffi8/html/The-Closure-API.html")
    if not page.exists():
        pytest.skip("libffi8's HTML documentation is not installed here")
    text = read(page).pages[0][1]
    assert text.startswith("The Closure API (libffi: the portable foreign function interface library)")
    assert "ffi_closure_alloc" in text and "<" not in text[:200]


FRENCH = ("Le château se trouve au bord de la rivière. Après le déjeuner, nous sommes allés à la forêt où les "
          "élèves ont étudié les arbres. Ça a été une journée très agréable, même s'il a plu à la fin.")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "shift_jis"])
def test_text_in_common_encodings_is_decoded(encoding):
    text = "日本語のテキストです。東京は日本の首都です。" if encoding == "shift_jis" else FRENCH
    if encoding == "cp1252":
        text += " Le billet coûte 15 € — merci."
    assert decode_text(text.encode(encoding)) == text


def test_bad_files_are_refused_each_with_its_reason(tmp_path):
    expected = write_bad_files(tmp_path)
    reasons = {}
    for name in expected:
        with pytest.raises(Unreadable) as refused:
            read(tmp_path / name)
        reasons[name] = str(refused.value)
    assert reasons == expected
    with pytest.raises(Unreadable) as truncated:
        read(tmp_path / "truncated.pdf")
    assert str(truncated.value).startswith("the PDF is damaged or truncated (")


def test_a_pdf_with_some_pages_without_text_says_which(tmp_path):
    document = read(write_pdf(tmp_path / "mixed.pdf", ("Page one has words.", "", "Page three too.")))
    assert [page for page, _ in document.pages] == [1, 3]
    assert document.note == "1 of 3 pages have no text layer (pages 2) and were left out"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(Unreadable) as refused:
        read_document_bytes(str(tmp_path / "pipe.txt"))
    assert str(refused.value) == "not a regular file (it is a FIFO (named pipe))"


def test_a_file_that_changes_while_it_is_read_is_skipped(tmp_path, monkeypatch):
    path = tmp_path / "log.txt"
    path.write_text("first line\n")
    real_read_all = file_bytes._read_all

    def read_then_append(handle, size):
        data = real_read_all(handle, size)
        with open(path, "a") as writer:
            writer.write("a line written during the read\n")
        return data

    monkeypatch.setattr(file_bytes, "_read_all", read_then_append)
    with pytest.raises(Unreadable) as refused:
        read_document_bytes(str(path))
    assert str(refused.value) == "the file changed while it was being read; it will be read again on the next run"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_skipped(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("x")
    path.chmod(0)
    with pytest.raises(Unreadable) as refused:
        read_document_bytes(str(path))
    assert str(refused.value) == "permission denied: Atelier may not read this file"


def test_passages_overlap_keep_their_page_and_exact_span():
    words = " ".join(f"w{i}" for i in range(100))
    pages = ((1, words), (2, "short page"))
    passages = split_passages(pages, lambda word: 1, passage_tokens=30, overlap_tokens=5)
    for passage in passages:
        assert dict(pages)[passage.page][passage.start:passage.end] == passage.text
    first, second = passages[0], passages[1]
    assert first.text.split() == [f"w{i}" for i in range(30)] and first.tokens == 30
    assert second.text.split()[:5] == [f"w{i}" for i in range(25, 30)]  # 5 tokens of overlap
    assert passages[-1].page == 2 and passages[-1].text == "short page"
    assert [p.ordinal for p in passages] == list(range(len(passages)))
    assert max(int(w[1:]) for p in passages if p.page == 1 for w in p.text.split()) == 99


def test_a_long_unbroken_word_is_cut_so_no_passage_overflows():
    text = "x" * 1000
    passages = split_passages(((None, text),), lambda word: len(word), passage_tokens=256, overlap_tokens=32)
    assert all(p.tokens <= 256 for p in passages)
    assert "".join(p.text for p in passages[::1]).count("x") >= 1000


def _passage(ordinal: int) -> NewPassage:
    return NewPassage(ordinal, None, ordinal * 10, ordinal * 10 + 9, 3, f"passage {ordinal}", b"\0" * 16)


def test_a_resumed_file_keeps_its_stored_passages_and_never_stores_one_twice(tmp_path):
    store = DocumentStore(tmp_path / "documents.sqlite3")
    collection = store.create_collection("c", "/m.gguf", "m", passage_tokens=256, overlap_tokens=32, query_prefix="",
                                         document_prefix="", threshold=0.3)
    args = dict(sha256="abc", size=10, mtime_ns=1, format="text", pages=None, characters=100, note="")
    file_id, stored = store.begin_file(collection.id, "/doc.txt", **args)
    assert stored == 0
    store.add_passages(collection.id, file_id, [_passage(0), _passage(1)], 4)
    # the process died here; the next run asks again for the same content
    file_id_again, stored = store.begin_file(collection.id, "/doc.txt", **args)
    assert (file_id_again, stored) == (file_id, 2)
    store.add_passages(collection.id, file_id, [_passage(1)], 4)  # another indexer's copy of a stored passage
    assert store.counts(collection) == (1, 2)
    store.add_passages(collection.id, file_id, [_passage(2)], 4)
    store.finish_file(file_id)
    assert store.counts(collection) == (1, 3)
    # new content: the old passages go
    _, stored = store.begin_file(collection.id, "/doc.txt", **{**args, "sha256": "def"})
    assert stored == 0 and store.counts(collection) == (1, 0)
    store.close()


def test_removing_a_collection_leaves_none_of_its_text_in_the_database_files(tmp_path):
    path = tmp_path / "documents.sqlite3"
    store = DocumentStore(path)
    collection = store.create_collection("c", "/m.gguf", "m", passage_tokens=256, overlap_tokens=32, query_prefix="",
                                         document_prefix="", threshold=0.3)
    file_id, _ = store.begin_file(collection.id, "/doc.txt", sha256="a", size=1, mtime_ns=1, format="text",
                                  pages=None, characters=1, note="")
    secret = NewPassage(0, None, 0, 30, 5, "zanzibarquokka confidential memo", b"\0" * 16)
    store.add_passages(collection.id, file_id, [secret], 4)
    assert store.remove_collection(collection) == (1, 1)
    store.close()
    for name in os.listdir(tmp_path):
        assert b"zanzibarquokka" not in (tmp_path / name).read_bytes(), name


def test_a_damaged_database_is_set_aside_with_a_sentence(tmp_path):
    path = tmp_path / "documents.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = DocumentStore(path)
    assert store.collections() == []
    assert store.problem.startswith("The documents index (documents.sqlite3) could not be read (")
    assert "a new, empty index was started: add your folders again." in store.problem
    store.close()


def test_the_catalog_offers_embedding_models_including_a_multilingual_one():
    from engines.library.catalog import CatalogEntry, load_catalog

    catalog = load_catalog()
    embedding = {e.id: e for e in catalog.entries if e.kind == "embedding"}
    assert sorted(embedding) == ["all-minilm-l6-v2-q8_0", "bge-small-en-v1.5-q8_0", "multilingual-e5-small-q8_0",
                                 "nomic-embed-text-v1.5-q8_0"]
    assert all(e.format == "gguf" and e.engine == "llama_cpp" and e.arch is not None for e in embedding.values())
    assert "multilingual" in embedding["multilingual-e5-small-q8_0"].tags
    raw = embedding["all-minilm-l6-v2-q8_0"].model_dump()
    with pytest.raises(ValueError, match="an embedding entry has no vision projector"):
        CatalogEntry.model_validate({**raw, "projector": raw["files"][0]["path"]})


class _Library:
    """The two things grounding asks of a DocumentLibrary: a store, and a search (fixed here)."""

    def __init__(self, path: Path, result) -> None:
        self.path, self.result = path, result

    def store(self) -> DocumentStore:
        return DocumentStore(self.path)

    def query(self, name, question, top_k):
        return self.result


def test_grounding_gives_the_whole_text_when_it_fits_else_the_best_excerpts_with_the_users_template(tmp_path):
    from engines.doc_index.types import PassageHit, SearchResult
    from engines.documents import ground

    text = " ".join(f"w{i}" for i in range(60))
    passages = split_passages(((3, text),), lambda word: 1, passage_tokens=20, overlap_tokens=5)
    path = tmp_path / "documents.sqlite3"
    with DocumentStore(path) as store:
        collection = store.create_collection("c", "/m.gguf", "m", passage_tokens=20, overlap_tokens=5,
                                             query_prefix="", document_prefix="", threshold=0.3)
        file_id, _ = store.begin_file(collection.id, "/docs/a.pdf", sha256="a", size=1, mtime_ns=1, format="pdf",
                                      pages=3, characters=len(text), note="")
        store.add_passages(collection.id, file_id, [NewPassage(p.ordinal, p.page, p.start, p.end, p.tokens, p.text,
                                                               b"\0" * 16) for p in passages], 4)
        store.finish_file(file_id)
    hit = PassageHit(2, "/docs/a.pdf", 3, passages[1].start, passages[1].end, passages[1].text, 0.03, 0.6)
    library = _Library(path, SearchResult((hit,), len(passages), 0.6, 0.3, "m"))
    template = "Use {these} words: {documents}"
    whole = ground(library, "c", "q", 10_000, template)
    assert whole.mode == "full_text" and whole.citations == (hit,)
    assert whole.system == "Use {these} words: [/docs/a.pdf, page 3]\n" + text  # rebuilt exactly from overlaps
    excerpt = ground(library, "c", "q", 200, template)
    assert excerpt.mode == "excerpts"
    assert excerpt.system == f"Use {{these}} words: [1] /docs/a.pdf, page 3\n{passages[1].text}"
    nothing = ground(_Library(path, SearchResult((), len(passages), 0.12, 0.3, "m")), "c", "q", 10_000, template)
    assert nothing.mode == "nothing" and nothing.citations == ()
    assert nothing.notice == ("Nothing relevant was found in 'c': the closest of its 4 passages has a similarity of "
                              "0.12, below the 0.30 a relevant passage needs.")
    assert nothing.system.startswith("No passage of the user's document collection 'c' is relevant to this question.")
