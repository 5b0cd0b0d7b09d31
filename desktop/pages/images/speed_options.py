"""The Images page's speed options: tiny-VAE previews, the final decode, and step caching.

Three advanced choices (simple mode hides them: ``mark_advanced``), each
trading a little quality for time:

* **Previews**: "Tiny VAE" decodes every step's preview into a real picture
  with the installed TAESD/TAESDXL of the model's family (a few ms a step);
  "Latent" projects the latents' colours, free but blurry;
* **Final decode**: "Full" is the model's own VAE; "Tiny (faster)" decodes
  with the tiny VAE, several times faster, slightly less detail (the Turbo
  path's speed option, as ``atelier image --vae tiny``);
* **Step caching**: the UNet runs in full every N steps and reuses its deep
  features in between (DeepCache; PyTorch backend), as ``--deep-cache N``.

The tiny VAE is found through a lookup the page gives
(:func:`engines.images.vae_choice.installed_tiny_vae` on its library): the
two tiny choices are offered only when one is installed for the model's
family, else a note says how to get it.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QSpinBox

from desktop.pages.images.control_helpers import note
from engines.images.vae_choice import TINY_VAE_IDS

FAMILY_NAMES = {"sd": "SD 1.x/2.x", "sdxl": "SDXL"}
DEFAULT_CACHE_INTERVAL = 3


class SpeedOptions(QGroupBox):
    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__("Speed", parent)
        self._find_tiny: Callable[[str], str] | None = None
        self._family = ""
        self._tiny = ""  # the tiny VAE folder for the model's family ("" when none is installed)
        self._tiny_seen = False  # the tiny preview was offered already (chosen then once, never forced again)
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.preview_combo = QComboBox()
        self.preview_combo.addItem("Tiny VAE (real picture)", "tiny")
        self.preview_combo.addItem("Latent (rough colours)", "latent")
        self.preview_combo.setToolTip("How each step's preview is drawn: the tiny VAE shows the real picture as it "
                                      "forms, for a few milliseconds a step")
        self.decode_combo = QComboBox()
        self.decode_combo.addItem("Full (best detail)", "full")
        self.decode_combo.addItem("Tiny (faster)", "tiny")
        self.decode_combo.setToolTip("The final decode: the tiny VAE is several times faster, with slightly less "
                                     "detail (the speed option of Turbo models)")
        cache_row = QHBoxLayout()
        self.cache_check = QCheckBox("Step caching (faster, slight quality loss)")
        self.cache_check.setToolTip("The UNet runs in full every N steps and reuses its deep features in between "
                                    "(DeepCache; PyTorch backend). Best with 10 steps or more.")
        self.cache_spin = QSpinBox()
        self.cache_spin.setRange(2, 5)
        self.cache_spin.setValue(DEFAULT_CACHE_INTERVAL)
        self.cache_spin.setPrefix("every ")
        self.cache_spin.setToolTip("Run the UNet in full every N steps")
        self.cache_spin.setEnabled(False)
        self.cache_check.toggled.connect(self.cache_spin.setEnabled)
        cache_row.addWidget(self.cache_check, 1)
        cache_row.addWidget(self.cache_spin)
        form.addRow("Previews", self.preview_combo)
        form.addRow("Final decode", self.decode_combo)
        form.addRow(cache_row)
        self.note = note()
        form.addRow(self.note)
        for signal in (self.preview_combo.currentIndexChanged, self.decode_combo.currentIndexChanged,
                       self.cache_check.toggled, self.cache_spin.valueChanged):
            signal.connect(lambda *_: self.changed.emit())
        self._update()

    def set_tiny_vae_finder(self, find: Callable[[str], str] | None) -> None:
        """``find(family)`` → the installed tiny VAE folder for "sd" or "sdxl", "" when there is none."""
        self._find_tiny = find
        self.set_family(self._family)

    def set_family(self, family: str) -> None:
        """The chosen model's family ("sd", "sdxl", or "" when unknown): which tiny VAE applies."""
        self._family = family
        try:
            self._tiny = self._find_tiny(family) if self._find_tiny and family in TINY_VAE_IDS else ""
        except Exception:  # noqa: BLE001 - a damaged library must not break the panel: no tiny VAE then
            self._tiny = ""
        self._update()

    def tiny_vae(self) -> str:
        return self._tiny

    def _update(self) -> None:
        tiny = bool(self._tiny)
        for combo in (self.preview_combo, self.decode_combo):
            combo.model().item(combo.findData("tiny")).setEnabled(tiny)
        if not tiny:
            self.preview_combo.setCurrentIndex(self.preview_combo.findData("latent"))
            self.decode_combo.setCurrentIndex(self.decode_combo.findData("full"))
        elif not self._tiny_seen:
            self.preview_combo.setCurrentIndex(self.preview_combo.findData("tiny"))  # the better preview, once
        self._tiny_seen = tiny
        if tiny or self._family not in TINY_VAE_IDS:
            self.note.setText("")
        else:
            model_id = TINY_VAE_IDS[self._family]
            self.note.setText(f"Tiny-VAE previews and decoding need the tiny VAE for {FAMILY_NAMES[self._family]} "
                              f"models: get {model_id.upper()} on the Models page (atelier models pull {model_id}).")
        self.note.setVisible(bool(self.note.text()))

    # ---- the request -------------------------------------------------------

    def request_fields(self) -> dict:
        """``vae``, ``preview_vae`` and ``deep_cache`` of the ImageRequest."""
        tiny = self._tiny
        return {
            "vae": tiny if tiny and self.decode_combo.currentData() == "tiny" else "full",
            "preview_vae": tiny if tiny and self.preview_combo.currentData() == "tiny" else "",
            "deep_cache": self.cache_spin.value() if self.cache_check.isChecked() else 0,
        }

    def restore(self, settings: dict) -> list[str]:
        """Put speed choices back; notes for what cannot be (no tiny VAE installed for this model now).

        ``settings``: a stored request's ``vae``, ``preview_vae`` and ``deep_cache``, or the page's remembered
        choices (engines.settings.ImagePrefs), which add ``previews`` ("tiny" or "latent": a request only names a
        tiny preview VAE) and ``step_cache_interval`` (kept while step caching is off). The section's own rules
        stand: a tiny choice needs a tiny VAE of the model's family, and its note says how to get one.
        """
        notes = []
        vae = str(settings.get("vae") or "full")
        if vae != "full":
            if self._tiny:
                self.decode_combo.setCurrentIndex(self.decode_combo.findData("tiny"))
            else:
                family = FAMILY_NAMES.get(self._family)
                needs = f"the tiny VAE for {family} models" if family else "a tiny VAE for this model"
                notes.append(f"the tiny final decode needs {needs}, which is not installed: the full decode is used")
        else:
            self.decode_combo.setCurrentIndex(self.decode_combo.findData("full"))
        previews = settings.get("previews")
        if previews == "latent":
            self.preview_combo.setCurrentIndex(self.preview_combo.findData("latent"))
        elif (previews == "tiny" or settings.get("preview_vae")) and self._tiny:
            self.preview_combo.setCurrentIndex(self.preview_combo.findData("tiny"))
        deep = int(settings.get("deep_cache") or 0)
        interval = settings.get("step_cache_interval")
        if isinstance(interval, int) and not isinstance(interval, bool):
            self.cache_spin.setValue(min(max(interval, 2), 5))
        self.cache_check.setChecked(deep > 1)
        if deep > 1:
            self.cache_spin.setValue(min(max(deep, 2), 5))
        return notes

    def remembered(self) -> dict:
        """The choices as ``engines.settings.ImagePrefs`` keeps them (what :meth:`restore` takes back).

        Previews are "latent" only when the user chose them over an installed tiny VAE: without one, the latent
        preview is forced, and the choice to keep is "the real picture once a tiny VAE is there".
        """
        latent = bool(self._tiny) and self.preview_combo.currentData() == "latent"
        return {
            "previews": "latent" if latent else "tiny",
            "final_decode": self.decode_combo.currentData(),
            "step_cache": self.cache_check.isChecked(),
            "step_cache_interval": self.cache_spin.value(),
        }
