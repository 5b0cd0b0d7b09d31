"""LoRAs in ``.safetensors``: kohya/A1111, diffusers and PEFT layouts, with the family they were trained for.

A LoRA is recognised by its tensor names alone, and its base family by
their shapes, with the rules the image engine applies too
(:mod:`engines.diffusion.lora_files`: kohya/A1111, diffusers and PEFT
layouts; 768-wide cross-attention for SD 1.x, 1024 for SD 2.x, 2048 for
SDXL).
"""

from __future__ import annotations

from engines.diffusion.lora_files import BASE_LABELS, base_of, layout_of, rank_of
from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name


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
            kind="lora", format="safetensors", engine="diffusers", name=name, path=str(candidate.path),
            size_bytes=candidate.size_bytes, description=f"LoRA{target} ({layout} layout)", base=base,
            details={"layout": layout, "rank": rank_of(header.shapes), "tensors": len(header.shapes)},
        )
