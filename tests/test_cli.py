"""The headless command: `atelier chat` and `atelier doctor`, as a user runs them."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("llama_cpp")


def atelier(*args, input=None, timeout=120):
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    return subprocess.run(
        [sys.executable, "-m", "desktop", *args],
        cwd=ROOT, input=input, capture_output=True, text=True, timeout=timeout, env=env,
    )


def test_chat_json_on_gemma(gemma_path):
    run = atelier("chat", "--model", str(gemma_path), "--prompt", "Name three colors.", "--json",
                  "--max-tokens", "24", "--seed", "1", "--ctx", "1024")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    data = json.loads(lines[-1])
    assert len(lines) == 1
    for key in ("text", "completion_tokens", "tokens_per_second", "time_to_first_token_s", "template"):
        assert key in data
    assert data["template"] == "gemma" and data["completion_tokens"] > 0 and data["text"].strip()


def test_chat_streams_text_and_reads_stdin(tiny_gguf):
    run = atelier("chat", "--model", str(tiny_gguf), "--max-tokens", "5", "--seed", "3", input="hello from stdin")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


def test_raw_mode(tiny_gguf):
    run = atelier("chat", "--model", str(tiny_gguf), "--prompt", "abc", "--raw", "--json", "--max-tokens", "3")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["template"] == "raw"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "/nonexistent/model.gguf", "--prompt", "hi"], "does not exist"),
        (["--model", "{tiny}", "--prompt", "   "], "prompt is empty"),
        (["--model", "{notgguf}", "--prompt", "hi"], "not a GGUF"),
        (["--model", "{tiny}", "--prompt", "hi", "--temperature", "-1"], "temperature"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(tiny_gguf, tmp_path, args, words):
    notgguf = tmp_path / "photo.gguf"
    notgguf.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    args = [a.format(tiny=tiny_gguf, notgguf=notgguf) for a in args]
    run = atelier("chat", *args)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_killed_engine_ends_the_cli_with_one_line(gemma_path):
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop", "chat", "--model", str(gemma_path), "--prompt", "Write a long story.",
         "--max-tokens", "2000", "--ctx", "4096", "--temperature", "1.0", "--min-p", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        first = proc.stdout.read(1)  # tokens are flowing
        assert first
        children = [c for c in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(c.cmdline())]
        assert children, "no engine host process"
        for child in children:
            child.kill()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "stopped unexpectedly" in lines[0], stderr


def test_doctor_json_matches_the_os():
    run = atelier("doctor", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["cpu"]["logical_cores"] == psutil.cpu_count(logical=True)
    assert data["cpu"]["physical_cores"] == psutil.cpu_count(logical=False)
    assert abs(data["memory"]["total_bytes"] - psutil.virtual_memory().total) < 1e6
    assert isinstance(data["gpus"], list) and data["disk"]["free_bytes"] > 0
    names = {e["name"]: e for e in data["engines"]}
    assert names["llama_cpp"]["available"]
    assert data["llama_cpp"]["gpu_offload"] in (True, False)


def test_doctor_text():
    run = atelier("doctor")
    assert run.returncode == 0 and "CPU:" in run.stdout and "llama.cpp" in run.stdout


def test_selftest_loads_the_demo_model_and_generates():
    run = atelier("--selftest")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["selftest"] == "ok" and data["completion_tokens"] >= 1


def test_chat_with_a_q8_0_cache_on_gemma(gemma_path):
    run = atelier("chat", "--model", str(gemma_path), "--prompt", "Name three colors.", "--json",
                  "--max-tokens", "6", "--seed", "1", "--ctx", "512", "--cache-type", "q8_0")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["cache_type"] == "q8_0" and data["flash_attention"] is True
    assert data["kv_cache_bytes"] > 0 and data["completion_tokens"] > 0


def test_a_refused_cache_type_is_one_error_line(tiny_gguf):
    run = atelier("chat", "--model", str(tiny_gguf), "--prompt", "hi", "--cache-type", "q4_0")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "q4_0 context cache" in lines[0], run.stderr
