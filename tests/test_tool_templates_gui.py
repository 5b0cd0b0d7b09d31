"""The chat window with a model whose template has its own tool format (Hermes), offscreen.

The model is tests/test_gui_tools.py's scripted FakeHost, loaded as a model
whose template speaks Hermes; the tool server is the real mcp-server-time.
The subject is what the window does with the model's own format: the mode
it names, "The first step must call a tool", and Reply as JSON refused
together with tools.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from desktop.chat.chat_tools import JSON_WITH_TOOLS
from tests.fixtures.chat_window import window, workspace  # noqa: F401  (on this module's chat_host)
from tests.test_gui_tools import StepsHost, add_time_server, answer_dialog, reply_calls, send, switch_on, wait_done

pytestmark = pytest.mark.gui


class HermesHost(StepsHost):
    """The scripted host, loaded as a model whose chat template defines tools in the Hermes syntax."""

    def load(self, engine, spec, on_event=None):
        info = super().load(engine, spec, on_event)
        self.model_info = replace(info, tools_in_template=True, tool_format="hermes")
        return self.model_info


@pytest.fixture
def chat_host():
    """The window of tests/fixtures/chat_window.py, on the scripted host with a Hermes template."""
    return HermesHost()


def test_the_model_s_own_format_is_named_required_is_sent_and_the_call_runs(qtbot, window):
    add_time_server(window.workspace)
    switch_on(window)
    page = window.chat_page
    box = page.tools.box
    box.required.setChecked(True)
    window.host.steps = ['<tool_call>\n{"name": "get_current_time", "arguments": {"timezone": "UTC"}}\n</tool_call>',
                         "It is noon in UTC."]
    send(qtbot, window, "What time is it?")
    shown = answer_dialog(qtbot, window, "once")
    assert json.loads(shown) == {"timezone": "UTC"}
    wait_done(qtbot, window)
    assert box.mode.text() == "Mode: Tool calls in the model's own tool format (Hermes)."
    first, second = window.host.requests[-2:]
    assert (first.tool_choice, second.tool_choice) == ("required", "auto")
    assert [tool.name for tool in first.tools] == ["get_current_time", "convert_time"]
    assert first.json_schema is None and first.messages[-1].content == "What time is it?"
    assert second.messages[-2].tool_calls[0].name == "get_current_time" and second.messages[-1].role == "tool"
    reply, calls = reply_calls(window)
    assert reply.content == "It is noon in UTC." and reply.status == "complete"
    assert [(c.tool, c.status) for c in calls] == [("get_current_time", "done")]
    # Reply as JSON and tools together: refused before anything is sent, in words.
    box.json_switch.setChecked(True)
    box.schema.setPlainText('{"type": "object"}')
    page.composer.setPlainText("And now?")
    page.send_button.click()
    assert not window.chat_controller.streaming and page.composer.toPlainText() == "And now?"
    assert box.problem.text() == JSON_WITH_TOOLS and page.banner.text() == JSON_WITH_TOOLS
