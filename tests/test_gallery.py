"""The gallery index: saved before anything else, listed newest first, deleted with its file."""

from engines.images.gallery import Gallery
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
