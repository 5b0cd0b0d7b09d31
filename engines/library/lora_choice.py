"""Which installed LoRAs fit an image model, in the engine's own words, for a front end's picker.

The Images page lists the library's LoRAs (records of kind ``lora``, with
the family the probe found) and disables the ones trained for another
family than the chosen model. It judges them with the image engine's rule
(:func:`engines.diffusion.lora.family_problem`: the LoRA's cross-attention
width against the model's text-embedding width, else the families), on the
file's header read without torch, so the page says the very sentence the
engine would refuse the run with, before anything is loaded. It also finds
the LoRAs of a stored request again ("use these settings again"): by file,
then by name, since a PNG from another tool names its LoRAs without files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.diffusion.lora_files import BASE_LABELS

ONNX_NOTE = "LoRAs run on the PyTorch backend only"


@dataclass(frozen=True)
class LoraChoice:
    """One installed LoRA as a picker shows it: ``problem`` is why it cannot be used with the model ("" if it can)."""

    id: str
    name: str
    path: str
    family: str  # "SD 1.x", "SDXL"... or "" when the file does not say
    problem: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} · {self.family}" if self.family else f"{self.name} · family unknown"


def family_label(base: str | None) -> str:
    return BASE_LABELS.get(base or "", "")


def model_text_width(folder) -> int | None:
    """The model's text-embedding width (its UNet's ``cross_attention_dim``), None when its config does not say."""
    try:
        config = json.loads((Path(folder.path) / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    width = config.get("cross_attention_dim") if isinstance(config, dict) else None
    return width if isinstance(width, int) else None


def lora_problem(path: str | Path, folder, model_name: str) -> str:
    """Why the LoRA file at ``path`` cannot be applied to the model ``folder`` (a ModelFolder); "" when it can."""
    from engines.diffusion.lora import family_problem
    from engines.diffusion.lora_files import layout_of
    from engines.library.probes.files import Unreadable
    from engines.library.probes.safetensors_header import NotSafetensors, read_safetensors_header

    path = Path(path)
    if not path.is_file():
        return f"The LoRA file {path} is missing."
    try:
        header = read_safetensors_header(path, path.stat().st_size)
    except (NotSafetensors, Unreadable, OSError) as exc:
        return getattr(exc, "message", None) or str(exc)
    if layout_of(header.shapes) is None:
        return f"{path.name} is not a LoRA: it holds no LoRA tensors (kohya, diffusers or PEFT layout)."
    if folder is None:
        return ""
    return family_problem(path.name, header.shapes, header.metadata, folder.family, model_text_width(folder),
                          model_name) or ""


def lora_choices(models, folder, model_name: str) -> list[LoraChoice]:
    """The installed LoRAs (``InstalledModel`` records of kind "lora"), by name, each judged against ``folder``."""
    loras = sorted((m for m in models if m.kind == "lora"), key=lambda m: m.name.lower())
    return [LoraChoice(m.id, m.name, m.path, family_label(m.base), lora_problem(m.path, folder, model_name))
            for m in loras]


def find_installed(lora: dict, choices: list[LoraChoice]) -> LoraChoice | None:
    """The installed LoRA a stored one (``{"path", "weight", "name"}``) was: the same file, else the same name."""
    path = str(lora.get("path") or "")
    if path:
        for choice in choices:
            try:
                if Path(choice.path).resolve() == Path(path).resolve():
                    return choice
            except OSError:
                continue
    name = str(lora.get("name") or (Path(path).stem if path else "")).lower()
    if not name:
        return None
    return next((c for c in choices if name in (c.name.lower(), Path(c.path).stem.lower(), c.id.lower())), None)
