"""The probe registry: what a file or folder holds, decided in one place.

``identify(path)`` returns a :class:`ProbedModel` whose ``kind`` is
"chat", "embedding", "image", "lora", "upscaler", "projector" or "unknown"
(with the reason). One probe per format (GGUF chat, GGUF embedding, GGUF
adapter, diffusers folder, ONNX folder, LoRA, ESRGAN upscaler, vision
projector) recognises a path
or raises :class:`NotAMatch`; see :mod:`.registry`.
"""

from engines.library.probes.base import KINDS, Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name, strip_controls
from engines.library.probes.registry import PROBES, identify, register

__all__ = ["KINDS", "PROBES", "Candidate", "NotAMatch", "Probe", "ProbedModel", "clean_name", "identify",
           "register", "strip_controls"]
