"""The gallery: the file first (whole, or not at all), then its row; listed newest first, deleted with its file."""

import sqlite3
from pathlib import Path

import pytest

from engines.diffusion.types import ImageRequest
from engines.images.gallery import Gallery, NotIndexed, request_record, write_image_file
from engines.paths import app_paths


def test_save_list_get_delete(tmp_path):
    paths = app_paths()
    gallery = Gallery(paths.database, paths.data / "images")
    request = {"prompt": "a red fox", "negative_prompt": "blurry", "steps": 4, "guidance": 7.0, "scheduler": "Euler", "width": 64, "height": 64}
    first = gallery.save(b"\x89PNG first", request, seed=1, width=64, height=64, model="tiny", backend="torch")
    second = gallery.save(b"\x89PNG second", request, seed=2, width=64, height=64, model="tiny", backend="onnx")
    listed = gallery.list()
    assert [e.id for e in listed] == [second.id, first.id]
    assert listed[0].request["seed"] == 2 and listed[0].request["prompt"] == "a red fox"
    assert open(first.path, "rb").read() == b"\x89PNG first"
    gallery.delete(first.id)
    assert gallery.get(first.id) is None and not first.exists
    gallery.close()
    again = Gallery(paths.database, paths.data / "images")
    assert [e.id for e in again.list()] == [second.id]


def test_gallery_shares_the_database_with_chats():
    from engines.chat.store import ChatStore

    paths = app_paths()
    chats = ChatStore(paths.database)
    gallery = Gallery(paths.database, paths.data / "images")
    chats.create_conversation("hello")
    gallery.save(b"png", {"prompt": "x"}, seed=0, width=8, height=8, model="m", backend="torch")
    chats.close()
    reopened = ChatStore(paths.database)
    assert reopened.list_conversations()[0].title == "hello"
    assert len(Gallery(paths.database, paths.data / "images").list()) == 1


def test_the_file_is_written_whole_and_first(tmp_path):
    paths = app_paths()
    gallery = Gallery(paths.database, paths.data / "images")
    entry = gallery.save(b"\x89PNG whole", {"prompt": "x"}, seed=5, width=8, height=8, model="m", backend="torch")
    folder = paths.data / "images"
    assert [p.name for p in folder.rglob("*") if p.is_file()] == [Path(entry.path).name]  # no temporary left
    assert Path(entry.path).name.endswith(f"-5-{entry.id}.png")
    gallery._db.execute("PRAGMA query_only = ON")  # the database now refuses every write
    with pytest.raises(NotIndexed) as err:
        gallery.save(b"\x89PNG kept", {"prompt": "y"}, seed=6, width=8, height=8, model="m", backend="torch")
    assert err.value.path.read_bytes() == b"\x89PNG kept"  # the image is kept; only its row is missing
    assert str(err.value) == (f"{err.value.path} was saved, but the gallery index could not be updated "
                              "(attempt to write a readonly database)")
    kept = err.value.entry
    assert kept.path == str(err.value.path) and kept.seed == 6
    # This session still lists it (newest first), so the page shows what was just made ...
    assert [e.id for e in gallery.list()] == [kept.id, entry.id]
    assert gallery.get(kept.id) == kept
    gallery.close()
    # ... but only the indexed image is in the database for the next start.
    assert [e.id for e in Gallery(paths.database, paths.data / "images").list()] == [entry.id]


def test_a_corrupt_database_is_refused_at_open_and_images_still_have_a_home(tmp_path):
    database = tmp_path / "atelier.sqlite3"
    database.write_bytes(b"this is not a database" * 2000)
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
        Gallery(database, tmp_path / "images")
    path = write_image_file(tmp_path / "images", b"\x89PNG alone", seed=9)
    assert path.read_bytes() == b"\x89PNG alone" and path.parent.parent == tmp_path / "images"


def test_request_record_keeps_what_reuse_needs_and_never_the_init_image():
    record = request_record(ImageRequest("a fox", init_image=b"\x89PNG...", seed=3), "/models/sd", "onnx", "import/sd")
    assert "init_image" not in record and record["img2img"] is True
    assert (record["model_path"], record["backend_choice"], record["model_id"]) == ("/models/sd", "onnx", "import/sd")
    assert record["prompt"] == "a fox" and record["seed"] == 3


def test_open_gallery_falls_back_to_files_only_and_says_why(tmp_path):
    from engines.images.gallery import FilesOnlyGallery, open_gallery

    database = tmp_path / "atelier.sqlite3"
    database.write_bytes(b"this is not a database" * 2000)
    gallery = open_gallery(database, tmp_path / "images")
    assert isinstance(gallery, FilesOnlyGallery)
    assert gallery.problem == f"the gallery's index ({database}) cannot be used: file is not a database"
    first = gallery.save(b"\x89PNG one", {"prompt": "a"}, seed=1, width=8, height=8, model="m", backend="torch")
    second = gallery.save(b"\x89PNG two", {"prompt": "b"}, seed=2, width=8, height=8, model="m", backend="onnx")
    assert [e.id for e in gallery.list()] == [second.id, first.id] and gallery.get(first.id) == first
    assert Path(first.path).read_bytes() == b"\x89PNG one" and first.request == {"prompt": "a", "seed": 1}
    gallery.delete(first.id)
    assert not Path(first.path).exists() and gallery.get(first.id) is None
    assert open_gallery(tmp_path / "good.sqlite3", tmp_path / "images").problem == ""
