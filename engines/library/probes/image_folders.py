"""Image-model folders: diffusers (``save_pretrained``) and ONNX Runtime (optimum's layout).

Whether a folder is one, and whether it is complete, is decided by
``engines.model_folder.inspect_model_folder``, the same check the
image engine makes before it loads, so a folder is refused with the same
sentence at import and at generation. This module adds what the library
needs on top: the base family, told apart by the UNet's cross-attention
width (768: SD 1.x, 1024: SD 2.x, SDXL by its pipeline class).
"""

from __future__ import annotations

import json

from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name

BASE_LABELS = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL",
               "sd": "Stable Diffusion"}
_CONTEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def _unet_config(folder) -> dict:
    path = folder.path / "unet" / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def base_family(folder) -> str:
    """"sdxl", "sd1", "sd2", or "sd" when a 1.x/2.x folder does not say which (a test-size UNet)."""
    if folder.family == "sdxl":
        return "sdxl"
    width = _unet_config(folder).get("cross_attention_dim")
    return _CONTEXT_WIDTH.get(width, "sd") if isinstance(width, int) else "sd"


def _record(candidate: Candidate, folder, engine_label: str) -> ProbedModel:
    base = base_family(folder)
    return ProbedModel(
        kind="image", format=folder.kind, engine="diffusers", name=clean_name(folder.name),
        path=str(candidate.path), size_bytes=candidate.size_bytes,
        description=f"{BASE_LABELS[base]} image model ({engine_label})", base=base,
        architecture=folder.pipeline_class,
        details={"distilled": folder.distilled, "native_size": folder.native_size, "variant": folder.variant},
    )


class DiffusersFolderProbe(Probe):
    kind, format = "image", "diffusers"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        folder = candidate.model_folder()
        if folder.kind != "diffusers":
            raise NotAMatch(f"{candidate.path.name} is not a diffusers folder.")
        return _record(candidate, folder, "diffusers")


class OnnxFolderProbe(Probe):
    kind, format = "image", "onnx"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        folder = candidate.model_folder()
        if folder.kind != "onnx":
            raise NotAMatch(f"{candidate.path.name} is not an ONNX Runtime folder.")
        return _record(candidate, folder, "ONNX Runtime")
