"""Atelier's own image engine as a tool: a chat step calls make_image, and a gallery image is made.

The model's steps are scripted (what the grammar fallback lets a model
write); the image is real: the tiny diffusion pipeline, run in an engine
host through the profile's scheduler, kept by the one image job service.
"""

from __future__ import annotations

from engines.diffusion.types import ImageLoadSpec
from engines.images.gallery import open_gallery
from engines.images.image_tool import IMAGE_TOOL, add_image_tool
from engines.settings import ImagePrefs
from engines.tools.loop import Approvals, ToolProgressEvent, run_tool_turn
from engines.tools.toolset import ToolSet
from engines.workspace import open_workspace
from tests.fixtures.scripted_model import ASK, ScriptedModel, calls_step
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)


def test_the_image_tools_schema_is_what_the_grammar_fallback_can_enforce():
    from engines.tools.fallback import grammar_safe

    assert grammar_safe(IMAGE_TOOL.input_schema)["required"] == ["prompt"]
    assert IMAGE_TOOL.input_schema["additionalProperties"] is False


def test_make_image_in_a_chat_step_makes_a_gallery_image(tiny_sd):
    workspace = open_workspace()
    scheduler = workspace.scheduler(idle_unload_s=None)
    prefs = ImagePrefs(width=64, height=64, steps=2, guidance=7.0)
    tools = ToolSet()
    add_image_tool(tools, scheduler.host_for("test-image"), workspace.paths, prefs,
                   ImageLoadSpec(str(tiny_sd), backend="torch", dtype="fp32"))
    events = []
    model = ScriptedModel(calls_step(("make_image", {"prompt": "a red lighthouse"})), '{"reply": "Here it is."}')
    try:
        outcome = run_tool_turn(model, ASK, tools, Approvals(allow_all=True), events.append)
    finally:
        scheduler.shutdown()
    [call] = outcome.calls
    assert (call.server, call.status) == ("atelier", "done"), call.result
    image = call.structured["image"]
    assert call.result == (f"Made a 64x64 image (seed {call.structured['seed']}); it is in the gallery as "
                           f"{image.rsplit('/', 1)[-1]} ({image}).")
    gallery = open_gallery(workspace.paths.database, workspace.paths.data / "images")
    assert [str(entry.path) for entry in gallery.list()] == [image]
    assert [e.progress for e in events if isinstance(e, ToolProgressEvent)] == [1.0, 2.0]
    assert outcome.text == "Here it is."
    assert model.requests[1].messages[-1].content == f"Result of make_image: {call.result}"
