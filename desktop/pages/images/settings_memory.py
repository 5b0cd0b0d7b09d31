"""What the Images page's controls remember and restore: their values across restarts, and a gallery image's settings.

A mixin of :class:`desktop.pages.images.controls.ImageControls`, in its own
module because restoring is its own job: :meth:`SettingsMemory.prefs` and
:meth:`apply_prefs` are the page's remembered values (``ImagePrefs``);
:meth:`apply_settings` puts a stored image's request back ("use these
settings again") and says in words what could not be; and
:func:`settings_from_entry` finds those settings, in the gallery's record
or else in the PNG itself.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from desktop.pages.images.control_helpers import DEFAULTS
from engines.diffusion.types import SCHEDULER_NAMES, ImageRequest


class SettingsMemory:
    # ---- remembered across restarts ----------------------------------------

    def prefs(self) -> dict:
        """The values the page remembers across restarts (the fields of ``engines.settings.ImagePrefs``)."""
        return {
            "model_id": self.current_model_id(),
            "backend": self.backend_combo.currentData(),
            "prompt": self.prompt.toPlainText(),
            "negative_prompt": self.negative.toPlainText(),
            "width": self.width_spin.value(),
            "height": self.height_spin.value(),
            "steps": self.steps_spin.value(),
            "guidance": round(self.guidance_spin.value(), 2),
            "sampler": self.sampler_combo.currentText(),
            "random_seed": self.random_seed.isChecked(),
            "seed": int(round(self.seed_spin.value())),
        }

    def apply_prefs(self, prefs) -> None:
        """Show remembered values (an ``ImagePrefs``). The size is restored only for the model it was used with:
        any other model starts at its own native size."""
        if prefs.model_id:
            self.select_model(prefs.model_id)
        index = self.backend_combo.findData(prefs.backend)
        if index >= 0:
            self.backend_combo.setCurrentIndex(index)
        self.prompt.setPlainText(prefs.prompt)
        self.negative.setPlainText(prefs.negative_prompt)
        if prefs.model_id and prefs.model_id == self.current_model_id():
            self.set_size(prefs.width, prefs.height)
        self.steps_spin.setValue(prefs.steps)
        self.guidance_spin.setValue(prefs.guidance)
        if prefs.sampler in SCHEDULER_NAMES:
            self.sampler_combo.setCurrentText(prefs.sampler)
        self.random_seed.setChecked(prefs.random_seed)
        self.seed_spin.setValue(prefs.seed)
        self.seed_spin.setEnabled(not prefs.random_seed)

    # ---- "use these settings again" ----------------------------------------

    def apply_settings(self, settings: dict, model_id: str | None = None) -> list[str]:
        """Put a stored request back into the fields; returns notes for what could not be restored."""
        notes = []
        if model_id:
            self.select_model(model_id)
        backend = settings.get("backend")
        index = self.backend_combo.findData(backend) if backend else -1
        if index >= 0:
            self.backend_combo.setCurrentIndex(index)
        self.prompt.setPlainText(str(settings.get("prompt", "")))
        self.negative.setPlainText(str(settings.get("negative_prompt", "")))
        self.set_size(int(settings.get("width", DEFAULTS.width)), int(settings.get("height", DEFAULTS.height)))
        self.steps_spin.setValue(int(settings.get("steps", DEFAULTS.steps)))
        self.guidance_spin.setValue(float(settings.get("guidance", DEFAULTS.guidance)))
        scheduler = settings.get("scheduler", DEFAULTS.scheduler)
        if scheduler in SCHEDULER_NAMES:
            self.sampler_combo.setCurrentText(scheduler)
        else:
            notes.append(f"the sampler {scheduler!r} is not available here")
        seed = settings.get("seed")
        if seed is not None:
            self.random_seed.setChecked(False)
            self.seed_spin.setValue(int(seed))
        self.batch_spin.setValue(1)
        self.init_group.set_strength(float(settings.get("strength", DEFAULTS.strength)))
        if settings.get("img2img"):
            notes.append("it was made from a starting image, which is not stored: add it again for image to image")
        notes += self.lora_picker.restore(settings.get("loras") or ())
        notes += self.speed_options.restore(settings)
        return notes


def settings_from_entry(entry) -> dict:
    """The settings of a gallery image: its stored request, else the parameters inside the PNG."""
    known = {f.name for f in fields(ImageRequest)} - {"init_image"}
    request = dict(entry.request or {})
    if not request.get("prompt"):
        try:
            from engines.diffusion.png_meta import read_png_parameters, request_from_metadata

            meta = read_png_parameters(Path(entry.path))
            rebuilt = request_from_metadata(meta)
        except Exception:
            rebuilt = None
        if rebuilt is not None:
            request = {f.name: getattr(rebuilt, f.name) for f in fields(ImageRequest) if f.name in known}
            request["img2img"] = bool((meta.get("atelier") or {}).get("request", {}).get("init_image_sha256"))
    settings = {k: v for k, v in request.items() if k in known}
    settings["seed"] = entry.seed
    settings["img2img"] = bool(request.get("img2img"))
    settings["backend"] = entry.backend if entry.backend in ("torch", "onnx") else request.get("backend_choice", "auto")
    settings["model_id"] = request.get("model_id")
    settings["model_path"] = request.get("model_path")
    settings["model"] = entry.model
    return settings
