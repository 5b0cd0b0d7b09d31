"""Vision projectors (``mmproj`` GGUF files) and the model each belongs to.

A vision model in GGUF form is two files: the language model and its
projector (architecture ``clip``, ``general.type = "mmproj"``: the image
encoder and the layer that maps its output into the model's embeddings).
llama.cpp's mtmd needs both. A projector alone is recognised as kind
``projector`` (it runs only beside its model), and :func:`find_projector`
pairs a model with the projector beside it, as the catalog downloads them
and as every model page on the Hub ships them (``mmproj-*.gguf`` in the
model's folder).

Pairing is by the projector's ``clip.vision.projection_dim``: the width of
the embeddings it makes, which must be the model's ``embedding_length``, so
Gemma 3 4B never gets Gemma 3 12B's projector from the same folder. Only
files whose name says projector (``mmproj``) are read, so a folder of fifty
models costs no fifty header reads.
"""

from __future__ import annotations

import difflib
import functools
import logging
from pathlib import Path

from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name

log = logging.getLogger(__name__)
PROJECTOR_ARCHITECTURES = frozenset({"clip", "mmproj"})
NAME_HINTS = ("mmproj", "projector")


def is_projector(header) -> bool:
    return header.architecture in PROJECTOR_ARCHITECTURES or header.metadata.get("general.type") == "mmproj"


def projection_width(header) -> int | None:
    """The width of the embeddings the projector makes (its model's ``embedding_length``)."""
    value = header.metadata.get("clip.vision.projection_dim")
    return value if isinstance(value, int) and value > 0 else None


def sees_images(header) -> bool:
    """A projector with a vision encoder (mtmd also reads sound-only projectors)."""
    return header.metadata.get("clip.has_vision_encoder") is not False


class GGUFProjectorProbe(Probe):
    kind, format = "projector", "gguf"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        header = candidate.gguf()
        if not is_projector(header):
            raise NotAMatch(f"{candidate.path.name} is not a vision projector.")
        family = header.metadata.get("clip.projector_type")
        family = clean_name(family) if isinstance(family, str) else "clip"
        width = projection_width(header)
        return ProbedModel(
            kind="projector", format="gguf", engine=None, name=clean_name(header.name, candidate.path.stem),
            path=str(candidate.path), size_bytes=candidate.size_bytes, architecture=family,
            description=f"vision projector (mmproj, {family}): the image half of a multimodal model, used "
                        "beside its model",
            details={"projection_dim": width} if width else {}, gguf_header=header)


def find_projector(model_path: str | Path, embedding_length: int | None = None) -> Path | None:
    """The vision projector beside the GGUF model at ``model_path``, or None when it has none.

    ``embedding_length`` is the model's width (read from its header when
    None). Of several projectors that fit, the one whose name is closest to
    the model's wins. The answer is kept until a file is added to or
    removed from the folder (its modification time), so a server that
    asks at every request reads no header twice.
    """
    model = Path(model_path)
    try:
        stamp = model.parent.stat().st_mtime_ns
    except OSError:
        return None
    return _find_projector(model, stamp, embedding_length)


@functools.lru_cache(maxsize=64)
def _find_projector(model: Path, _folder_stamp: int, embedding_length: int | None) -> Path | None:
    from engines.errors import EngineError
    from engines.gguf.model_file import check_model_file

    try:
        siblings = [p for p in model.parent.iterdir()
                    if p != model and p.suffix.lower() == ".gguf" and any(h in p.name.lower() for h in NAME_HINTS)]
    except OSError:
        return None
    if not siblings:  # most models: no header is read at all
        return None
    if embedding_length is None:
        try:
            embedding_length = check_model_file(model).embedding_length
        except EngineError:
            return None
    fitting = []
    for path in siblings:
        try:
            header = check_model_file(path)
        except EngineError as exc:
            log.info("not a usable projector: %s", exc.message)
            continue
        width = projection_width(header)
        if is_projector(header) and sees_images(header) and (width is None or embedding_length is None
                                                              or width == embedding_length):
            fitting.append(path)
    if not fitting:
        return None
    stem = model.stem.lower()
    return max(sorted(fitting), key=lambda p: difflib.SequenceMatcher(None, stem, p.stem.lower()).ratio())
