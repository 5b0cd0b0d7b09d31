"""The headless command: `atelier chat` and `atelier doctor`, as a user runs them (the real console script)."""

import json
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.fixtures.cli_runner import atelier_script, cli_env

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("llama_cpp")


def atelier(*args, input=None, timeout=600):
    return subprocess.run([atelier_script(), *args], cwd=ROOT, input=input, capture_output=True, text=True,
                          timeout=timeout, env=cli_env())


@pytest.mark.slow
def test_chat_json_on_gemma_with_a_q8_0_cache(gemma_path):
    """One JSON line with the reply and its figures, here with a q8_0 context cache (one Gemma run for both checks;
    the default f16 cache answers in JSON in test_cli_output.py's demo tests)."""
    run = atelier("chat", "--model", str(gemma_path), "--prompt", "Name three colors.", "--json",
                  "--max-tokens", "24", "--seed", "1", "--ctx", "1024", "--cache-type", "q8_0")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    data = json.loads(lines[-1])
    assert len(lines) == 1
    for key in ("text", "completion_tokens", "tokens_per_second", "time_to_first_token_s", "template"):
        assert key in data
    assert data["template"] == "gemma" and data["completion_tokens"] > 0 and data["text"].strip()
    assert data["cache_type"] == "q8_0" and data["flash_attention"] is True
    assert data["kv_cache_bytes"] > 0 and data["completion_tokens"] > 0


@pytest.mark.slow
def test_chat_streams_text_and_reads_stdin(tiny_gguf):
    run = atelier("chat", "--model", str(tiny_gguf), "--max-tokens", "5", "--seed", "3", "--threads", "1",
                  input="hello from stdin")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


@pytest.mark.slow
def test_raw_mode(tiny_gguf):
    run = atelier("chat", "--model", str(tiny_gguf), "--prompt", "abc", "--raw", "--json", "--max-tokens", "3",
                  "--threads", "1")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["template"] == "raw"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model.gguf", "--prompt", "hi"],
         "The model file or folder does not exist: /nonexistent/model.gguf."),
        (["--model", "{tiny}", "--prompt", "   "], "the prompt is empty: pass --prompt TEXT or pipe the text on stdin"),
        (["--model", "{notgguf}", "--prompt", "hi"], "photo.gguf: This is not a GGUF model file (it starts with b'\\x89PNG')."),
        (["--model", "{tiny}", "--prompt", "hi", "--temperature", "-1"], "temperature must be between 0 and 5"),
    ],
)
@pytest.mark.slow
def test_bad_input_exits_2_with_one_error_line(tiny_gguf, tmp_path, args, message):
    notgguf = tmp_path / "photo.gguf"
    notgguf.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    args = [a.format(tiny=tiny_gguf, notgguf=notgguf) for a in args]
    run = atelier("chat", *args)
    assert run.returncode == 2
    assert run.stderr == f"error: {message}\n"


@pytest.mark.slow
def test_killed_engine_ends_the_cli_with_one_line(gemma_path):
    env = cli_env()
    proc = subprocess.Popen(
        [atelier_script(), "chat", "--model", str(gemma_path), "--prompt", "Write a long story.",
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_doctor_text():
    run = atelier("doctor")
    assert run.returncode == 0 and "CPU:" in run.stdout and "llama.cpp" in run.stdout


@pytest.mark.slow
def test_selftest_loads_the_demo_model_and_generates():
    run = atelier("--selftest")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["selftest"] == "ok" and data["completion_tokens"] >= 1


@pytest.mark.slow
def test_a_refused_cache_type_is_one_error_line(tiny_gguf):
    run = atelier("chat", "--model", str(tiny_gguf), "--prompt", "hi", "--cache-type", "q4_0")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "q4_0 context cache" in lines[0], run.stderr
