"""Which installed upscaler suits a wanted scale: the one choice ``atelier upscale`` and the Images page make.

An ESRGAN-family model has one scale of its own (×2, ×4...); the engine
reaches other scales by running it again or shrinking (engines.diffusion
.upscale), but the model made for the scale asked does it best and fastest.
So: its own scale first, then a larger one (shrunk), then a smaller one
(run twice); ties go by id, so the choice is stable.
"""

from __future__ import annotations

from pathlib import Path


def upscaler_scale(path: str | Path) -> int:
    """An upscaler's own scale, from its file's tensor names (4 when they cannot be read)."""
    from engines.library.probes import identify

    return int(identify(Path(path)).details.get("scale", 4) or 4)


def best_upscaler(installed, scale: int | None):
    """The installed upscaler (an ``InstalledModel`` of kind "upscaler") that suits ``scale`` best; None if none."""
    wanted = scale or 4

    def fit(model) -> tuple[int, str]:
        own = upscaler_scale(model.path)
        return (0 if own == wanted else 1 if own > wanted else 2, model.id)

    return min(installed, key=fit) if installed else None
