"""The download queue over real HTTP: concurrency, pause, cancel, persistence, kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engines.errors import EngineError
from engines import network
from engines.library.download import FileSpec
from engines.library.download.queue import DownloadQueue
from engines.library.download.verify import check_download
from engines.network import OfflineError
from tests.fixtures.http_server import sha256

ROOT = Path(__file__).resolve().parents[1]
FAST = {"stall_timeout": 10, "backoff": (0.01,), "max_attempts": 3}  # stalls have their own test


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def queues(tmp_path):
    """Makes queues on one state file and models folder; shuts them all down afterwards."""
    made = []

    def make(**kwargs) -> DownloadQueue:
        kwargs.setdefault("transfer_options", FAST)
        kwargs.setdefault("check", None)  # random bytes stand in for models here; the check has its own tests
        queue = DownloadQueue(tmp_path / "downloads.json", tmp_path / "models", **kwargs)
        made.append(queue)
        return queue

    make.models = tmp_path / "models"
    make.state_file = tmp_path / "downloads.json"
    yield make
    for queue in made:
        queue.shutdown(wait=True, timeout=10)


def serve(server, path: str, data: bytes, relpath: str | None = None) -> FileSpec:
    server.add(path, data)
    return FileSpec(server.url(path), relpath or path.rsplit("/", 1)[-1], size=len(data), sha256=sha256(data))


def wait_state(queue: DownloadQueue, job_id: str, state: str, timeout: float = 15.0):
    event = threading.Event()
    unsubscribe = queue.subscribe(lambda jid, job: event.set() if job is not None and jid == job_id and job.state == state else None)
    try:
        if queue.get(job_id).state != state:
            event.wait(timeout)
    finally:
        unsubscribe()
    job = queue.get(job_id)
    assert job.state == state, job
    return job


def part_of(models: Path, job_id: str, relpath: str) -> Path:
    return models / ".staging" / job_id / (relpath + ".part")


def test_a_single_file_job_installs_and_reports_completion(http_server, queues):
    data = blob(1_500_000)
    done = []
    queue = queues(on_complete=done.append)
    queue.start()
    job = queue.add("hf/m", "Model", [serve(http_server, "/m.gguf", data)], "vendor/m.gguf")
    job = wait_state(queue, job.id, "completed")
    assert (queues.models / "vendor" / "m.gguf").read_bytes() == data
    assert job.bytes_done == job.bytes_total == len(data) and job.error is None
    assert http_server.wait_for(lambda: done and done[0].id == job.id)
    assert list((queues.models / ".staging").iterdir()) == []
    saved = json.loads(queues.state_file.read_text())
    assert saved["jobs"][0]["state"] == "completed"


def test_no_more_than_max_parallel_jobs_run_at_once(http_server, queues):
    queue = queues(max_parallel=2)
    running_seen = []
    queue.subscribe(lambda jid, job: running_seen.append(sum(j.state == "running" for j in queue.jobs())))
    specs = [serve(http_server, f"/m{i}.gguf", blob(600_000, seed=i)) for i in range(3)]
    holds = [http_server.fault(f"/m{i}.gguf", hold_after=100_000) for i in range(3)]
    jobs = [queue.add(f"hf/m{i}", f"M{i}", [specs[i]], f"m{i}.gguf") for i in range(3)]
    queue.start()
    assert http_server.wait_for(lambda: http_server.in_flight == 2)
    assert http_server.wait_for(lambda: sum(h.reached.is_set() for h in holds) == 2)
    assert [j.state for j in queue.jobs()].count("queued") == 1
    for hold in holds:
        hold.release.set()
    for job in jobs:
        wait_state(queue, job.id, "completed")
    assert http_server.max_in_flight == 2
    assert max(running_seen) == 2
    for i in range(3):
        assert (queues.models / f"m{i}.gguf").read_bytes() == blob(600_000, seed=i)


def test_pause_keeps_the_part_and_resume_continues_from_it(http_server, queues):
    data = blob(1_500_000)
    queue = queues()
    spec = serve(http_server, "/m.gguf", data)
    hold = http_server.fault("/m.gguf", hold_after=600_000)
    queue.start()
    job = queue.add("hf/m", "Model", [spec], "m.gguf")
    part = part_of(queues.models, job.id, "m.gguf")
    assert http_server.wait_for(lambda: part.exists() and part.stat().st_size == 600_000)
    assert queue.pause(job.id).state == "paused"
    assert http_server.wait_for(lambda: not queue._runs)  # the worker let go at once, though the server holds
    hold.release.set()
    assert part.stat().st_size == 600_000 and queue.get(job.id).state == "paused"

    queue.resume(job.id)
    wait_state(queue, job.id, "completed")
    assert (queues.models / "m.gguf").read_bytes() == data
    assert http_server.ranges("/m.gguf")[-1] == "bytes=600000-"


def test_cancel_deletes_the_partial_files_and_retry_starts_over(http_server, queues):
    data = blob(1_000_000)
    queue = queues()
    spec = serve(http_server, "/m.gguf", data)
    hold = http_server.fault("/m.gguf", hold_after=300_000)
    queue.start()
    job = queue.add("hf/m", "Model", [spec], "m.gguf")
    part = part_of(queues.models, job.id, "m.gguf")
    assert http_server.wait_for(lambda: part.exists() and part.stat().st_size == 300_000)
    assert queue.cancel(job.id).state == "cancelled"
    assert http_server.wait_for(lambda: not part.parent.exists())
    hold.release.set()
    assert not (queues.models / "m.gguf").exists()
    with pytest.raises(EngineError):
        queue.remove(queue.add("hf/other", "Other", [spec], "other.gguf").id)  # still queued: cannot remove

    queue.retry(job.id)
    wait_state(queue, job.id, "completed")
    assert http_server.ranges("/m.gguf")[-1] is None


def test_jobs_survive_a_restart_of_the_queue(http_server, queues):
    data = blob(1_200_000)
    first = queues()
    spec = serve(http_server, "/m.gguf", data)
    hold = http_server.fault("/m.gguf", hold_after=500_000)
    first.start()
    job = first.add("hf/m", "Model", [spec], "m.gguf")
    part = part_of(queues.models, job.id, "m.gguf")
    assert http_server.wait_for(lambda: part.exists() and part.stat().st_size == 500_000)
    first.shutdown(wait=True)
    hold.release.set()

    second = queues()
    (reloaded,) = second.jobs()
    assert (reloaded.id, reloaded.state, reloaded.bytes_done, reloaded.files) == (job.id, "queued", 500_000, (spec,))
    second.start()
    wait_state(second, job.id, "completed")
    assert (queues.models / "m.gguf").read_bytes() == data
    assert http_server.ranges("/m.gguf")[-1] == "bytes=500000-"


def test_a_folder_installs_as_one_unit_or_not_at_all(http_server, queues):
    files = {"model_index.json": blob(2_000, 1), "unet/weights.safetensors": blob(900_000, 2), "vae/weights.safetensors": blob(400_000, 3)}
    specs = [serve(http_server, f"/repo/{rel}", data, rel) for rel, data in files.items()]
    broken = http_server.fault("/repo/vae/weights.safetensors", status=404, times=0)
    target = queues.models / "sd-tiny"
    violations = []
    queue = queues()
    queue.subscribe(lambda jid, job: violations.append(job.state) if job and job.state != "completed" and target.exists() else None)
    queue.start()
    job = queue.add("hf/sd-tiny", "SD tiny", specs, "sd-tiny")
    job = wait_state(queue, job.id, "failed")
    assert job.error == f"weights.safetensors was not found on the server (404): {http_server.url('/repo/vae/weights.safetensors')}"
    assert not target.exists()

    broken.times, broken.status = 1, None  # the server is fixed
    queue.retry(job.id)
    wait_state(queue, job.id, "completed")
    assert violations == []
    assert {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()} == files
    assert len(http_server.ranges("/repo/unet/weights.safetensors")) == 1  # finished files are not fetched again


def test_unsafe_or_taken_targets_are_refused(http_server, queues):
    queue = queues()
    spec = serve(http_server, "/m.gguf", blob(1000))
    for bad_target in ("../evil.gguf", "/abs.gguf", ".staging/x"):
        with pytest.raises(EngineError, match="models folder|Atelier's own"):
            queue.add("hf/m", "Model", [spec], bad_target)
    with pytest.raises(EngineError, match="outside the models folder"):
        queue.add("hf/m", "Model", [FileSpec(spec.url, "../../evil")], "m.gguf")
    queues.models.mkdir(parents=True, exist_ok=True)
    (queues.models / "taken.gguf").write_bytes(b"mine")
    with pytest.raises(EngineError, match="already exists"):
        queue.add("hf/m", "Model", [spec], "taken.gguf")
    queue.add("hf/m", "Model", [spec], "m.gguf")
    with pytest.raises(EngineError, match="already being downloaded"):
        queue.add("hf/m", "Model", [spec], "m.gguf")
    assert (queues.models / "taken.gguf").read_bytes() == b"mine"


def test_a_failed_job_keeps_its_part_and_retry_resumes(http_server, queues):
    data = blob(1_000_000)
    queue = queues()
    spec = serve(http_server, "/m.gguf", data)
    http_server.fault("/m.gguf", drop_after=250_000)
    http_server.fault("/m.gguf", drop_after=0, times=3)
    queue.start()
    job = wait_state(queue, queue.add("hf/m", "Model", [spec], "m.gguf").id, "failed")
    assert "dropped 3 times" in job.error and job.bytes_done == 250_000
    queue.retry(job.id)
    wait_state(queue, job.id, "completed")
    assert http_server.ranges("/m.gguf")[-1] == "bytes=250000-"


def test_progress_reports_speed_and_eta(http_server, queues):
    data = blob(1_500_000)
    queue = queues()
    http_server.add("/m.gguf", data, rate=1_500_000)
    samples = []
    queue.subscribe(lambda jid, job: samples.append(job) if job and job.state == "running" else None)
    queue.start()
    job = queue.add("hf/m", "Model", [FileSpec(http_server.url("/m.gguf"), "m.gguf")], "m.gguf")
    wait_state(queue, job.id, "completed")
    moving = [s for s in samples if s.speed_bps > 0]
    assert moving and all(s.eta_s is not None and s.bytes_total == len(data) for s in moving)
    assert 100_000 < moving[-1].speed_bps < 20_000_000


KILLED_APP = """
import sys, time
from pathlib import Path
from engines.library.download import FileSpec
from engines.library.download.queue import DownloadQueue
from engines.library.download.verify import check_download
state, models, url, size, digest = sys.argv[1:]
queue = DownloadQueue(Path(state), Path(models), max_parallel=1)
queue.add("hf/big", "Big", [FileSpec(url, "big.gguf", size=int(size), sha256=digest)], "big.gguf")
queue.start()
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_download_killed_with_sigkill_resumes_in_a_new_queue(http_server, queues, tmp_path):
    data = blob(3_000_000)
    spec = serve(http_server, "/big.gguf", data)
    hold = http_server.fault("/big.gguf", hold_after=1_250_000)
    env = {k: v for k, v in os.environ.items() if k != "ATELIER_OFFLINE"}
    log = tmp_path / "app.log"
    with open(log, "wb") as stderr:
        app = subprocess.Popen(
            [sys.executable, "-c", KILLED_APP, str(queues.state_file), str(queues.models), spec.url, str(spec.size), spec.sha256],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        parts = lambda: list((queues.models / ".staging").glob("*/big.gguf.part"))  # noqa: E731
        assert http_server.wait_for(lambda: parts() and parts()[0].stat().st_size == 1_250_000), log.read_text()
        os.kill(app.pid, signal.SIGKILL)
        app.wait(10)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    hold.release.set()
    assert app.returncode == -signal.SIGKILL
    assert json.loads(queues.state_file.read_text())["jobs"][0]["state"] == "running"

    queue = queues()
    (job,) = queue.jobs()
    assert job.state == "queued" and job.bytes_done == 1_250_000
    queue.start()
    wait_state(queue, job.id, "completed")
    assert sha256((queues.models / "big.gguf").read_bytes()) == spec.sha256
    assert http_server.ranges("/big.gguf") == [None, "bytes=1250000-"]


def test_offline_mode_queues_nothing_and_opens_no_connection(http_server, queues, monkeypatch):
    queue = queues()
    spec = serve(http_server, "/m.gguf", blob(200_000))
    waiting = queue.add("hf/m", "Model", [spec], "m.gguf")  # added while online, not started yet
    real_connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError("a connection was opened in offline mode")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    with pytest.raises(OfflineError):
        queue.add("hf/other", "Other", [spec], "other.gguf")
    queue.start()
    job = wait_state(queue, waiting.id, "paused")
    assert job.error == ("Atelier is in offline mode: downloading m.gguf needs the network. Turn offline mode off "
                         "in Settings.")
    with pytest.raises(OfflineError):
        queue.resume(job.id)
    assert http_server.seen == []

    monkeypatch.setattr(socket.socket, "connect", real_connect)
    monkeypatch.delenv("ATELIER_OFFLINE")
    network.set_offline(True)
    try:
        with pytest.raises(OfflineError):
            queue.resume(job.id)
    finally:
        network.set_offline(False)
    queue.resume(job.id)
    wait_state(queue, job.id, "completed")


# ---- what arrived must be the model it claims to be (D20) ----------------------------------


@pytest.fixture
def tiny_model(tmp_path_factory) -> bytes:
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


@pytest.mark.parametrize(("body", "error"), [
    (b"<html><body>Please log in</body></html>",
     "The download of model-h.gguf is not a GGUF model (it looks like an HTML page). Nothing was installed."),
    (b'{"error": "rate limited"}',
     "The download of model-h.gguf is not a GGUF model (it looks like a JSON document). Nothing was installed."),
    ("truncated",
     "The download of model-h.gguf is not a GGUF model: model-h.gguf is incomplete. The file is truncated: it ends "
     "after 500 bytes, inside its header (while reading metadata entry #11), which needs at least 504 bytes. Download "
     "it again. Nothing was installed."),
])
def test_a_download_that_is_not_the_model_it_claims_is_never_installed(http_server, queues, tiny_model, body, error):
    body = tiny_model[:500] if body == "truncated" else body  # all the server promised: its length was a lie
    http_server.add("/model-h.gguf", body)
    queue = queues(check=check_download)
    queue.start()
    job = queue.add("url/model-h.gguf", "model-h.gguf", [FileSpec(http_server.url("/model-h.gguf"), "model-h.gguf")], "model-h.gguf")
    job = wait_state(queue, job.id, "failed")
    assert job.error == error and job.bytes_done == 0
    assert not (queues.models / "model-h.gguf").exists()
    assert not (queues.models / ".staging" / job.id).exists()  # the bytes were garbage: a retry starts over

    http_server.add("/model-h.gguf", tiny_model)  # the server is fixed
    queue.retry(job.id)
    wait_state(queue, job.id, "completed")
    assert (queues.models / "model-h.gguf").read_bytes() == tiny_model


def test_a_lora_is_checked_for_what_it_is_and_installed(http_server, queues, tmp_path):
    from tests.fixtures.stripped_models import write_kohya_lora

    data = write_kohya_lora(tmp_path / "style.safetensors", "sd1").read_bytes()
    queue = queues(check=check_download)
    queue.start()
    job = queue.add("url/style.safetensors", "style.safetensors", [serve(http_server, "/style.safetensors", data)], "style.safetensors")
    wait_state(queue, job.id, "completed")
    assert (queues.models / "style.safetensors").read_bytes() == data


# ---- a state file that lies or is damaged (D6, D23) ------------------------------------------


def crafted(job_id: str, url: str, state: str = "queued", target: str = "zz", relpath: str = "a.txt") -> dict:
    return {"id": job_id, "model_id": "m", "name": "n", "target": target, "state": state, "created_at": 1,
            "files": [{"url": url, "relpath": relpath}]}


@pytest.fixture
def victim(tmp_path) -> Path:
    folder = tmp_path / "victim"
    (folder / "photos").mkdir(parents=True)
    (folder / "thesis.docx").write_text("precious")
    (folder / "photos" / "cat.jpg").write_text("precious")
    return folder


def intact(folder: Path) -> bool:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["photos", "photos/cat.jpg", "thesis.docx"]


def test_job_ids_and_paths_from_the_state_file_cannot_leave_atelier_s_folders(http_server, queues, victim):
    http_server.add("/x", b"<html>")
    url = http_server.url("/x")
    (queues.models / ".staging").mkdir(parents=True)
    records = [
        crafted("../../victim", url),  # .staging/../../victim is the victim folder
        crafted("okid", url, target="../../victim"),
        crafted("okid2", url, relpath="../../../victim/thesis.docx"),
        crafted("okid3", url, relpath="evil\x1b]0;title\x07.txt"),
    ]
    queues.state_file.write_text(json.dumps({"version": 1, "jobs": records}))
    queue = queues()
    queue.start()
    queue.sync()
    assert queue.jobs() == [] and http_server.seen == []
    (problem,) = queue.problems
    assert problem.startswith(
        "4 downloads in downloads.json were refused and not run (kept in the file as they are): "
        "download '../../victim': id: Refusing the download id '../../victim': an id must be a plain name of letters, "
        "digits, - and _, so that it cannot reach outside Atelier's folders.; download 'okid': target: Refusing the "
        "file name '../../victim': it would be written outside the models folder.; ")
    for action in (queue.remove, queue.cancel, queue.pause, queue.retry):
        with pytest.raises(EngineError) as err:
            action("../../victim")
        assert err.value.message == "There is no download with id ../../victim."
    job = queue.add("hf/fine", "Fine", [FileSpec(url, "fine.txt")], "fine.txt")  # the file is rewritten...
    wait_state(queue, job.id, "completed")
    assert json.loads(queues.state_file.read_text())["jobs"][1:] == records  # ...keeping what it refused, as it was
    assert intact(victim)


def test_a_staging_folder_that_is_a_symlink_is_never_used_or_deleted(http_server, queues, victim):
    http_server.add("/x", b"data")
    (queues.models / ".staging").mkdir(parents=True)
    (queues.models / ".staging" / "abc123").symlink_to(victim)
    queues.state_file.write_text(json.dumps({"jobs": [crafted("abc123", http_server.url("/x"), state="failed")]}))
    queue = queues()
    queue.start()
    assert queue.cancel("abc123").state == "cancelled"
    queue.retry("abc123")
    job = wait_state(queue, "abc123", "failed")
    assert job.error == (f"{queues.models / '.staging' / 'abc123'} is a symbolic link; Atelier only downloads into "
                         "its own folders, so it refuses to use it.")
    queue.remove("abc123")
    assert intact(victim) and http_server.seen == []


@pytest.mark.parametrize(("content", "reason"), [
    ('{"jobs": 5}', 'its "jobs" is 5, not a list'),
    ("{", "it is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
])
def test_a_damaged_download_list_is_set_aside_and_its_partial_files_listed(http_server, queues, content, reason):
    queues.state_file.write_text(content)
    orphan = queues.models / ".staging" / "0123abcd"
    orphan.mkdir(parents=True)
    (orphan / "m.gguf.part").write_bytes(b"x" * 1500)
    queue = queues()
    (kept,) = queues.state_file.parent.glob("downloads.unreadable-*.json")
    assert kept.read_text() == content
    assert queue.problems == [
        f"The download list (downloads.json) could not be read ({reason}). It was kept as {kept} and a new one was started.",
        f"1 partial download (1.5 KB) in {queues.models / '.staging'} belongs to no download in the list: 0123abcd. "
        "They are kept; delete them to free the space.",
    ]
    queue.start()
    job = queue.add("hf/m", "Model", [serve(http_server, "/m.gguf", blob(1000))], "m.gguf")  # the queue still works
    wait_state(queue, job.id, "completed")
    assert (orphan / "m.gguf.part").stat().st_size == 1500 and kept.read_text() == content


def test_fields_of_a_newer_version_survive_in_the_download_list(http_server, queues):
    spec = serve(http_server, "/m.gguf", blob(1000))
    record = {**crafted("abc123", spec.url, state="paused", target="m.gguf", relpath="m.gguf"), "priority": 3}
    record["files"][0]["mirror"] = "https://mirror.example/m.gguf"
    queues.state_file.write_text(json.dumps({"version": 2, "scheduler": {"night_only": True}, "jobs": [record]}))
    queue = queues()
    queue.start()
    queue.resume("abc123")
    wait_state(queue, "abc123", "completed")
    saved = json.loads(queues.state_file.read_text())
    assert saved["version"] == 2 and saved["scheduler"] == {"night_only": True}
    (job,) = saved["jobs"]
    assert job["priority"] == 3 and job["files"][0]["mirror"] == "https://mirror.example/m.gguf" and job["state"] == "completed"
