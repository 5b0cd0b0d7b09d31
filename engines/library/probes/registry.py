"""``identify(path)``: the one way into the library, for every kind of model file.

Import (CLI and GUI), drag and drop, the models-folder scan, downloads and
the demo all ask this module what a path holds, so a file is judged the
same way wherever it comes from. The probes are tried in order; the
first that returns a record wins. What none claims becomes an ``unknown``
record with the most useful reason found: the sentence of a probe that
recognised its format but found it damaged, else a description of what
the file looks like.

``identify`` never raises for a bad path and never blocks: it stats before
it opens, opens only regular files, and a probe that fails unexpectedly
counts as "not a match" (logged), not as a crash of whoever asked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.files import Unreadable, stat_path, what_it_is
from engines.library.probes.gguf_files import GGUFAdapterProbe, GGUFChatProbe, GGUFEmbeddingProbe
from engines.library.probes.image_folders import DiffusersFolderProbe, OnnxFolderProbe
from engines.library.probes.lora import LoraProbe
from engines.library.probes.names import clean_name
from engines.library.probes.projector import GGUFProjectorProbe
from engines.library.probes.tiny_vae import TinyVaeProbe
from engines.library.probes.upscaler import UpscalerProbe

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
SUPPORTED_WORDS = "Atelier adds GGUF models (.gguf files) and diffusers or ONNX image-model folders"

PROBES: list[type[Probe]] = []


def register(probe: type[Probe]) -> type[Probe]:
    """Add a probe; a second probe for the same (kind, format) is a programming error."""
    taken = {(p.kind, p.format): p for p in PROBES}
    if (probe.kind, probe.format) in taken:
        raise ValueError(f"a probe for {probe.kind}/{probe.format} is already registered: "
                         f"{taken[(probe.kind, probe.format)].__name__}")
    PROBES.append(probe)
    return probe


# Order matters only where two probes could both claim a path; these never do. It also orders the reasons for a
# path no probe takes: the tiny VAE probe comes before the image-folder ones, so a tiny VAE with pickled weights
# is refused for that, not for lacking the model_index.json that no tiny VAE has.
for _probe in (GGUFChatProbe, GGUFEmbeddingProbe, GGUFAdapterProbe, TinyVaeProbe, DiffusersFolderProbe,
               OnnxFolderProbe, LoraProbe, UpscalerProbe, GGUFProjectorProbe):
    register(_probe)


def identify(path: str | os.PathLike[str]) -> ProbedModel:
    """What ``path`` holds: a chat, embedding or image model, a LoRA, an upscaler, or unknown (with why)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    try:
        st = stat_path(path)
    except Unreadable as exc:
        return unknown(path, "missing", exc.message)
    candidate = Candidate(path, st)
    if not (candidate.is_file or candidate.is_dir):
        return unknown(path, "other", f"{path.name} is not a regular file (it is {what_it_is(st.st_mode)}).")
    recognised: list[str] = []
    for probe in PROBES:
        try:
            return probe.probe(candidate)
        except NotAMatch as exc:
            if exc.recognised:
                recognised.append(exc.reason)
        except Exception:  # a probe's bug must not become the caller's crash
            log.exception("probe %s failed on %s", probe.__name__, path)
    reason = recognised[0] if recognised else _describe(candidate)
    return unknown(path, _looks_like(candidate), reason, _size(candidate))


def unknown(path: Path, looks_like: str, reason: str, size: int = 0) -> ProbedModel:
    return ProbedModel(kind="unknown", format=looks_like, engine=None, name=clean_name(path.name, "file"),
                       path=str(path), size_bytes=size, reason=reason)


def _size(candidate: Candidate) -> int:
    """A file's size; 0 for a folder that is not a model (walking a dropped home folder could take minutes)."""
    return 0 if candidate.is_dir else candidate.size_bytes


def _looks_like(candidate: Candidate) -> str:
    if candidate.is_dir:
        return "folder"
    if candidate.suffix in (".gguf", ".safetensors"):
        return candidate.suffix[1:]
    return "pickle" if candidate.suffix in PICKLE_SUFFIXES else "file"


def _describe(candidate: Candidate) -> str:
    """Why a file no probe claimed is not a model, as precisely as its first bytes allow."""
    from engines.model_folder import PICKLED_MESSAGE
    from engines.gguf import NotGGUFError

    name = candidate.path.name
    if candidate.suffix in PICKLE_SUFFIXES:
        return f"{name} is a pickled checkpoint. {PICKLED_MESSAGE}."
    try:
        shapes = candidate.safetensors().shapes
    except NotAMatch:
        shapes = None
    if shapes is not None:
        if any(k.startswith(("model.diffusion_model.", "conditioner.embedders.")) for k in shapes):
            return (f"{name} is a single-file Stable Diffusion checkpoint. Atelier needs the diffusers folder "
                    "version of the model (a folder with model_index.json).")
        return f"{name} holds weights Atelier does not recognise (not a LoRA or an upscaler). {SUPPORTED_WORDS}."
    try:
        prefix = candidate.prefix
    except Unreadable as exc:
        return exc.message
    looks = NotGGUFError.for_prefix(prefix).message.removeprefix("This is not a GGUF model file")
    return f"{name} is not a GGUF file or a diffusers/ONNX model folder{looks}"
