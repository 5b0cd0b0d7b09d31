"""From a probed path to an installed-model record: the one way a model joins the library.

Every way in (``atelier models import``, "Add model file…", "Add model
folder…", drag and drop, the models-folder scan, a finished download, the
demo) asks :func:`engines.library.probes.identify` what the path holds and
turns the answer into a record here, so the same file gets the same kind,
name and refusal wherever it comes from.

Imported files and folders stay where they are (models are large; a copy
would double the disk use). Only what an engine in Atelier can run is
recorded: chat, embedding and image models, LoRAs (applied by the image
engine, listed with the family they were trained for) and upscalers.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import EngineError, ErrorKind
from engines.library.installed import InstalledModel, InstalledModels, Source
from engines.library.probes import ProbedModel, identify
from engines.library.probes.files import real_path

RECORDED_KINDS = ("chat", "embedding", "image", "lora", "upscaler", "vae")
# The id prefix says where a model came from: "local/" for what the user added from elsewhere.
ID_PREFIX: dict[str, str] = {"import": "local", "folder": "folder", "download": "download", "demo": "demo"}
_SOURCE_WORDS = {"import": "added from {parent}", "folder": "found in the models folder", "download": "downloaded",
                 "demo": "bundled with Atelier"}


def check_recordable(probed: ProbedModel) -> ProbedModel:
    """``probed`` when an engine can run it; otherwise an EngineError that says what it is and why not."""
    if probed.kind in RECORDED_KINDS:
        return probed
    if probed.kind == "unknown":
        raise EngineError(ErrorKind.MODEL_FILE, probed.reason)
    if probed.kind == "projector":  # not a model on its own: the chat finds it beside its model
        raise EngineError(ErrorKind.UNSUPPORTED, f"{Path(probed.path).name} is a {probed.description}. Keep it in "
                          "the same folder as its model and add the model: chats with it can then read images.")
    article = "an" if probed.description[:1].lower() in "aeiou" else "a"
    raise EngineError(ErrorKind.UNSUPPORTED, f"{Path(probed.path).name} is {article} {probed.description}: "
                      f"Atelier cannot use {_plural(probed.kind)} yet.")


def _plural(kind: str) -> str:
    return {"lora": "LoRAs", "upscaler": "upscalers"}.get(kind, f"{kind} models")


def record_for(probed: ProbedModel, *, model_id: str, source: Source, name: str | None = None,
               description: str | None = None, sha256: str | None = None) -> InstalledModel:
    """The installed-model record for a probed, recordable model (see :func:`check_recordable`).

    ``name`` and ``description`` override the probe's (a catalog entry knows better);
    the default description says what the model is and where it came from.
    """
    check_recordable(probed)
    where = _SOURCE_WORDS[source].format(parent=Path(probed.path).parent)
    return InstalledModel(
        id=model_id, name=name or probed.name, path=probed.path, size_bytes=probed.size_bytes,
        engine=probed.engine or "", format=probed.format, source=source, sha256=sha256,
        description=description if description is not None else f"{_capitalised(probed.description)}, {where}",
        kind=probed.kind, base=probed.base,
    )


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def register(probed: ProbedModel, store: InstalledModels, source: Source, *, model_id: str | None = None,
             name: str | None = None, description: str | None = None, sha256: str | None = None) -> InstalledModel:
    """Record a probed model; a path the library already has keeps its record (and id)."""
    existing = store.find_by_path(probed.path)
    if existing is not None and model_id in (None, existing.id):
        return existing
    model_id = model_id or store.unique_id(ID_PREFIX[source], Path(probed.path).stem if probed.format == "gguf"
                                           else Path(probed.path).name)
    return store.add(record_for(probed, model_id=model_id, source=source, name=name, description=description,
                                sha256=sha256))


def import_model(path: str | Path, store: InstalledModels) -> InstalledModel:
    """Add a file or folder the user already has; return the existing record if it is already known.

    Raises EngineError with the probe's reason when the path is not a model
    Atelier can run (a FIFO, a web page saved as .gguf, a LoRA...).
    """
    probed = check_recordable(identify(real_path(path)))  # the record keeps the real path, links resolved
    return register(probed, store, "import")
