"""LoRAs in ``.safetensors``: kohya/A1111, diffusers and PEFT layouts, with the family they were trained for.

A LoRA is recognised by its tensor names alone:

* **kohya / A1111** (and LyCORIS): ``lora_unet_…``, ``lora_te_…`` (SDXL:
  ``lora_te1_…``/``lora_te2_…``) with ``.lora_down.weight``/``.lora_up.weight``;
* **diffusers**: ``unet.….to_k.lora.down.weight`` or ``….processor.to_k_lora.down.weight``;
* **PEFT** (what diffusers writes today, and LLM adapters): ``….lora_A.weight``/``….lora_B.weight``.

The base family comes from the shape of a cross-attention key projection's
down matrix, whose input width is the text encoder's: 768 for SD 1.x,
1024 for SD 2.x, 2048 for SDXL. A second text encoder or Flux's double
blocks give SDXL or Flux away by name. Nothing in Atelier applies LoRAs
yet, so the record has no engine; it exists so that a LoRA dropped on the
window or found in the models folder is named for what it is.
"""

from __future__ import annotations

from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")
BASE_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux": "Flux"}
_CONTEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_DOWN_SUFFIXES = (".lora_down.weight", ".lora.down.weight", "_lora.down.weight", ".lora_A.weight",
                  ".lora_linear_layer.down.weight")
_METADATA_BASES = (("xl", "sdxl"), ("flux", "flux"), ("v2", "sd2"), ("sd_v1", "sd1"), ("v1", "sd1"))


def layout_of(keys) -> str | None:
    if any(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft"
    if any(k.endswith(_DOWN_SUFFIXES) or "lora_linear_layer" in k for k in keys):
        return "diffusers"
    return None


def _cross_attention_width(shapes: dict) -> int | None:
    for key, shape in shapes.items():
        flat = key.replace(".", "_")
        if ("attn2_to_k" in flat or "attn2_processor_to_k" in flat) and key.endswith(_DOWN_SUFFIXES) and len(shape) >= 2:
            return shape[1]
    return None


def base_of(shapes: dict, metadata: dict) -> str | None:
    keys = list(shapes)
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl"
    if any("double_blocks" in k or "single_blocks" in k or "single_transformer_blocks" in k for k in keys):
        return "flux"
    width = _cross_attention_width(shapes)
    if width in _CONTEXT_WIDTH:
        return _CONTEXT_WIDTH[width]
    hint = (metadata.get("ss_base_model_version") or metadata.get("modelspec.architecture") or "").lower()
    return next((base for marker, base in _METADATA_BASES if marker in hint), None) if hint else None


def rank_of(shapes: dict) -> int | None:
    ranks = [shape[0] for key, shape in shapes.items() if key.endswith(_DOWN_SUFFIXES) and shape]
    return max(ranks) if ranks else None


class LoraProbe(Probe):
    kind, format = "lora", "safetensors"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        header = candidate.safetensors()
        layout = layout_of(header.shapes)
        if layout is None:
            raise NotAMatch(f"{candidate.path.name} has no LoRA tensors.")
        base = base_of(header.shapes, header.metadata)
        target = f" for {BASE_LABELS[base]}" if base in BASE_LABELS else ""
        name = clean_name(header.metadata.get("ss_output_name"), candidate.path.stem)
        return ProbedModel(
            kind="lora", format="safetensors", engine=None, name=name, path=str(candidate.path),
            size_bytes=candidate.size_bytes, description=f"LoRA{target} ({layout} layout)", base=base,
            details={"layout": layout, "rank": rank_of(header.shapes), "tensors": len(header.shapes)},
        )
