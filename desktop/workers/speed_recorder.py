"""Keep what a model really did here: a reply's decode rate, an image run's seconds per image.

The chat page calls :func:`record_reply_speed` from its finished handler;
the write happens on a pool thread, never on the GUI thread. The image
worker, already on its own thread, calls :func:`record_image_run` after it
saved the images. Both only ever log a failure: a measurement that cannot
be kept must never disturb a reply or an image. The Models page shows the
result beside the estimate ("measured 21 tokens/s (estimated 18)").
"""

from __future__ import annotations

import logging

from desktop.workers.background import BackgroundTask, run_in_background
from engines.library.measured_speeds import MIN_TOKENS, record_image_speed, record_text_speed, speeds_file

log = logging.getLogger(__name__)


def record_reply_speed(workspace, model, result) -> BackgroundTask | None:
    """Keep *result*'s decode rate for *model* (an InstalledModel); None when the reply was too short to tell."""
    rate = getattr(result, "tokens_per_second", None)
    tokens = getattr(result, "completion_tokens", 0) or 0
    if model is None or not rate or tokens < MIN_TOKENS:
        return None
    path = speeds_file(workspace.paths.data)

    def work():
        from engines.machine.hardware import probe_cpu

        return record_text_speed(path, model.id, rate, tokens, probe_cpu().name)

    return run_in_background(work, None, lambda error: log.warning("could not keep the reply's speed: %s", error))


def record_image_run(workspace, model_id: str | None, result) -> None:
    """Keep an image run's seconds per image (call it on a worker thread, after the images were saved)."""
    if not model_id or not result.images or result.seconds <= 0:
        return
    request = result.request
    steps = request.steps
    if request.init_image:  # img2img runs only the last part of the schedule
        steps = max(1, int(request.steps * request.strength))
    try:
        from engines.machine.hardware import probe_cpu

        record_image_speed(speeds_file(workspace.paths.data), model_id, result.seconds / len(result.images),
                           probe_cpu().name, width=request.width, height=request.height, steps=steps,
                           guidance=request.guidance, backend=result.backend, dtype=result.dtype)
    except Exception as exc:  # noqa: BLE001 - a measurement is never worth a failed run
        log.warning("could not keep the image run's speed: %s", exc)
