"""Tiny VAE folders (TAESD, TAESDXL: ``diffusers.AutoencoderTiny`` with safetensors weights).

A tiny VAE is not a model of its own: the image engines use it beside an
image model, for real previews at every step and a fast final decode
(:mod:`engines.diffusion.taesd`, ``atelier image --vae tiny``). It is
recorded so downloads, imports and the models-folder scan keep it like any
other model. Whether a folder is one is decided by
``engines.diffusion.taesd.tiny_vae_problem``, the check the engines make
before they load it, so a folder is judged the same way at import and at
generation. TAESD and TAESDXL have the same layout, so the folder cannot
say which family it is for: the catalog id (``taesd``, ``taesdxl``) does.
"""

from __future__ import annotations

from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name


def _head(config) -> str:
    """The start of a config.json, enough to see its class name (a regular file: is_file() said so)."""
    try:
        with open(config, encoding="utf-8", errors="replace") as handle:
            return handle.read(4096)
    except OSError:
        return ""


class TinyVaeProbe(Probe):
    kind, format = "vae", "diffusers"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        from engines.diffusion.taesd import tiny_vae_problem  # json and pathlib only: no torch

        config = candidate.path / "config.json"
        if not candidate.is_dir or not config.is_file() or '"AutoencoderTiny"' not in _head(config):
            raise NotAMatch(f"{candidate.path.name} is not a tiny VAE folder.")
        problem = tiny_vae_problem(candidate.path)
        if problem:  # a tiny VAE, but not a usable one (pickled weights only, a damaged config)
            raise NotAMatch(problem, recognised=True)
        return ProbedModel(
            kind="vae", format="diffusers", engine="diffusers", name=clean_name(candidate.path.name),
            path=str(candidate.path), size_bytes=candidate.size_bytes,
            description="tiny VAE (TAESD layout) for fast previews and decodes", architecture="AutoencoderTiny",
        )
