"""Importing a GGUF file the user already has ("Add model file…", drag and drop).

The file stays where it is (models are large; a copy would double the disk
use) and is recorded in the installed-model store after its header checks
out, so a bad file is refused with a reason rather than failing later.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import EngineError, ErrorKind
from engines.library.installed import InstalledModel, InstalledModels
from engines.llama.preflight import check_model_file


def import_gguf(path: str | Path, store: InstalledModels) -> InstalledModel:
    """Register a local GGUF file; return the existing record if it is already known."""
    path = Path(path).expanduser()
    header = check_model_file(path)
    path = path.resolve()
    existing = store.find_by_path(path)
    if existing is not None:
        return existing
    if not header.architecture:
        raise EngineError(ErrorKind.MODEL_FILE, f"{path.name} does not name its architecture.")
    name = header.name or path.stem
    quant = header.quantization
    if quant and quant not in name:
        name = f"{name} {quant}"
    return store.add(
        InstalledModel(
            id=store.unique_id("local", path.stem),
            name=name,
            path=str(path),
            size_bytes=path.stat().st_size,
            engine="llama_cpp",
            format="gguf",
            source="import",
            description=f"{header.architecture} model imported from {path.parent}",
        )
    )
