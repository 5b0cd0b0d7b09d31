"""How a request's numbers read in a sentence, shared by every line that shows one.

Stdlib only and importing nothing of Atelier's, so any module may use it:
:mod:`engines.diffusion.types` itself imports the inpainting code that
describes an edit, which must not import ``types`` back (no cycles).
"""

from __future__ import annotations


def steps_words(steps: int) -> str:
    """"1 step", "4 steps": a Turbo image has one, and the credentials, the image's line and the tooltip say so."""
    return f"{steps} step" if steps == 1 else f"{steps} steps"
