"""Two Atelier processes on one profile: the model list and the download queue are shared, never fought over.

Real processes (subprocess), a real server on 127.0.0.1, the real CLI where
a user would use it. Each test waits on events (a held transfer, a line on
a terminal, a state in the shared file), never on time.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys

import pytest

from engines.byte_sizes import format_bytes
from engines.errors import EngineError
from engines.library.download import FileSpec
from engines.library.download.queue import DownloadQueue
from tests.fixtures.cli_runner import ROOT, cli_env
from tests.fixtures.download_owner import another_process_downloading
from tests.fixtures.http_server import sha256
from tests.fixtures.waits import wait_until

FAST = {"stall_timeout": 10, "backoff": (0.01,), "max_attempts": 3}
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL and a pty")


# ---- models.json (D15) ---------------------------------------------------------------------

ADD_MODELS = """
import sys, time
from pathlib import Path
from engines.library.installed import InstalledModel, InstalledModels
store = InstalledModels(Path(sys.argv[1]))
tag, go = sys.argv[2], Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for i in range(200):
    store.add(InstalledModel(f"local/{tag}{i}", "n", f"/x/{tag}{i}.gguf", 1, "llama_cpp", "gguf", "import"))
print("done", flush=True)
"""


@pytest.mark.slow
def test_two_processes_adding_200_models_each_keep_all_400(tmp_path):
    models_json, go = tmp_path / "models.json", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", ADD_MODELS, str(models_json), tag, str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n"
    go.touch()  # both start adding at once
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert (proc.returncode, out, err) == (0, "done\n", "")
    ids = [m["id"] for m in json.loads(models_json.read_text())["models"]]
    assert sorted(ids) == sorted(f"local/{t}{i}" for t in "ab" for i in range(200))
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- the download queue (D5) -----------------------------------------------------------------


def gguf_bytes(tmp_path) -> bytes:
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    return write_tiny_llama_gguf(tmp_path / "source.gguf", n_layers=1, n_embd=256, n_ff=512).read_bytes()


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "desktop", *args]


@pytest.mark.slow
def test_a_second_pull_follows_the_first_and_both_end_installed(http_server, atelier_home, tmp_path):
    data = gguf_bytes(tmp_path)
    http_server.add("/files/model.gguf", data)
    hold = http_server.fault("/files/model.gguf", hold_after=1_000_000)
    url = http_server.url("/files/model.gguf")
    first = subprocess.Popen(cli("models", "pull", url, "--json"), cwd=ROOT, env=cli_env(ATELIER_OFFLINE=None),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    master, slave = pty.openpty()  # the second runs in a terminal, so it draws its progress bar
    second = subprocess.Popen(cli("models", "pull", url), cwd=ROOT, env=cli_env(ATELIER_OFFLINE=None), stdout=subprocess.PIPE,
                              stderr=slave, text=True)
    os.close(slave)
    seen = bytearray()
    try:
        assert http_server.wait_for(hold.reached.is_set, timeout=120), first.stderr
        # The second process shows the first one's download: its bar, with the bytes the first has.
        def bar_drawn() -> bool:
            while select.select([master], [], [], 0)[0]:
                try:
                    seen.extend(os.read(master, 4096))
                except OSError:
                    break
            return b"model.gguf" in seen and b"1.0 MB/" in seen
        wait_until(bar_drawn, "the second pull drew the first one's progress", second)
        assert [s.range for s in http_server.seen] == [None]  # it follows: it never downloads itself
        hold.release.set()
        out1, err1 = first.communicate(timeout=120)
        out2, _ = second.communicate(timeout=120)
    finally:
        hold.release.set()
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
        os.close(master)
    assert first.returncode == 0, err1
    assert json.loads(out1) == {"id": "url/model.gguf", "name": "model.gguf", "target": "model.gguf",
                                "bytes": len(data), "state": "completed"}
    assert second.returncode == 0, bytes(seen).decode(errors="replace")
    assert out2 == f"Installed model.gguf ({format_bytes(len(data))}).\n"
    assert [s.range for s in http_server.seen] == [None]  # downloaded once
    models = json.loads((atelier_home / "data" / "models.json").read_text())["models"]
    assert [m["id"] for m in models if m["source"] == "download"] == ["url/model.gguf"]
    assert sha256((atelier_home / "data" / "models" / "model.gguf").read_bytes()) == sha256(data)


@pytest.mark.slow
def test_another_process_s_job_is_shown_followed_untouched_and_taken_over_when_it_dies(http_server, tmp_path):
    with another_process_downloading(http_server, tmp_path, seed=5) as other:
        owner, job_id, data, state, models, hold = (other.process, other.job_id, other.data, other.state, other.models,
                                                    other.hold)
        # What the GUI's Models page does at start: a queue of its own on the same files, started.
        gui = DownloadQueue(state, models, max_parallel=2, check=None, transfer_options=FAST)
        try:
            gui.start()
            job = gui.get(job_id)
            assert job.state == "running" and job.owner_pid == owner.pid and gui.runs_elsewhere(job_id)
            wait_until(lambda: gui.get(job_id).bytes_done > 0, "the progress of the other process's job reached the GUI")
            for verb, action in (("paused", gui.pause), ("cancelled", gui.cancel)):
                with pytest.raises(EngineError) as err:
                    action(job_id)
                assert err.value.message == (f"Big is being downloaded by another Atelier process (pid {owner.pid}); "
                                             f"it cannot be {verb} from here.")
            # The GUI runs a download of its own beside it, and neither disturbs the other.
            http_server.add("/small.gguf", data[:200_000])
            small = gui.add("hf/small", "Small", [FileSpec(http_server.url("/small.gguf"), "small.gguf", 200_000,
                                                            sha256(data[:200_000]))], "small.gguf")
            wait_until(lambda: gui.get(small.id).state == "completed", "the GUI's own download completed")
            assert gui.get(job_id).state == "running" and http_server.ranges("/big.gguf") == [None]

            owner.send_signal(signal.SIGKILL)  # the other process dies mid-download: its job is resumed here
            owner.wait(30)
            hold.release.set()
            wait_until(lambda: gui.get(job_id).state == "completed", "the GUI took over and finished the orphaned job")
            assert (models / "big.gguf").read_bytes() == data
            assert http_server.ranges("/big.gguf") == [None, "bytes=1250000-"]
            assert json.loads(state.read_text())["jobs"][0]["state"] == "completed"
        finally:
            hold.release.set()
            gui.shutdown(wait=True, timeout=10)
