"""'atelier chat --tools' and 'atelier chat --json-schema' on the real demo model (Gemma 3 270M).

The demo model has no tool format, so the loop runs under the grammar
fallback, and a non-interactive run refuses calls unless --allow-tools.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.fixtures.cli_runner import error_lines, run_atelier
from tests.fixtures.mcp_servers import time_server_command

# Nested objects, enums and arrays, with every string and array bounded so that a reply always fits.
TRIP = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "season": {"enum": ["spring", "summer", "autumn", "winter"]},
        "days": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object",
            "properties": {"title": {"type": "string", "maxLength": 30},
                           "mood": {"enum": ["calm", "busy"]},
                           "meals": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 20}}},
            "required": ["title", "mood", "meals"], "additionalProperties": False}},
        "budget": {"type": "object", "properties": {"currency": {"enum": ["EUR", "USD"]}, "amount": {"type": "integer"}},
                   "required": ["currency", "amount"], "additionalProperties": False},
    },
    "required": ["city", "season", "days", "budget"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_json_schema_replies_validate_for_every_seed(tmp_path):
    schema_file = tmp_path / "trip.json"
    schema_file.write_text(json.dumps(TRIP))
    for seed in ("1", "2", "3"):
        run = run_atelier("chat", "--model", "demo", "--prompt", "Plan a trip to Lisbon as JSON.", "--json-schema",
                          str(schema_file), "--seed", seed, "--max-tokens", "400", "--ctx", "1024", "--json")
        assert run.returncode == 0, error_lines(run)
        data = json.loads(run.stdout)
        assert data["finish_reason"] == "stop", data
        jsonschema.validate(json.loads(data["text"]), TRIP)


def test_json_schema_bad_files_and_schemas_are_one_line(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "torn.json").write_text('{"type": ')
    (tmp_path / "bounds.json").write_text(json.dumps({"type": "integer", "minimum": 3}))
    cases = {
        "missing.json": f"error: --json-schema {tmp_path / 'missing.json'}: No such file or directory",
        "list.json": f"error: --json-schema {tmp_path / 'list.json'} must hold a JSON object (a schema), not list",
        "torn.json": f"error: --json-schema {tmp_path / 'torn.json'} is not JSON (Expecting value: line 1 column 10 "
                     "(char 9))",
    }
    for name, line in cases.items():
        run = run_atelier("chat", "--model", "demo", "--prompt", "hi", "--json-schema", str(tmp_path / name))
        assert (run.returncode, error_lines(run)) == (2, [line])
    both = run_atelier("chat", "--model", "demo", "--prompt", "hi", "--json-schema", str(tmp_path / "list.json"),
                       "--tools", "time")
    assert error_lines(both) == ["error: --json-schema and --tools cannot be combined: a reply that calls tools is "
                                 "not one JSON answer"]
    lone = run_atelier("chat", "--model", "demo", "--prompt", "hi", "--allow-tools")
    assert error_lines(lone) == ["error: --allow-tools, --tool-choice and --max-tool-calls need --tools SERVER[,SERVER]"]
    no_image_model = run_atelier("chat", "--model", "demo", "--prompt", "hi", "--tools", "atelier")
    assert error_lines(no_image_model)[-1] == (
        "error: the image tool (--tools atelier) uses the Images page's model, and none is chosen yet: pick one on "
        "the Images page")
    unknown = run_atelier("chat", "--model", "demo", "--prompt", "hi", "--tools", "nope")
    assert unknown.returncode == 2
    assert error_lines(unknown)[-1] == (
        "error: There is no tool server called 'nope' (added: none yet). Add one with 'atelier tools add NAME -- "
        "COMMAND' or 'atelier tools add NAME --url URL'.")


@pytest.mark.slow
def test_a_schema_llama_cpp_cannot_enforce_is_refused_in_words(tmp_path):
    schema = tmp_path / "bounds.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}))
    run = run_atelier("chat", "--model", "demo", "--prompt", "hi", "--json-schema", str(schema))
    assert run.returncode == 2
    assert error_lines(run)[-1] == (
        "error: The JSON schema cannot be used to constrain the reply: llama.cpp's grammar cannot enforce 'minimum' "
        "(at /properties/n); leave it out and check that rule after the reply.")


@pytest.mark.slow
def test_chat_with_the_real_time_tool_refused_without_allow_tools_then_allowed():
    assert run_atelier("tools", "add", "time", "--", *time_server_command()).returncode == 0
    ask = ("chat", "--model", "demo", "--prompt", "What time is it in Tokyo?", "--tools", "time",
           "--tool-choice", "required", "--max-tool-calls", "1", "--seed", "3", "--max-tokens", "80", "--ctx", "2048")
    refused = run_atelier(*ask, "--json")
    assert refused.returncode == 0, error_lines(refused)
    data = json.loads(refused.stdout)
    [call] = data["tool_calls"]
    assert (call["server"], call["status"]) == ("time", "refused")
    assert call["result"] == ("The user did not allow this call (a non-interactive run: 'atelier chat --allow-tools' "
                              "allows tool calls).")
    assert data["tool_mode"] == "Tool calls through a JSON grammar (this model's template has no tool format)"

    allowed = run_atelier(*ask, "--allow-tools")
    assert allowed.returncode == 0, error_lines(allowed)
    lines = error_lines(allowed)
    assert "note: tools: get_current_time, convert_time. Tool calls through a JSON grammar (this model's template " \
           "has no tool format)." in lines
    shown = [line for line in lines if line.startswith("tool: time.")]
    assert len(shown) == 2 and shown[1].startswith(shown[0].split(" {")[0] + " ")
    assert shown[1].split(" ")[2] in ("done:", "error:")


@pytest.mark.slow
def test_on_a_terminal_each_call_is_asked_for_and_no_refuses_it():
    import os
    import pty
    import subprocess

    from tests.fixtures.cli_runner import ROOT, atelier_script, cli_env

    assert run_atelier("tools", "add", "time", "--", *time_server_command()).returncode == 0
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [atelier_script(), "chat", "--model", "demo", "--prompt", "What time is it in Tokyo?", "--tools", "time",
         "--tool-choice", "required", "--max-tool-calls", "1", "--seed", "3", "--max-tokens", "60", "--ctx", "2048"],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=cli_env())
    os.close(slave)
    output = b""

    def read_until(marker: bytes | None) -> None:
        nonlocal output
        while marker is None or marker not in output:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                return
            if not chunk:
                return
            output += chunk

    try:
        read_until(b"[n]o: ")
        os.write(master, b"n\n")
        read_until(None)
    finally:
        os.close(master)
        process.wait()
    text = output.decode("utf-8", "replace").replace("\r\n", "\n")
    assert process.returncode == 0, text
    asked = [line for line in text.splitlines() if line.startswith("Allow time.")]
    assert len(asked) == 1 and asked[0].endswith("? [y]es once, [a]lways for this tool, [n]o: n")
    tool = asked[0].split(" ")[1]
    assert f"tool: {tool} refused: The user did not allow this call." in text.splitlines()
