"""MCP servers through engines.tools and 'atelier tools': real servers, and ones that misbehave.

The real servers are nobody's here: mcp-server-time (PyPI) and
@modelcontextprotocol/server-everything (npm, on Node.js). The bad ones
crash on start, hang, flood their output, die mid-call, or are not
installed; each must end as one line, with the server stopped.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.errors import ErrorKind
from engines.tools.connection import McpConnection, ToolServerError
from engines.tools.servers import FILE_NAME, ListedTool, ToolServer, ToolServers
from tests.fixtures.cli_runner import error_lines, run_atelier
from tests.fixtures.mcp_servers import bad_server_command, everything_server_command, time_server_command

TOKYO = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}


def _out(run) -> str:
    return run.stdout.decode()


@pytest.mark.slow
def test_cli_adds_lists_calls_and_removes_the_real_time_server(atelier_home):
    command = time_server_command()
    added = run_atelier("tools", "add", "time", "--timeout", "20", "--", *command)
    assert added.returncode == 0, added.stderr
    assert _out(added) == (f"Added 'time' ({' '.join(command)}): 2 tools, get_current_time, convert_time.\n")

    listing = run_atelier("tools", "list")
    assert _out(listing).splitlines() == [
        f"time  {' '.join(command)}  (enabled; calls time out after 20 s)",
        "  get_current_time: Get current time in a specific timezone",
        "  convert_time: Convert time between timezones",
    ]
    data = json.loads(run_atelier("tools", "list", "--json").stdout)["servers"][0]
    assert (data["name"], data["command"], data["url"], data["enabled"]) == ("time", command, None, True)
    assert data["tools"][1]["input_schema"]["required"] == ["source_timezone", "time", "target_timezone"]

    called = run_atelier("tools", "call", "time", "convert_time", json.dumps(TOKYO), "--json")
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert result["is_error"] is False
    assert result["structured"]["target"]["datetime"].startswith(f"{time.strftime('%Y-%m-%d', time.gmtime())}T21:00:00+09:00") \
        or result["structured"]["target"]["datetime"].endswith("T21:00:00+09:00")
    assert result["structured"]["time_difference"] == "+9.0h"

    # Arguments are checked against the tool's schema before anything is sent.
    missing = run_atelier("tools", "call", "time", "convert_time", '{"source_timezone": "UTC"}')
    assert missing.returncode == 2
    assert error_lines(missing) == ["error: The arguments for 'convert_time' do not match its schema: 'time' is a "
                                    "required property; 'target_timezone' is a required property."]
    unknown = run_atelier("tools", "call", "time", "get_weather", "{}")
    assert error_lines(unknown) == ["error: There is no tool 'get_weather' on 'time'. The tools are: convert_time, "
                                    "get_current_time."]
    # The tool's own failure is printed, and the exit status says so.
    refused = run_atelier("tools", "call", "time", "get_current_time", '{"timezone": "Mars/Olympus"}')
    assert refused.returncode == 2
    assert _out(refused) == "Error executing tool get_current_time: Invalid timezone: 'No time zone found with key Mars/Olympus'\n"
    assert error_lines(refused) == ["error: the tool 'get_current_time' reported an error (above)"]

    assert _out(run_atelier("tools", "disable", "time")) == "'time' is disabled: it will not be started.\n"
    disabled = run_atelier("tools", "call", "time", "get_current_time", '{"timezone": "UTC"}')
    assert error_lines(disabled) == ["error: the tool server 'time' is disabled; 'atelier tools enable time' lets it run"]
    assert _out(run_atelier("tools", "enable", "time")) == "'time' is enabled.\n"

    # --refresh asks each enabled server again; one that no longer starts is a warning, and the list goes on.
    file = atelier_home / "data" / FILE_NAME
    data = json.loads(file.read_text())
    data["servers"].append({**data["servers"][0], "name": "gone", "command": ["no-such-mcp-server-xyz"]})
    file.write_text(json.dumps(data))
    refreshed = run_atelier("tools", "list", "--refresh", "--json")
    assert refreshed.returncode == 0
    assert error_lines(refreshed) == ["warning: The tool server 'gone' could not start: the program "
                                      "'no-such-mcp-server-xyz' was not found. Is it installed, and on the PATH?"]
    listed = {s["name"]: s for s in json.loads(refreshed.stdout)["servers"]}
    assert (listed["time"]["error"], len(listed["time"]["tools"])) == (None, 2)
    assert listed["gone"]["error"].startswith("The tool server 'gone' could not start")
    assert run_atelier("tools", "remove", "gone").returncode == 0

    removed = run_atelier("tools", "remove", "time")
    assert _out(removed) == f"Removed 'time' ({' '.join(command)}).\n"
    assert json.loads(file.read_text())["servers"] == []


def test_cli_bad_input_is_one_line_and_nothing_is_added(atelier_home):
    cases = {
        ("tools", "add", "gone", "--", "no-such-mcp-server-xyz"):
            "error: The tool server 'gone' could not start: the program 'no-such-mcp-server-xyz' was not found. "
            "Is it installed, and on the PATH?",
        ("tools", "add", "time", "mcp-server-time"):
            "error: put the server's command after '--': atelier tools add time -- mcp-server-time",
        ("tools", "add", "x"): "error: no server given: 'atelier tools add NAME -- COMMAND [ARGS...]' or "
                               "'atelier tools add NAME --url URL'",
        ("tools", "add", "Bad Name", "--", "true"):
            "error: 'Bad Name' cannot name a tool server: use 1 to 32 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. time).",
        ("tools", "add", "atelier", "--", "true"):
            "error: 'atelier' is the name of Atelier's own tools: choose another name for the server.",
        ("tools", "add", "web", "--url", "ftp://example.org/mcp"):
            "error: The URL must start with http:// or https://, not ftp://.",
        ("tools", "add", "gh", "--secret-env", "ATELIER_TEST_UNSET_TOKEN", "--", "true"):
            "error: --secret-env ATELIER_TEST_UNSET_TOKEN: the variable ATELIER_TEST_UNSET_TOKEN is not set here, so "
            "there is no value to keep. Set it for this command only, e.g. ATELIER_TEST_UNSET_TOKEN=... atelier tools "
            "add gh --secret-env ATELIER_TEST_UNSET_TOKEN -- COMMAND",
        ("tools", "call", "nope", "t", "{}"):
            "error: There is no tool server called 'nope' (added: none yet). Add one with 'atelier tools add NAME "
            "-- COMMAND' or 'atelier tools add NAME --url URL'.",
    }
    for args, line in cases.items():
        run = run_atelier(*args)
        assert (run.returncode, error_lines(run)) == (2, [line]), args
    crash = run_atelier("tools", "add", "crash", "--", *bad_server_command("crash"))
    assert (crash.returncode, error_lines(crash)) == (
        1, ["error: The tool server 'crash' stopped while starting. It said: fatal: no configuration found"])
    assert not (atelier_home / "data" / FILE_NAME).exists()


@pytest.mark.slow
def test_everything_server_tools_echo_add_and_progress_in_order():
    server = ToolServer("everything", command=tuple(everything_server_command()), timeout_s=60)
    with McpConnection(server) as connection:
        names = [tool.name for tool in connection.list_tools()]
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= set(names)
        assert connection.call("echo", {"message": "héllo"}).text == "Echo: héllo"
        assert connection.call("get-sum", {"a": 2, "b": 40}).text == "The sum of 2 and 40 is 42."
        progress = []
        outcome = connection.call("trigger-long-running-operation", {"duration": 1, "steps": 4},
                                  on_progress=lambda value, total, message: progress.append((value, total)))
        assert outcome.text == "Long running operation completed. Duration: 1 seconds, Steps: 4."
        assert progress == [(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)]


@pytest.mark.slow
def test_bad_servers_each_end_as_one_line_and_are_stopped():
    with pytest.raises(ToolServerError) as hang:
        McpConnection(ToolServer("hang", command=tuple(bad_server_command("hang"))), connect_timeout_s=2).list_tools()
    assert hang.value.message == "The tool server 'hang' did not start within 2 s, so it was stopped."
    with pytest.raises(ToolServerError) as flood:
        McpConnection(ToolServer("flood", command=tuple(bad_server_command("flood"))), connect_timeout_s=2).list_tools()
    assert flood.value.message.startswith("The tool server 'flood' did not start within 2 s, so it was stopped. "
                                          "It said: noise noise")
    assert len(flood.value.message) < 400  # the last line of a bounded tail, not the flood

    dying = ToolServer("dying", command=tuple(bad_server_command("dies_on_call")), timeout_s=3)
    with McpConnection(dying) as connection:
        assert [t.name for t in connection.list_tools()] == ["explode", "slow", "flood"]
        with pytest.raises(ToolServerError) as died:
            connection.call("explode", {"reason": "test"})
        assert died.value.message == "The tool server 'dying' stopped while asked to run 'explode'."
        # The next call starts the server again; a call past its timeout stops it.
        with pytest.raises(ToolServerError) as slow:
            connection.call("slow", {"seconds": 30})
        assert slow.value.message == "The tool server 'dying' did not run 'slow' within 3 s, so it was stopped."
        assert connection.call("slow", {"seconds": 0}).text == "done"
        # Garbage over the channel mid-call: the call ends at its timeout as one bounded line, the server is stopped.
        with pytest.raises(ToolServerError) as flooded:
            connection.call("flood", {"lines": 100_000})
        assert flooded.value.message.startswith("The tool server 'dying' did not run 'flood' within 3 s, so it was "
                                                "stopped.")
        assert len(flooded.value.message) < 400
        assert connection.call("slow", {"seconds": 0}).text == "done"


def test_a_result_that_is_not_mcp_is_one_line_and_the_next_call_starts_afresh():
    garbage = ToolServer("garbage", command=tuple(bad_server_command("garbage")), timeout_s=20)
    with McpConnection(garbage) as connection:
        assert [t.name for t in connection.list_tools()] == ["echo"]
        for _ in range(2):
            with pytest.raises(ToolServerError) as bad:
                connection.call("echo", {"text": "hi"})
            assert bad.value.message == ("The tool server 'garbage' answered something that is not MCP when asked to "
                                         "run 'echo' (2 validation errors for CallToolResult).")


@pytest.mark.slow
def test_streamable_http_server_by_url(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).parent / "fixtures" / "mcp_dying_server.py"
    process = subprocess.Popen([sys.executable, str(script), "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        server = ToolServer("web", url=f"http://127.0.0.1:{port}/mcp", timeout_s=20)
        for _ in range(200):  # until it listens (no wall-clock limit: the loop ends when it connects)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail("the HTTP MCP server ended before listening")
                time.sleep(0.1)
        with McpConnection(server) as connection:
            assert [t.name for t in connection.list_tools()] == ["explode", "slow", "flood"]
            assert connection.call("slow", {"seconds": 0}).text == "done"
    finally:
        process.kill()
        process.wait()
    with pytest.raises(ToolServerError) as gone:
        McpConnection(ToolServer("web", url=f"http://127.0.0.1:{port}/mcp")).list_tools()
    assert gone.value.kind == ErrorKind.NETWORK
    assert gone.value.message.startswith(f"The tool server 'web' at http://127.0.0.1:{port}/mcp could not be reached: ")


def test_state_file_keeps_unknown_fields_and_sets_a_damaged_file_aside(tmp_path):
    file = tmp_path / FILE_NAME
    file.write_text(json.dumps({"version": 1, "future": True, "servers": [
        {"name": "time", "command": ["mcp-server-time"], "colour": "blue"},
        {"name": "broken", "timeout_s": "soon"}]}))
    servers = ToolServers(file)
    assert [s.name for s in servers.all()] == ["time"]
    assert servers.problem.startswith("1 of the tool servers in mcp-servers.json could not be read and was left as written")
    servers.set_tools("time", [ListedTool("now", "the time", {"type": "object"})])
    data = json.loads(file.read_text())
    assert data["future"] is True
    assert data["servers"][0]["colour"] == "blue"
    assert data["servers"][0]["tools"] == [{"name": "now", "description": "the time", "input_schema": {"type": "object"}}]
    assert data["servers"][1] == {"name": "broken", "timeout_s": "soon"}

    file.write_text("{torn")
    assert ToolServers(file).all() == []
    kept = list(tmp_path.glob("mcp-servers.unreadable-*.json"))
    assert [p.read_text() for p in kept] == ["{torn"]


@pytest.mark.slow
def test_cli_calls_the_everything_servers_long_running_tool_with_progress_on_stderr():
    added = run_atelier("tools", "add", "everything", "--", *everything_server_command())
    assert added.returncode == 0, added.stderr
    assert "trigger-long-running-operation" in _out(added)
    run = run_atelier("tools", "call", "everything", "trigger-long-running-operation", '{"duration": 1, "steps": 2}')
    assert run.returncode == 0, run.stderr
    assert _out(run) == "Long running operation completed. Duration: 1 seconds, Steps: 2.\n"
    assert error_lines(run) == ["progress: 1/2", "progress: 2/2"]
    echo = run_atelier("tools", "call", "everything", "echo", '{"message": 5}')
    assert error_lines(echo) == ["error: The arguments for 'echo' do not match its schema: message: 5 is not of "
                                 "type 'string'."]


def test_offline_mode_refuses_a_url_server_that_is_not_on_this_computer():
    from tests.fixtures.cli_runner import cli_env

    run = run_atelier("tools", "add", "web", "--url", "http://example.org/mcp", env=cli_env(ATELIER_OFFLINE="1"))
    assert (run.returncode, error_lines(run)) == (1, [
        "error: Atelier is in offline mode, and the tool server 'web' (http://example.org/mcp) is not on this "
        "computer. Turn offline mode off in Settings to use it; servers on 127.0.0.1 work offline."])


@pytest.mark.slow
def test_a_secret_env_value_lives_in_the_keyring_and_reaches_the_server(tmp_path, monkeypatch):
    import keyring
    from keyring.backend import KeyringBackend

    from engines.tools.manage import add_server, connect, remove_server

    class MemoryKeyring(KeyringBackend):
        priority = 1
        values: dict = {}

        def set_password(self, service, username, password):
            self.values[(service, username)] = password

        def get_password(self, service, username):
            return self.values.get((service, username))

        def delete_password(self, service, username):
            self.values.pop((service, username))

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        monkeypatch.setenv("ATELIER_TEST_SECRET", "s3cret-value")
        servers = ToolServers(tmp_path / FILE_NAME)
        added = add_server(servers, "everything", command=everything_server_command(),
                           secret_env=["ATELIER_TEST_SECRET"])
        assert added.secret_env == ("ATELIER_TEST_SECRET",)
        assert "s3cret-value" not in (tmp_path / FILE_NAME).read_text()
        assert MemoryKeyring.values == {("atelier", "mcp:everything:ATELIER_TEST_SECRET"): "s3cret-value"}
        monkeypatch.delenv("ATELIER_TEST_SECRET")  # the server gets it from the keyring, not from here
        with connect(servers.require("everything")) as connection:
            assert '"ATELIER_TEST_SECRET": "s3cret-value"' in connection.call("get-env", {}).text
        remove_server(servers, "everything")
        assert MemoryKeyring.values == {}
    finally:
        keyring.set_keyring(previous)
