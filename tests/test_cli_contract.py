"""The ``atelier`` command's contract, through the real console script.

Exit 2 and one ``error:`` line for bad input, 1 and one line for a
failure, 130 for Ctrl-C, a quiet SIGPIPE end when stdout's reader goes
away, never a traceback; one ErrorKind enum with one exit-code table; the
commands never import ``desktop.cli`` or Qt.
"""

from __future__ import annotations

import ast
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from desktop.cli_contract import EXIT_BAD_INPUT, EXIT_CODES, EXIT_FAILED, EXIT_INTERRUPTED, CliError, exit_code_for
from engines.errors import EngineError, ErrorKind
from tests.fixtures.cli_runner import ROOT, atelier_script, cli_env, error_lines, run_atelier


def assert_one_error_line(run, code: int, expected: str) -> None:
    lines = error_lines(run)
    assert run.returncode == code, (run.returncode, lines)
    assert lines == [f"error: {expected}"], lines


# ---- one enum, one table ------------------------------------------------------


def test_every_error_kind_has_exactly_one_exit_code():
    assert set(EXIT_CODES) == set(ErrorKind)
    assert exit_code_for(ErrorKind.MEMORY) == EXIT_FAILED  # was 2 before: running out of memory is no typo
    assert exit_code_for(ErrorKind.UNAVAILABLE) == EXIT_FAILED  # a missing engine neither
    assert exit_code_for(ErrorKind.MODEL_FILE) == EXIT_BAD_INPUT
    assert exit_code_for("network") == EXIT_FAILED  # kinds arrive as plain strings from other processes
    assert exit_code_for("a kind from a newer version") == EXIT_FAILED
    assert exit_code_for(ErrorKind.CANCELLED) == EXIT_INTERRUPTED


def test_error_kinds_cross_processes_as_plain_strings():
    import pickle

    error = pickle.loads(pickle.dumps(EngineError("disk_full", "The disk is full.")))
    assert error.kind is ErrorKind.DISK_FULL and error.kind == "disk_full" and f"{error.kind}" == "disk_full"
    assert pickle.dumps(EngineError(ErrorKind.NETWORK, "x")).count(b"ErrorKind") == 0
    assert CliError.from_engine(EngineError(ErrorKind.MEMORY, "Not enough memory.")).code == EXIT_FAILED


def _engine_error_calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                "EngineError", "EngineCrashed") and node.args:
            yield node.lineno, node.args[0]


def test_no_module_raises_an_error_kind_as_a_bare_string():
    offenders = []
    for folder in ("engines", "desktop"):
        for path in (ROOT / folder).rglob("*.py"):
            for line, first in _engine_error_calls(path):
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    offenders.append(f"{path.relative_to(ROOT)}:{line} EngineError({first.value!r}, ...)")
    assert not offenders, offenders


def test_commands_never_import_the_cli_module():
    """cli.py imports the commands; the commands import cli_contract/cli_output, never cli.py (no cycle)."""
    shared = [ROOT / "desktop" / "cli_contract.py", ROOT / "desktop" / "cli_output.py"]
    offenders = []
    for path in [*sorted((ROOT / "desktop" / "commands").glob("*.py")), *shared]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n == "desktop.cli"]
    assert not offenders, offenders


@pytest.mark.slow
@pytest.mark.parametrize("args", [("chat", "--help"), ("models", "list"), ("models", "check", "demo", "--json")])
def test_the_cli_never_imports_qt(args):
    run = run_atelier(*args, env=cli_env(PYTHONPROFILEIMPORTTIME="1"))
    assert run.returncode == 0, error_lines(run)[-5:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in error_lines(run) if line.startswith("import time:")]
    assert "desktop.cli_contract" in imported  # the trace works: the command's own imports are in it
    assert [name for name in imported if name.split(".")[0] == "PySide6"] == []


# ---- bad input: one line, exit 2 ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env_change", [{}, {"PYTHONIOENCODING": "utf-8"}, {"LC_ALL": "C", "LANG": "C"}])
def test_invalid_utf8_on_stdin_is_bad_input(env_change):
    run = run_atelier("chat", "--model", "demo", input=b"hello \xff world", env=cli_env(**env_change))
    assert_one_error_line(run, 2, "the text on stdin is not valid UTF-8 (byte 0xff at offset 6); "
                                  "convert it first, e.g. with 'iconv -f latin1 -t utf-8'")


