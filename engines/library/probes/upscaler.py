"""ESRGAN-family upscalers (RRDBNet) in ``.safetensors``, in both key layouts.

* the **BasicSR / Real-ESRGAN** layout: ``conv_first``, ``body.N.rdb1.conv1``…,
  ``conv_up1``/``conv_up2`` (one per 2× step), ``conv_hr``, ``conv_last``;
  Real-ESRGAN's 2× and 1× models pixel-unshuffle first, which shows as 4 or
  16 times the input channels of ``conv_first``;
* the **original ESRGAN** layout: ``model.0`` (first conv),
  ``model.1.sub.N.RDB1.conv1.0``…, then the up-convolutions, the HR conv
  and the last conv as further ``model.N`` entries.

The scale factor is counted from the up-convolutions, so a 4× model is
told from a 2× one without loading anything. The engine that runs them is
``esrgan`` (:mod:`engines.diffusion.upscale`), which loads the same two
layouts with strict keys.
"""

from __future__ import annotations

import re

from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name

_NEW_BODY = re.compile(r"^body\.\d+\.rdb1\.conv1\.weight$")
_OLD_BODY = re.compile(r"^model\.1\.sub\.\d+\.RDB1\.conv1\.0\.weight$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.weight$")
_UP = re.compile(r"^conv_up\d+\.weight$")


def _new_layout_scale(shapes: dict) -> int:
    ups = sum(1 for k in shapes if _UP.match(k))
    first = shapes.get("conv_first.weight", ())
    unshuffle = {12: 2, 48: 4}.get(first[1], 1) if len(first) >= 2 else 1  # 3 channels × 4 or × 16
    return max(1, 2**ups // unshuffle)


def _old_layout_scale(shapes: dict) -> int:
    tops = sorted(int(m.group(1)) for k in shapes if (m := _OLD_TOP.match(k)) and int(m.group(1)) >= 2)
    return 2 ** max(0, len(tops) - 2)  # the up-convolutions, then the HR conv and the last conv


class UpscalerProbe(Probe):
    kind, format = "upscaler", "safetensors"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        shapes = candidate.safetensors().shapes
        if "conv_first.weight" in shapes and any(_NEW_BODY.match(k) for k in shapes):
            layout, scale = "basicsr", _new_layout_scale(shapes)
        elif "model.0.weight" in shapes and any(_OLD_BODY.match(k) for k in shapes):
            layout, scale = "esrgan", _old_layout_scale(shapes)
        else:
            raise NotAMatch(f"{candidate.path.name} is not an ESRGAN upscaler.")
        blocks = len({k.split(".")[1] for k in shapes if k.startswith("body.") and ".rdb1." in k}) or \
            len({k.split(".")[3] for k in shapes if _OLD_BODY.match(k)})
        return ProbedModel(
            kind="upscaler", format="safetensors", engine="esrgan", name=clean_name(candidate.path.stem),
            path=str(candidate.path), size_bytes=candidate.size_bytes,
            description=f"ESRGAN {scale}× upscaler (RRDBNet, {blocks} blocks)", architecture="RRDBNet",
            details={"scale": scale, "layout": layout, "blocks": blocks},
        )
