"""What a LoRA file's tensor names and shapes say: its layout and the model family it was trained for.

Pure functions on a ``{name: shape}`` mapping and the file's metadata, with
no torch: the library's probe (:mod:`engines.library.probes.lora`, which
reads only the header) and the image engine (:mod:`engines.diffusion.lora`,
before it applies one) judge a file with the same rules.

Layouts, told by tensor names alone:

* **kohya / A1111** (and LyCORIS): ``lora_unet_…``, ``lora_te_…`` (SDXL:
  ``lora_te1_…``/``lora_te2_…``) with ``.lora_down.weight``/``.lora_up.weight``;
* **diffusers**: ``unet.….to_k.lora.down.weight`` or ``….processor.to_k_lora.down.weight``;
* **PEFT** (what diffusers writes today, and LLM adapters): ``….lora_A.weight``/``….lora_B.weight``.

The family comes from the shape of a cross-attention key projection's down
matrix, whose input width is the text encoder's: 768 for SD 1.x, 1024 for
SD 2.x, 2048 for SDXL. A second text encoder or Flux's double blocks give
SDXL or Flux away by name; the kohya metadata is the last resort.
"""

from __future__ import annotations

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")
BASE_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux": "Flux"}
CONTEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
DOWN_SUFFIXES = (".lora_down.weight", ".lora.down.weight", "_lora.down.weight", ".lora_A.weight",
                 ".lora_linear_layer.down.weight")
_METADATA_BASES = (("xl", "sdxl"), ("flux", "flux"), ("v2", "sd2"), ("sd_v1", "sd1"), ("v1", "sd1"))


def layout_of(keys) -> str | None:
    """"kohya", "peft", "diffusers", or None when no tensor is a LoRA's."""
    if any(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft"
    if any(k.endswith(DOWN_SUFFIXES) or "lora_linear_layer" in k for k in keys):
        return "diffusers"
    return None


def cross_attention_width(shapes: dict) -> int | None:
    """The text-embedding width the LoRA's cross-attention was trained on (768, 1024, 2048...), if it says."""
    for key, shape in shapes.items():
        flat = key.replace(".", "_")
        if ("attn2_to_k" in flat or "attn2_processor_to_k" in flat) and key.endswith(DOWN_SUFFIXES) and len(shape) >= 2:
            return int(shape[1])
    return None


def base_of(shapes: dict, metadata: dict) -> str | None:
    """"sd1", "sd2", "sdxl", "flux", or None when the file does not tell."""
    keys = list(shapes)
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl"
    if any("double_blocks" in k or "single_blocks" in k or "single_transformer_blocks" in k for k in keys):
        return "flux"
    width = cross_attention_width(shapes)
    if width in CONTEXT_WIDTH:
        return CONTEXT_WIDTH[width]
    hint = (metadata.get("ss_base_model_version") or metadata.get("modelspec.architecture") or "").lower()
    return next((base for marker, base in _METADATA_BASES if marker in hint), None) if hint else None


def rank_of(shapes: dict) -> int | None:
    ranks = [shape[0] for key, shape in shapes.items() if key.endswith(DOWN_SUFFIXES) and shape]
    return max(ranks) if ranks else None


def trained_for(shapes: dict, metadata: dict) -> str | None:
    """The family in words ("SD 1.x", "SDXL", "a model with 32-wide text embeddings"), or None."""
    base = base_of(shapes, metadata)
    if base in BASE_LABELS:
        return BASE_LABELS[base]
    width = cross_attention_width(shapes)
    return f"a model with {width}-wide text embeddings" if width else None
