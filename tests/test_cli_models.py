"""`atelier models …` as a user runs it, including a kill -9 in the middle of a pull."""

import json
import os
import signal
import subprocess
import sys

from pathlib import Path

import pytest

from tests.fixtures.http_server import sha256

ROOT = Path(__file__).resolve().parents[1]


def atelier(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.slow
def test_list_check_import_remove(tiny_gguf):
    listed = json.loads(atelier("models", "list", "--catalog", "--json").stdout)["models"]
    assert len(listed) >= 20 and all(row["label"] for row in listed)
    check = json.loads(atelier("models", "check", "qwen2.5-1.5b-instruct-q4_k_m", "--ctx", "8192", "--json").stdout)
    assert check["total_bytes"] == check["need"]["total_bytes"] > check["need"]["weights_bytes"]
    imported = atelier("models", "import", str(tiny_gguf))
    assert imported.returncode == 0 and imported.stdout == "Added Tiny Test Llama F32 (chat model) as 'local/tiny-llama'.\n"
    installed = json.loads(atelier("models", "list", "--json").stdout)["models"]
    tiny = next(m for m in installed if m["path"] == str(tiny_gguf))
    assert tiny["verdict"] == "cpu_only"
    removed = atelier("models", "remove", tiny["id"])
    assert removed.returncode == 0 and tiny_gguf.exists()


@pytest.mark.slow
def test_check_a_bad_file_is_one_error_line(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 64)
    run = atelier("models", "check", str(junk))
    assert run.returncode == 2 and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1


@pytest.mark.slow
def test_pull_survives_kill_9_and_verifies_its_hash(http_server, atelier_home, tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    # A real GGUF (about 3 MB): a finished download is identified before it is installed.
    data = write_tiny_llama_gguf(tmp_path / "model.gguf", n_layers=1, n_embd=256, n_ff=512).read_bytes()
    assert len(data) > 2_000_000
    http_server.add("/files/model.gguf", data, rate=600_000)
    url = http_server.url("/files/model.gguf")
    args = [sys.executable, "-m", "desktop", "models", "pull", url, "--sha256", sha256(data)]
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staging = atelier_home / "data" / "models" / ".staging"
    try:
        assert http_server.wait_for(lambda: any(p.stat().st_size > 400_000 for p in staging.rglob("*.part")))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not (atelier_home / "data" / "models" / "model.gguf").exists()  # nothing half-installed
    second = atelier("models", "pull", url, "--sha256", sha256(data), "--json")
    assert second.returncode == 0, second.stderr
    resumed = [r for r in http_server.ranges("/files/model.gguf") if r and not r.startswith("bytes=0-")]
    assert resumed, http_server.ranges("/files/model.gguf")
    installed = atelier_home / "data" / "models" / "model.gguf"
    assert sha256(installed.read_bytes()) == sha256(data)
    assert json.loads(second.stdout)["state"] == "completed"


@pytest.mark.slow
def test_pull_with_a_wrong_checksum_installs_nothing(http_server, atelier_home):
    http_server.add("/files/bad.gguf", b"x" * 100_000)
    run = atelier("models", "pull", http_server.url("/files/bad.gguf"), "--sha256", "0" * 64)
    assert run.returncode != 0 and run.stderr == ("error: The download of bad.gguf is corrupt: expected SHA-256 "
                                                  f"000000000000…, got {sha256(b'x' * 100_000)[:12]}…. Nothing was "
                                                  "installed.\n")
    assert not (atelier_home / "data" / "models" / "bad.gguf").exists()


@pytest.mark.slow
def test_pull_404_is_a_clear_error(http_server):
    run = atelier("models", "pull", http_server.url("/nope.gguf"))
    assert run.returncode != 0 and "error:" in run.stderr and "Traceback" not in run.stderr




@pytest.mark.slow
def test_check_with_a_q8_0_cache_needs_less(gemma_path):
    def check(*extra):
        run = atelier("models", "check", str(gemma_path), "--ctx", "8192", *extra)
        assert run.returncode == 0, run.stderr
        return run.stdout

    f16 = json.loads(check("--json"))
    q8 = json.loads(check("--cache-type", "q8_0", "--json"))
    assert f16["cache_type"] == "f16" and q8["cache_type"] == q8["need"]["cache_type"] == "q8_0"
    assert q8["need"]["kv_cache_bytes"] == int(f16["need"]["kv_cache_bytes"] / 2 * 34 / 32)
    assert q8["total_bytes"] == f16["total_bytes"] - (f16["need"]["kv_cache_bytes"] - q8["need"]["kv_cache_bytes"])
    assert "context cache (q8_0) at 8,192 tokens" in check("--cache-type", "q8_0")
    bad = atelier("models", "check", str(gemma_path), "--cache-type", "q5_1")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# ---- one resolver, one probe registry: what issue 9 found ----------------------------------


@pytest.fixture
def demo_unpacked(gemma_path, atelier_home):
    """The demo's file, which is unpacked on first use, linked from the test cache: no test assembles 253 MB."""
    models = atelier_home / "data" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "gemma-3-270m-q4_k_m.gguf").symlink_to(gemma_path)
    return models


@pytest.mark.slow
def test_models_check_takes_the_same_ids_as_chat(demo_unpacked):
    run = atelier("models", "check", "demo", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["verdict"] in ("cpu_only", "gpu_full", "gpu_partial")
    unknown = atelier("models", "check", "demmo")
    assert unknown.returncode == 2
    assert unknown.stderr == ("error: No installed model, catalog model or file is called 'demmo'. "
                              "Did you mean demo/gemma-3-270m-q4_k_m?\n")


@pytest.mark.slow
def test_import_a_diffusers_folder_as_the_gui_does_then_remove_it_by_prefix(tmp_path, demo_unpacked):
    from tests.fixtures.stripped_models import write_diffusers_folder

    folder = write_diffusers_folder(tmp_path / "dream-xl", "sdxl")
    imported = atelier("models", "import", str(folder), "--json")
    assert imported.returncode == 0, imported.stderr
    record = json.loads(imported.stdout)
    assert (record["id"], record["kind"], record["format"], record["engine"]) == (
        "local/dream-xl", "image", "diffusers", "diffusers")
    listed = {m["id"]: m for m in json.loads(atelier("models", "list", "--json").stdout)["models"]}
    assert listed["local/dream-xl"]["kind"] == "image" and listed["demo/gemma-3-270m-q4_k_m"]["kind"] == "chat"
    chat = atelier("chat", "--model", "dream-xl", "--prompt", "hi")
    assert chat.returncode == 2
    assert chat.stderr == "error: 'local/dream-xl' is an image model, but this needs a chat model.\n"
    removed = atelier("models", "remove", "dream")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == f"Removed dream-xl from the library; the file stays where it is ({folder}).\n"
    assert folder.is_dir()


@pytest.mark.slow
def test_import_takes_a_lora_with_its_family_and_never_blocks(tmp_path):
    from tests.fixtures.stripped_models import write_kohya_lora

    lora = atelier("models", "import", str(write_kohya_lora(tmp_path / "style.safetensors", "sd1")))
    assert (lora.returncode, lora.stderr) == (0, "")
    assert lora.stdout == "Added kohya sd1 style (LoRA) as 'local/style.safetensors'.\n"
    check = atelier("models", "check", "local/style.safetensors")
    assert check.stdout.startswith("Applied to an image model: A LoRA for SD 1.x: its 0.00 GB are fused into the "
                                   "weights of the image model it is applied to")
    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)
    for args in (("models", "import", str(fifo)), ("models", "check", str(fifo)),
                 ("chat", "--model", str(fifo), "--prompt", "hi")):
        run = atelier(*args)
        assert run.returncode == 2, args
        assert run.stderr == "error: x.gguf is not a regular file (it is a FIFO (named pipe)).\n", args


@pytest.mark.slow
def test_terminal_escapes_in_a_model_name_never_reach_the_terminal(tmp_path):
    from tests.fixtures.stripped_models import write_gguf

    evil = write_gguf(tmp_path / "evil.gguf", "llama", name="Evil\x1b]0;PWNED\x07\x1b[2J\r\nfake line")
    run = atelier("models", "import", str(evil))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "Added Evil fake line (chat model) as 'local/evil'.\n"


@pytest.mark.slow
def test_a_symlink_loop_in_the_models_folder_is_listed_not_fatal(demo_unpacked):
    models = demo_unpacked
    (models / "a.gguf").symlink_to(models / "b.gguf")
    (models / "b.gguf").symlink_to(models / "a.gguf")
    run = atelier("models", "list", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["not_models"] == [
        {"path": str(models / name), "reason": f"{name} is a symbolic link loop (it points back to itself)."}
        for name in ("a.gguf", "b.gguf")]
    text = atelier("models", "list")
    assert text.returncode == 0 and "In the models folder but not models (2):" in text.stdout


@pytest.mark.slow
def test_verdicts_in_the_cli_carry_the_expected_speed_and_the_recommendation(demo_unpacked):
    """Issue 9: every verdict says how fast the model would run here, in the CLI as on the Models page."""
    check = json.loads(atelier("models", "check", "demo", "--json").stdout)
    assert check["speed"]["unit"] == "tokens/s" and check["speed"]["value"] > 0
    assert check["speed"]["words"] == f"about {check['speed']['words'].split()[1]} tokens/s here"
    assert "read per token" in check["speed"]["basis"]
    text = atelier("models", "check", "demo").stdout.splitlines()
    assert text[0].startswith("CPU only · about ") and " tokens/s here: " in text[0]
    assert text[1] == f"  Speed: {check['speed']['basis']}"
    catalog = json.loads(atelier("models", "list", "--catalog", "--json").stdout)["models"]
    picks = [row for row in catalog if row["recommended"]]
    assert {row["kind"] for row in picks} <= {"chat", "image"} and len(picks) == len({r["kind"] for r in picks})
    assert catalog[0]["recommended"]  # listed first
    assert picks[0]["label"].startswith("★ recommended for this machine · ")
    fitting = [row for row in catalog if row["verdict"] != "wont_fit"]
    assert all(row["speed"] is not None for row in fitting)


@pytest.mark.slow
def test_models_list_shows_the_remote_servers_models_after_the_local_ones(demo_unpacked):
    """Issue 12: NAME/MODEL, marked remote, after the installed models; what each server listed last, no connection."""
    from engines.remote import RemoteServer, RemoteServers
    from engines.workspace import open_workspace

    url = "http://192.0.2.1:8000/v1"  # TEST-NET: never reached, listing asks no server
    RemoteServers.beside(open_workspace().models.file).add(
        RemoteServer("box", url, models=("Qwen/Qwen2.5-7B-Instruct", "llama")))
    text = atelier("models", "list")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("demo/gemma-3-270m-q4_k_m ") and len(lines) == 3
    assert lines[1:] == [f"{model:<42} {'—':>9}  remote · on the server 'box' ({url})"
                         for model in ("box/Qwen/Qwen2.5-7B-Instruct", "box/llama")]
    rows = json.loads(atelier("models", "list", "--json").stdout)["models"]
    assert [(row["id"], row["remote"]) for row in rows] == [
        ("demo/gemma-3-270m-q4_k_m", False), ("box/Qwen/Qwen2.5-7B-Instruct", True), ("box/llama", True)]
    assert rows[2] == {"id": "box/llama", "name": "llama · box (remote)", "kind": "chat", "engine": "remote",
                       "format": "remote", "size_bytes": None, "path": url, "source": "remote", "verdict": "remote",
                       "label": f"remote · on the server 'box' ({url})", "total_bytes": None, "speed": None,
                       "measured": None, "remote": True}
    offline = atelier("models", "list", env={**os.environ, "ATELIER_OFFLINE": "1"})
    assert offline.stdout.splitlines()[2] == (f"{'box/llama':<42} {'—':>9}  remote · on the server 'box' ({url}) · "
                                              "not used in offline mode")
