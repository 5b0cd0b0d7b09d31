"""What the Images page's controls remember and restore: their values across restarts, and a gallery image's settings.

A mixin of :class:`desktop.pages.images.controls.ImageControls`, in its own
module because restoring is its own job: :meth:`SettingsMemory.prefs` and
:meth:`apply_prefs` are the page's remembered values (``ImagePrefs``: the
controls, the LoRAs, the Speed section, and the Experiment section the page
puts under them), and what could not come back is said in one line
(:func:`not_restored_line`), never dropped in silence;
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
    # The upscaler picked under the gallery's "Upscale with" (None: the default for each scale). Not a control of
    # this panel, but one of the page's remembered values, so it is saved and restored with them.
    upscaler_id: str | None = None

    # ---- remembered across restarts ----------------------------------------

    def prefs(self, grid_panel) -> dict:
        """The values the page remembers across restarts (the fields of ``engines.settings.ImagePrefs``).

        ``grid_panel``: the page's Experiment section (:class:`desktop.pages.images.grid_panel.GridPanel`).
        """
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
            "upscaler_id": self.upscaler_id,
            "loras": [{"id": row.choice.id, "weight": row.weight()} for row in self.lora_picker.rows],
            **self.speed_options.remembered(),
            "grid_axes": grid_panel.axis_texts(),
            "experiment_open": grid_panel.toggle.isChecked(),
        }

    def apply_prefs(self, prefs, grid_panel) -> list[str]:
        """Show remembered values (an ``ImagePrefs``); returns notes for what could not be restored.

        The size is restored only for the model it was used with: any other model starts at its own native size.
        The LoRAs are judged against the model chosen now (a LoRA no longer installed, or for another family, is
        left out with a note), the speed choices follow the Speed section's rules (a tiny VAE must be installed
        for the model's family), and the Experiment axes come back as typed: they are checked at "Make grid".
        """
        notes = []
        if prefs.model_id and not self.select_model(prefs.model_id):
            model = self.current_model()
            chosen = f", so {model.name} was chosen" if model is not None else ""
            notes.append(f"the model {prefs.model_id} is no longer installed{chosen}")
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
        self.upscaler_id = prefs.upscaler_id  # one removed since is kept: Upscale falls back to the default meanwhile
        notes += self.lora_picker.restore([lora.model_dump() for lora in prefs.loras])
        notes += self.speed_options.restore({
            "vae": prefs.final_decode, "previews": prefs.previews,
            "deep_cache": prefs.step_cache_interval if prefs.step_cache else 0,
            "step_cache_interval": prefs.step_cache_interval,
        })
        for text in grid_panel.set_axis_texts(prefs.grid_axes):
            notes.append(f"the experiment axis {text!r} is not one this version can show")
        grid_panel.set_open(prefs.experiment_open)
        return notes

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


def not_restored_line(notes: list[str]) -> str:
    """The one line the page shows at start when some remembered values could not come back ("" when all did)."""
    return ("Your last settings are back, but " + "; ".join(notes) + ".") if notes else ""


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
