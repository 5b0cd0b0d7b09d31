"""Atelier's own image engine as a tool: "make an image of …" in a chat makes a gallery image.

No peer ties its chat to its own image engine; here the model may call
``make_image`` like any MCP tool (approved the same way). The image is
made by the one image job service (:mod:`engines.images.jobs`: Content
Credentials, the gallery file and its index, exactly as the Images page
and ``atelier image`` keep an image) on the host the caller gives (the
scheduler's, so a chat model and an image model take turns). The result
names the gallery file, and its ``structured`` part carries the path and
seed, for the chat to show the image under the call.

The settings (size, steps, guidance, sampler) are the Images page's, as
the user last left them (``Settings.images``); the caller chooses the model
(the page's model, resolved by the front end). It lives here, beside the
job service, because it is the image engine's: ``engines.tools`` only
offers it (``ToolSet.add_builtin``).
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import ErrorKind
from engines.tools.connection import ToolOutcome, ToolServerError
from engines.tools.servers import BUILTIN_SERVER, ListedTool

IMAGE_TOOL = ListedTool(
    "make_image",
    "Make an image from a description with Atelier's image engine. The image is saved in the gallery.",
    {"type": "object",
     "properties": {"prompt": {"type": "string", "maxLength": 600, "description": "what the image shows"},
                    "negative_prompt": {"type": "string", "maxLength": 300, "description": "what it must not show"}},
     "required": ["prompt"], "additionalProperties": False},
)


def add_image_tool(toolset, host, paths, prefs, spec, model_id: str | None = None) -> None:
    """Offer ``make_image`` in ``toolset``: each call is one image of ``spec``'s model, made on ``host``.

    ``paths``: the profile's folders (engines.paths.AppPaths: the gallery, the signing key);
    ``prefs``: the Images page's settings (engines.settings.ImagePrefs).
    """
    from engines.diffusion.types import ImageRequest, StepEvent
    from engines.images.gallery import open_gallery
    from engines.images.jobs import ImageJob, ImageJobs

    images_dir = paths.data / "images"

    def run(arguments: dict, on_progress) -> ToolOutcome:
        request = ImageRequest(prompt=arguments["prompt"], negative_prompt=arguments.get("negative_prompt", ""),
                               width=prefs.width, height=prefs.height, steps=prefs.steps, guidance=prefs.guidance,
                               scheduler=prefs.sampler, preview_every=0)
        problems = request.validate()
        if problems:
            raise ToolServerError(BUILTIN_SERVER, f"The image settings cannot be used: {'; '.join(problems)}.",
                                  ErrorKind.BAD_INPUT)
        jobs = ImageJobs(lambda: open_gallery(paths.database, images_dir), images_dir, paths.config)

        def relay(event) -> None:
            if isinstance(event, StepEvent) and on_progress is not None:
                on_progress(float(event.step), float(event.total), None)

        try:
            outcome = jobs.run(host, ImageJob(spec, request, model_id=model_id), relay)
        finally:
            jobs.close()
        if outcome.error is not None:
            raise ToolServerError(BUILTIN_SERVER, f"The image could not be made: {outcome.error.message}",
                                  outcome.error.kind)
        if not outcome.kept:
            why = "; ".join(outcome.lost) or "it was cancelled"
            raise ToolServerError(BUILTIN_SERVER, f"The image could not be kept: {why}.")
        image = outcome.kept[0]
        path = Path(image.path)
        return ToolOutcome(f"Made a {image.width}x{image.height} image (seed {image.seed}); it is in the gallery as "
                           f"{path.name} ({path}).",
                           structured={"image": str(path), "seed": image.seed, "width": image.width,
                                       "height": image.height})

    toolset.add_builtin(IMAGE_TOOL, run, server=BUILTIN_SERVER)
