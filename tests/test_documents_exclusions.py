"""A file taken out of a folder the collection holds stays out of the walk, and an older index gains the table."""

from __future__ import annotations

import sqlite3

from engines.doc_index.store import SCHEMA_VERSION, DocumentStore
from engines.documents.library import walk_sources


def _collection(store: DocumentStore):
    return store.create_collection("notes", "/models/minilm.gguf", "minilm", passage_tokens=256, overlap_tokens=32,
                                   query_prefix="", document_prefix="", threshold=0.3)


def test_the_walk_leaves_out_excluded_files_and_folders(tmp_path) -> None:
    folder = tmp_path / "notes"
    (folder / "old").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "old/c.txt", "old/d.txt"):
        (folder / name).write_text(name)
    every = walk_sources([str(folder)])[0]
    assert [p.removeprefix(str(folder) + "/") for p in every] == ["a.txt", "b.txt", "old/c.txt", "old/d.txt"]
    kept, _ = walk_sources([str(folder)], [str(folder / "b.txt"), str(folder / "old")])
    assert kept == [str(folder / "a.txt")]


def test_include_clears_the_path_and_what_is_inside_it_only(tmp_path) -> None:
    with DocumentStore(tmp_path / "documents.sqlite3") as store:
        notes = _collection(store)
        store.exclude(notes, ["/n/old/c.txt", "/n/old", "/n/older/x.txt", "/n/b.txt"])
        store.include(notes, ["/n/old"])
        assert store.excluded(notes) == ["/n/b.txt", "/n/older/x.txt"]  # /n/older is not inside /n/old
        store.remove_collection(notes)
        assert store.excluded(notes) == []


def test_an_index_made_before_exclusions_gains_the_table(tmp_path) -> None:
    path = tmp_path / "documents.sqlite3"
    with DocumentStore(path) as store:
        _collection(store)
    with sqlite3.connect(path) as db:  # as version 1 left it
        db.execute("DROP TABLE excluded")
        db.execute("PRAGMA user_version = 1")
    with DocumentStore(path) as store:
        notes = store.collections()[0]
        store.exclude(notes, ["/n/b.txt"])
        assert store.excluded(notes) == ["/n/b.txt"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
