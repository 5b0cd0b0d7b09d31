"""Which installed upscaler an upscale uses: the one choice ``atelier upscale`` and the Images page make.

An ESRGAN-family model has one scale of its own (×2, ×4...); the engine
reaches other scales by running it again or shrinking (engines.diffusion
.upscale), but the model made for the scale asked does it best and fastest.
So the *default* for a scale is: its own scale first, then a larger one
(shrunk), then a smaller one (run twice); ties go by id, so the choice is
stable.

A user with several (Real-ESRGAN x4plus, an anime model, a ×2 model) may
prefer one, as ComfyUI and InvokeAI let them pick: the Images page remembers
that upscaler's id (``ImagePrefs.upscaler_id``) and :func:`chosen_upscaler`
uses it while it is installed. One that was removed since is not an error:
the default for the scale takes its place, so "Upscale" keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def upscaler_scale(path: str | Path) -> int:
    """An upscaler's own scale, from its file's tensor names (4 when they cannot be read)."""
    from engines.library.probes import identify

    return int(identify(Path(path)).details.get("scale", 4) or 4)


@dataclass(frozen=True)
class UpscalerOption:
    """An installed upscaler as a menu offers it: the library's record and its own scale (read once)."""

    model: object  # the InstalledModel (kind "upscaler")
    scale: int

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def label(self) -> str:
        """How a menu names it, with its own scale: "Real-ESRGAN x4plus (×4)"."""
        return f"{self.name} (×{self.scale})"


def upscaler_options(installed) -> list[UpscalerOption]:
    """Each installed upscaler with its own scale (a header read each), smallest scale first, then by name."""
    options = [UpscalerOption(model, upscaler_scale(model.path)) for model in installed]
    return sorted(options, key=lambda option: (option.scale, option.name.lower(), option.id))


def default_option(options, scale: int | None) -> UpscalerOption | None:
    """The option that suits ``scale`` best (the default for it); None if there is none."""
    wanted = scale or 4

    def fit(option: UpscalerOption) -> tuple[int, str]:
        return (0 if option.scale == wanted else 1 if option.scale > wanted else 2, option.id)

    return min(options, key=fit) if options else None


def best_upscaler(installed, scale: int | None):
    """The installed upscaler (an ``InstalledModel`` of kind "upscaler") that suits ``scale`` best; None if none."""
    best = default_option(upscaler_options(installed), scale)
    return best.model if best is not None else None


def chosen_upscaler(installed, scale: int | None, wanted_id: str | None):
    """The upscaler ``wanted_id`` while it is installed, else the default for ``scale``; None if none is installed."""
    installed = list(installed)
    wanted = next((model for model in installed if wanted_id and model.id == wanted_id), None)
    return wanted if wanted is not None else best_upscaler(installed, scale)
