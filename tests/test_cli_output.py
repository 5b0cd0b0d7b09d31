"""What the CLI prints: hostile names made inert (D19), model text, and the demo's note (issue 9)."""

from __future__ import annotations

import json
import os

import pytest

from desktop.cli_output import clean, model_text_filter, strip_terminal_controls
from desktop.commands.chat import DEMO_NOTE
from tests.fixtures.cli_runner import ROOT, error_lines, run_atelier

HOSTILE = "Evil\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mRED\x1b[0m\r\nfake line"
RAW_CONTROLS = (b"\x1b", b"\x07", b"\r", b"\x9b")


def test_clean_makes_every_control_character_visible_and_inert():
    assert clean(HOSTILE) == "Evil\\x1b]0;PWNED-TITLE\\x07\\x1b[2J\\x1b[31mRED\\x1b[0m\\r\\nfake line"
    assert clean("tab\there, C1 \x9b2J, DEL \x7f, NUL \x00") == "tab\there, C1 \\x9b2J, DEL \\x7f, NUL \\x00"
    assert clean("caf\udcc3\udca9.gguf") == "caf\\xc3\\xa9.gguf"  # undecodable bytes of a file name
    assert clean("Ünïcödé 模型 🙂 stays") == "Ünïcödé 模型 🙂 stays"
    assert clean(5) == "5"


def test_model_text_is_stripped_on_a_terminal_and_exact_in_a_pipe(tmp_path):
    assert strip_terminal_controls(HOSTILE) == "EvilRED\nfake line"
    assert strip_terminal_controls("```\n\tcode\n```") == "```\n\tcode\n```"
    assert strip_terminal_controls("a\x1b]52;c;SGVsbG8=\x07b") == "ab"  # OSC 52 would set the clipboard
    assert strip_terminal_controls("x\x1b") == "x"  # a sequence cut by a token boundary loses its ESC
    primary, secondary = os.openpty()
    try:
        with os.fdopen(secondary, "w", closefd=False) as tty:
            assert model_text_filter(tty)(HOSTILE) == "EvilRED\nfake line"
    finally:
        os.close(primary)
        os.close(secondary)
    with open(tmp_path / "out.txt", "w") as file:
        assert model_text_filter(file)(HOSTILE) == HOSTILE


@pytest.mark.slow
def test_a_hostile_path_in_an_error_is_escaped(tmp_path):
    path = tmp_path / "x\x1b]0;PWNED\x07\x1b[2J\r\nerror: fake.gguf"
    run = run_atelier("chat", "--model", str(path), "--prompt", "hi")
    lines = error_lines(run)
    assert run.returncode == 2 and len(lines) == 1, lines
    assert not any(c in run.stderr for c in RAW_CONTROLS)
    assert "x\\x1b]0;PWNED\\x07\\x1b[2J\\r\\nerror: fake.gguf" in lines[0]


@pytest.mark.slow
def test_a_hostile_model_name_is_escaped_on_import(tiny_gguf, tmp_path):
    evil = tmp_path / "evil.gguf"
    data = tiny_gguf.read_bytes()
    name = b"\x1b]0;PWN\x07\x1b[2J\r\nX"  # as long as "Tiny Test Llama": the GGUF string keeps its length
    assert len(name) == len(b"Tiny Test Llama") and data.count(b"Tiny Test Llama") == 1
    evil.write_bytes(data.replace(b"Tiny Test Llama", name))
    run = run_atelier("models", "import", str(evil))
    assert run.returncode == 0, error_lines(run)
    assert run.stdout.startswith(b"Added ") and not any(c in run.stdout + run.stderr for c in RAW_CONTROLS)
    listing = run_atelier("models", "list")
    assert listing.returncode == 0 and not any(c in listing.stdout for c in RAW_CONTROLS)


# ---- the demo is a base model (issue 9) -------------------------------------------


@pytest.fixture
def demo_home(atelier_home, gemma_path):
    """A fresh profile whose demo file is already on disk (a link to the cached Gemma: no 253 MB write)."""
    from engines.library.demo import DEMO_FILE
    from engines.workspace import open_workspace

    open_workspace()  # registers the demo, as a first start does
    target = atelier_home / "data" / "models" / DEMO_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(gemma_path)
    return atelier_home


@pytest.mark.slow
def test_chat_with_the_demo_says_it_is_a_base_model(demo_home):
    run = run_atelier("chat", "--model", "demo", "--prompt", "Name three colors.", "--max-tokens", "4", "--seed", "1")
    assert run.returncode == 0, error_lines(run)
    assert error_lines(run) == [f"note: {DEMO_NOTE}"]
    assert "'atelier models list --catalog'" in DEMO_NOTE and "'atelier models pull ID'" in DEMO_NOTE
    assert run.stdout.strip()


@pytest.mark.slow
def test_chat_json_with_the_demo_puts_the_note_in_the_json(demo_home):
    run = run_atelier("chat", "--model", "demo", "--prompt", "Name three colors.", "--max-tokens", "4", "--json")
    assert run.returncode == 0 and run.stderr == b"", error_lines(run)
    data = json.loads(run.stdout)
    assert data["note"] == DEMO_NOTE and data["completion_tokens"] > 0


@pytest.mark.slow
def test_no_demo_note_for_raw_completion_or_another_model(demo_home, tiny_gguf):
    raw = run_atelier("chat", "--model", "demo", "--raw", "--prompt", "The sky is", "--max-tokens", "3", "--json")
    assert raw.returncode == 0 and raw.stderr == b"" and "note" not in json.loads(raw.stdout)
    other = run_atelier("chat", "--model", str(tiny_gguf), "--prompt", "hi", "--max-tokens", "3", "--threads", "1")
    assert other.returncode == 0 and not any(line.startswith("note: the demo") for line in error_lines(other))


def test_the_readme_says_the_demo_is_a_base_model():
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())  # wrapped lines read as one
    assert "The demo, Gemma 3 270M, is a base model for trying the app out" in text
    assert 'atelier chat --model demo --prompt "Name three colors."' not in text