@pytest.mark.slow
@pytest.mark.parametrize("env_change", [{}, {"PYTHONIOENCODING": "utf-8"}, {"LC_ALL": "C", "LANG": "C"}])
def test_invalid_utf8_in_argv_is_bad_input(env_change):
    run = run_atelier("chat", "--model", "demo", "--prompt", b"ok \xff", env=cli_env(**env_change))
    assert_one_error_line(run, 2, "--prompt is not valid UTF-8 text (byte 0xff at position 3); pass UTF-8 text")
    run = run_atelier("chat", "--model", "demo", "--prompt", "hi", "--system", b"\xc3(", env=cli_env(**env_change))
    assert_one_error_line(run, 2, "--system is not valid UTF-8 text (byte 0xc3 at position 0); pass UTF-8 text")
    run = run_atelier("models", "pull", b"https://example.invalid/m\xe9.gguf", env=cli_env(**env_change))
    assert_one_error_line(run, 2, "SOURCE is not valid UTF-8 text (byte 0xe9 at position 25); pass UTF-8 text")


@pytest.mark.slow
def test_a_utf8_bom_on_stdin_is_not_part_of_the_prompt_and_an_empty_prompt_is_refused():
    run = run_atelier("chat", "--model", "demo", input="\ufeff  \n".encode("utf-8"))
    assert_one_error_line(run, 2, "the prompt is empty: pass --prompt TEXT or pipe the text on stdin")


@pytest.mark.slow
def test_usage_mistakes_are_one_error_line():
    run = run_atelier("chat", "--prompt", "hi")
    assert_one_error_line(run, 2, "the following arguments are required: --model (see 'atelier chat --help')")
    run = run_atelier("chat", "--model", "demo", "--max-tokens", "many")
    assert_one_error_line(run, 2, "argument --max-tokens: invalid int value: 'many' (see 'atelier chat --help')")
    run = run_atelier("--json")
    assert_one_error_line(run, 2, "unrecognized arguments: --json (see 'atelier --help')")


# ---- an unusable profile folder (D11) and --selftest's guard (D4) ----------------


@pytest.mark.slow
def test_atelier_home_that_is_a_file_is_one_clear_line_for_every_command(tmp_path):
    home = tmp_path / "afile"
    home.write_text("not a folder\n")
    expected = (f"cannot use ATELIER_HOME={home} for Atelier's files: {home}/data: Not a directory; "
                "set ATELIER_HOME to a folder you can write to")
    for args in (("models", "list"), ("doctor",), ("--selftest",), ("chat", "--model", "demo", "--prompt", "hi")):
        run = run_atelier(*args, env=cli_env(ATELIER_HOME=str(home)))
        assert_one_error_line(run, 2, expected)


@pytest.mark.slow
def test_atelier_home_under_proc_is_one_clear_line():
    run = run_atelier("chat", "--model", "demo", "--prompt", "hi", env=cli_env(ATELIER_HOME="/proc/atelier"))
    assert_one_error_line(run, 2, "cannot use ATELIER_HOME=/proc/atelier for Atelier's files: /proc/atelier: No such "
                                  "file or directory; set ATELIER_HOME to a folder you can write to")


def test_the_error_handler_survives_an_unusable_log_folder(tmp_path, monkeypatch, capsys):
    """A bug while the profile is unusable: one line, without the 'details in' that could not be written."""
    from desktop import cli

    home = tmp_path / "afile"
    home.write_text("x")
    monkeypatch.setenv("ATELIER_HOME", str(home))

    def buggy() -> int:
        raise ZeroDivisionError("division by zero")

    assert cli._guarded(buggy) == EXIT_FAILED
    assert capsys.readouterr().err == "error: unexpected ZeroDivisionError: division by zero\n"
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "fine"))
    assert cli._guarded(buggy) == EXIT_FAILED
    log = tmp_path / "fine" / "logs" / "cli.log"
    assert capsys.readouterr().err == f"error: unexpected ZeroDivisionError: division by zero (details in {log})\n"
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()


@pytest.mark.slow
def test_an_unwritable_log_folder_is_one_line(tmp_path, tiny_gguf):
    """As root, chmod does not stop writes: the immutable flag does (skipped where chattr cannot set it)."""
    home = tmp_path / "home"
    assert run_atelier("models", "list", env=cli_env(ATELIER_HOME=str(home))).returncode == 0
    logs = home / "logs"
    if os.geteuid() != 0 or subprocess.run(["chattr", "+i", str(logs)], capture_output=True).returncode != 0:
        pytest.skip("needs root and a file system where chattr +i works, to make a folder unwritable for root")
    try:
        run = run_atelier("chat", "--model", str(tiny_gguf), "--prompt", "hi", env=cli_env(ATELIER_HOME=str(home)))
    finally:
        subprocess.run(["chattr", "-i", str(logs)], check=True)
    # The engine host's log cannot be opened: a failure, said in one line (the traceback cannot be logged).
    assert_one_error_line(run, 1, f"{logs}/engine-host-cli.log: Operation not permitted")


