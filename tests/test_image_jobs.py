"""The one image job service (engines/images/jobs.py), as `atelier image` and the Images page drive it.

A stand-in engine host makes real small PNGs (tests/fixtures/fake_image_host.py,
checked against the real host in tests/test_host_contract.py); the gallery,
the signing key and c2pa are real. The real engine end to end is in
tests/test_cli_image_credentials.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from engines.diffusion.types import ImageLoadSpec, ImageRequest
from engines.images.gallery import Gallery, open_gallery
from engines.images.jobs import ImageJob, ImageJobs, ImageKept, Loaded, Loading, Notice
from tests.fixtures.fake_image_host import FakeImageHost

c2pa = pytest.importorskip("c2pa")


def make_jobs(tmp_path: Path, gallery_factory=None) -> ImageJobs:
    images = tmp_path / "data" / "images"
    database = tmp_path / "data" / "atelier.sqlite3"
    database.parent.mkdir(parents=True, exist_ok=True)
    return ImageJobs(gallery_factory or (lambda: open_gallery(database, images)), images, tmp_path / "config")


def job(tmp_path: Path, **overrides) -> ImageJob:
    model = tmp_path / "models" / "dream-a"
    request = ImageRequest(overrides.pop("prompt", "a lighthouse"), width=64, height=64, steps=2, seed=11,
                           batch_count=overrides.pop("batch", 1))
    return ImageJob(ImageLoadSpec(str(model), backend="torch"), request, **overrides)


def has_manifest(png: bytes) -> bool:
    from engines.images.credentials import c2pa_context

    reader = c2pa.Reader.try_create("image/png", io.BytesIO(png), context=c2pa_context())
    if reader is None:
        return False
    with reader:
        return bool(json.loads(reader.json()).get("active_manifest"))


def test_every_image_is_signed_kept_and_remembers_its_model(tmp_path):
    jobs, events = make_jobs(tmp_path), []
    outcome = jobs.run(FakeImageHost(), job(tmp_path, model_id="import/dream-a", batch=2), events.append)
    assert outcome.error is None and not outcome.cancelled and outcome.lost == []
    kinds = [type(e).__name__ for e in events if isinstance(e, (Loading, Loaded, ImageKept))]
    assert kinds == ["Loading", "Loaded", "ImageKept", "ImageKept"]
    assert [e.message for e in events if isinstance(e, Loading)] == ["Loading dream-a…"]
    assert [k.seed for k in outcome.kept] == [11, 12] and all(k.signed for k in outcome.kept)
    for kept in outcome.kept:
        assert kept.path == Path(kept.entry.path)  # no --out: the gallery file is the image
        assert has_manifest(kept.path.read_bytes())
        # "use these settings again" finds the model wherever the image was made: by id, then folder
        assert kept.entry.request["model_id"] == "import/dream-a"
        assert kept.entry.request["model_path"] == str(tmp_path / "models" / "dream-a")
        assert kept.entry.request["backend_choice"] == "torch"
    jobs.close()
    reopened = Gallery(tmp_path / "data" / "atelier.sqlite3", tmp_path / "data" / "images")
    assert sorted(e.seed for e in reopened.list()) == [11, 12]
    reopened.close()


def test_no_credentials_leaves_the_png_as_the_engine_made_it(tmp_path):
    jobs = make_jobs(tmp_path)
    outcome = jobs.run(FakeImageHost(), job(tmp_path, credentials=False), lambda e: None)
    [kept] = outcome.kept
    assert not kept.signed and not has_manifest(kept.path.read_bytes())
    assert not (tmp_path / "config" / "content-credentials.pem").exists()  # no key made for an unsigned run
    jobs.close()


def test_out_files_are_written_first_and_the_gallery_gets_a_copy(tmp_path):
    jobs = make_jobs(tmp_path)
    targets = (tmp_path / "out" / "a.png", tmp_path / "out" / "b.png")
    (tmp_path / "out").mkdir()
    outcome = jobs.run(FakeImageHost(), job(tmp_path, batch=2, targets=targets), lambda e: None)
    assert [k.path for k in outcome.kept] == list(targets)
    for kept in outcome.kept:
        assert kept.path.read_bytes() == Path(kept.entry.path).read_bytes()
        assert has_manifest(kept.path.read_bytes())
    jobs.close()


def test_an_out_file_that_cannot_be_written_stops_the_run_and_says_so(tmp_path):
    jobs = make_jobs(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    host = FakeImageHost()
    outcome = jobs.run(host, job(tmp_path, batch=3, targets=tuple(blocker / f"{i}.png" for i in range(3))),
                       lambda e: None)
    assert len(outcome.lost) == 1 and outcome.lost[0].startswith(f"could not write {blocker / '0.png'}: ")
    assert outcome.result.cancelled and len(outcome.result.images) == 1  # the next images were not made
    [kept] = outcome.kept  # the one finished image is still in the gallery
    assert kept.path == Path(kept.entry.path) and kept.path.exists()
    jobs.close()


def test_a_gallery_index_that_refuses_the_row_costs_a_notice_not_the_image(tmp_path):
    images, database = tmp_path / "data" / "images", tmp_path / "data" / "atelier.sqlite3"
    database.parent.mkdir(parents=True)

    def read_only_gallery():
        gallery = Gallery(database, images)
        gallery._db.execute("PRAGMA query_only = ON")
        return gallery

    jobs, events = make_jobs(tmp_path, read_only_gallery), []
    outcome = jobs.run(FakeImageHost(), job(tmp_path, batch=2), events.append)
    assert outcome.lost == [] and len(outcome.kept) == 2 and all(k.path.exists() for k in outcome.kept)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == ["the gallery index could not be updated (attempt to write a readonly database); "
                       "the image files are kept"]  # once for the batch, not once an image
    assert [e.id for e in jobs.gallery.list()] == [k.entry.id for k in reversed(outcome.kept)]
    jobs.close()


def test_a_damaged_key_is_replaced_with_a_notice_and_the_image_is_signed(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "content-credentials.pem").write_text("garbage, not a key")
    jobs, events = make_jobs(tmp_path), []
    outcome = jobs.run(FakeImageHost(), job(tmp_path), events.append)
    [kept] = outcome.kept
    assert kept.signed and has_manifest(kept.path.read_bytes())
    [notice] = [e.message for e in events if isinstance(e, Notice)]
    assert notice.startswith(f"The Content Credentials key ({tmp_path / 'config' / 'content-credentials.pem'}) "
                             "could not be used: it holds no PEM keys or certificates; it was set aside as ")
    jobs.close()


def test_cancel_before_the_engine_starts_keeps_nothing_and_says_cancelled(tmp_path):
    jobs = make_jobs(tmp_path)
    host = FakeImageHost()

    def cancel_once_loaded(event) -> None:
        if isinstance(event, Loaded):
            jobs.cancel()

    outcome = jobs.run(host, job(tmp_path), cancel_once_loaded)
    assert outcome.cancelled and outcome.error is None and outcome.kept == [] and host.requests == []
    jobs.close()
