"""The words the Images page shows while and after a run (no Qt here)."""

from __future__ import annotations

from engines.durations import format_duration

BACKEND_NAMES = {"torch": "PyTorch", "onnx": "ONNX Runtime"}


def format_step(event) -> str:
    """ "Step 7/20 · image 1/2 · 12 s left" for a StepEvent (the image part only for a batch)."""
    parts = [f"Step {event.step}/{event.total}"]
    if event.batch_count > 1:
        parts.append(f"image {event.image_index + 1}/{event.batch_count}")
    if event.eta_s is not None and event.step > 1:
        parts.append(f"{format_duration(event.eta_s, precise=True)} left")
    return " · ".join(parts)


def crash_message(message: str) -> str:
    """The banner after the engine process died (its own message names the reason)."""
    text = message.strip()
    if text.startswith("The engine stopped"):
        text = "The image engine stopped" + text[len("The engine stopped"):]
    elif not text.startswith("The image engine"):
        text = f"The image engine stopped unexpectedly: {text}"
    return f"{text} Your images so far are saved. Press Generate to start the engine again."


def cancelled_message(kept: int) -> str:
    """The status after Cancel: the images finished before it were saved, and the user should know."""
    if kept == 0:
        return "Cancelled"
    if kept == 1:
        return "Cancelled · the image finished before it is kept in the gallery"
    return f"Cancelled · the {kept} images finished before it are kept in the gallery"