# ---- pipes (D21) ---------------------------------------------------------------


def _run_into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """stdout is a pipe whose reader is gone before the command starts: the first write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([atelier_script(), *args], cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE,
                              env=cli_env(), timeout=600)
    finally:
        os.close(write_end)
    return proc


@pytest.mark.slow
def test_a_closed_stdout_ends_the_command_quietly_like_a_unix_tool():
    run = _run_into_a_closed_pipe("models", "list", "--catalog")
    assert run.returncode == 128 + signal.SIGPIPE and run.stderr == b""


@pytest.mark.slow
def test_models_list_into_head_exits_quietly_through_a_real_shell():
    script = f"set -o pipefail; '{atelier_script()}' models list --catalog | head -1; echo \"status=$?\" >&2"
    run = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, env=cli_env(), timeout=600)
    listed = subprocess.run([atelier_script(), "models", "list", "--catalog", "--json"], cwd=ROOT,
                            capture_output=True, env=cli_env(), timeout=600)
    first = json.loads(listed.stdout)["models"][0]["id"]  # the catalog is listed best for this machine first
    assert run.stdout.decode().splitlines() == [run.stdout.decode().rstrip("\n")]
    assert run.stdout.decode().startswith(first + " ")
    assert len(run.stdout.decode().splitlines()) == 1
    # Either the whole listing fitted in the pipe before head closed it (0), or the write failed (141).
    assert run.stderr.decode().strip() in ("status=0", "status=141"), run.stderr


@pytest.mark.slow
def test_chat_into_head_c_20_exits_quietly(gemma_path):
    script = (f"set -o pipefail; '{atelier_script()}' chat --model '{gemma_path}' --raw --prompt 'Once upon a time' "
              "--max-tokens 400 --temperature 1 --min-p 0 --seed 4 --ctx 1024 | head -c 20; echo \"status=$?\" >&2")
    run = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, env=cli_env(), timeout=600)
    assert len(run.stdout) == 20
    assert run.stderr.decode() == "status=141\n"  # 128 + SIGPIPE, and not a word more


@pytest.mark.slow
def test_ctrl_c_during_a_reply_is_130_and_one_line(gemma_path):
    proc = subprocess.Popen(
        [atelier_script(), "chat", "--model", str(gemma_path), "--raw", "--prompt", "Once upon a time",
         "--max-tokens", "2000", "--temperature", "1", "--min-p", "0", "--ctx", "4096"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), start_new_session=True)
    try:
        assert proc.stdout.read(1)  # the reply streams
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and stderr == b"error: interrupted\n", stderr


# ---- failures: exit 1 ------------------------------------------------------------


@pytest.mark.slow
def test_not_enough_memory_is_a_failure_not_bad_input(tiny_gguf):
    run = run_atelier("chat", "--model", str(tiny_gguf), "--prompt", "hi", "--ctx", "2000000000")
    lines = error_lines(run)
    assert run.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: Not enough memory for a context of 2,000,000,000 tokens: "), lines


# ---- doctor (item 7) ------------------------------------------------------------


@pytest.mark.slow
def test_doctor_hides_onnxruntimes_cloud_provider():
    onnxruntime = pytest.importorskip("onnxruntime")
    if "AzureExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build does not list AzureExecutionProvider")
    data = json.loads(run_atelier("doctor", "--json").stdout)
    assert data["accelerators"]["onnxruntime_providers"] == [
        p for p in onnxruntime.get_available_providers() if p != "AzureExecutionProvider"]
    assert "CPUExecutionProvider" in data["accelerators"]["onnxruntime_providers"]
    text = run_atelier("doctor").stdout.decode()
    assert "CPUExecutionProvider" in text and "Azure" not in text


def test_print_json_escapes_what_json_dumps_leaves_raw(monkeypatch):
    from desktop.cli_output import print_json

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    print_json({"name": "a\x1b[2Jb\x9bc\x7f\udcffé"})
    out.flush()
    text = out.buffer.getvalue().decode("utf-8")
    assert text == '{"name": "a\\u001b[2Jb\\u009bc\\u007f\\udcffé"}\n'
    assert json.loads(text)["name"] == "a\x1b[2Jb\x9bc\x7f\udcffé"
