"""``atelier serve``: the real console script, headless, with its contract (one ``error:`` line, exit codes)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from tests.fixtures.cli_runner import ROOT, atelier_script, cli_env, error_lines, run_atelier
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

HANG_GUARD_S = 300


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_show_token_prints_the_same_private_token_every_time(atelier_home):
    first = run_atelier("serve", "--show-token", env=cli_env(ATELIER_API_KEY=None))
    second = run_atelier("serve", "--show-token", env=cli_env(ATELIER_API_KEY=None))
    assert first.returncode == 0, first.stderr
    token = first.stdout.decode().strip()
    assert len(token) >= 40 and second.stdout.decode().strip() == token
    token_file = atelier_home / "config" / "server-token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    given = run_atelier("serve", "--show-token", env=cli_env(ATELIER_API_KEY="my-own-key-42"))
    assert given.stdout.decode().strip() == "my-own-key-42"
    other_var = run_atelier("serve", "--show-token", "--api-key-env", "MY_KEY", env=cli_env(MY_KEY="from-my-var-1"))
    assert other_var.stdout.decode().strip() == "from-my-var-1"


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0", "--no-token"],
     "error: binding to 0.0.0.0 reaches beyond this machine, so the API token is required there; drop --no-token"),
    (["--cors-origin", "*"], "error: a wildcard CORS origin would let any web page use the API; name each origin "
                             "exactly, e.g. --cors-origin http://localhost:3000"),
    (["--ctx", "10"], "error: --ctx must be at least 64"),
    (["--model", "no-such-model"], "error: --model: No installed model, catalog model or file is called "
                                   "'no-such-model'. See 'atelier models list' (and --catalog)."),
    (["--port", "70000"], "error: the port must be between 1 and 65535, not 70000"),
])
@pytest.mark.slow
def test_bad_options_are_one_error_line_and_exit_2(args, message):
    run = run_atelier("serve", *args)
    assert run.returncode == 2, run.stderr
    assert error_lines(run) == [message]


@pytest.mark.slow
def test_a_port_in_use_is_one_error_line_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_atelier("serve", "--port", str(port))
    assert run.returncode == 1
    assert error_lines(run) == [f"error: port {port} on 127.0.0.1 is already in use; choose another with --port"]


@pytest.mark.slow
def test_serve_preloads_answers_the_openai_client_and_stops_on_sigterm(tmp_path, atelier_home):
    import openai

    model = write_tiny_llama_gguf(tmp_path / "tiny-llama.gguf")
    assert run_atelier("models", "import", str(model)).returncode == 0
    port = _free_port()
    env = cli_env(ATELIER_API_KEY="cli-test-token-1")
    serve = subprocess.Popen([atelier_script(), "serve", "--port", str(port), "--model", "local/tiny-llama",
                              "--ctx", "256"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        banner = serve.stdout.readline()  # printed once the model is loaded and the port is listening
        assert banner.startswith(f"Atelier API at http://127.0.0.1:{port}/v1"), banner + serve.stderr.read()
        assert serve.stdout.readline() == "API token: from $ATELIER_API_KEY\n"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="cli-test-token-1", max_retries=0)
        reply = client.chat.completions.create(model="local/tiny-llama", max_tokens=5, seed=1,
                                               messages=[{"role": "user", "content": "secret-words-in-the-prompt"}])
        assert reply.usage.completion_tokens == 5
        import httpx2

        refused = httpx2.get(f"http://127.0.0.1:{port}/v1/models", headers={
            "Authorization": "Bearer cli-test-token-1", "Origin": "http://localhost:3000"})
        assert (refused.status_code, refused.json()["error"]["message"]) == (403, (  # the CLI's flag, not the page's
            "Requests from web pages at http://localhost:3000 are not allowed; start the server with --cors-origin "
            "http://localhost:3000 to allow them."))
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=HANG_GUARD_S)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0, err
    lines = err.splitlines()
    assert lines[0] == "note: loading local/tiny-llama"
    request_line = next(line for line in lines if "/v1/chat/completions" in line)
    assert request_line.split("  ")[1:] == ["POST", "/v1/chat/completions", "200", "local/tiny-llama",
                                            request_line.split("  ")[5], request_line.split("  ")[6], "length"]
    assert lines[-1] == "note: stopping"
    assert "secret-words" not in err + out
    assert "secret-words" not in (atelier_home / "logs" / "server.log").read_text()
    assert "Traceback" not in err


@pytest.mark.slow
def test_serve_never_imports_qt(tmp_path, atelier_home):
    """The serving process, asked for its models over HTTP, has not imported PySide6 (headless servers have no Qt)."""
    port = _free_port()
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time, json, urllib.request
        from desktop.cli import main

        def probe():
            request = urllib.request.Request("http://127.0.0.1:{port}/v1/models",
                                             headers={{"Authorization": "Bearer probe-token-123"}})
            for _ in range(600):
                try:
                    with urllib.request.urlopen(request) as answer:
                        models = json.load(answer)
                    break
                except OSError:
                    time.sleep(0.1)
            print("QT", any(name.split(".")[0] == "PySide6" for name in sys.modules), len(models["data"]), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=probe, daemon=True).start()
        sys.exit(main(["serve", "--port", "{port}"]))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         env=cli_env(ATELIER_API_KEY="probe-token-123", DISPLAY=None, WAYLAND_DISPLAY=None),
                         timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stderr
    assert "QT False 1" in run.stdout  # the demo model is listed, and Qt was never imported
