"""GGUF files: chat (text-generation) models, embedding models and LoRA adapters.

All three share one header read (:meth:`Candidate.gguf`, which goes through
llama's pre-flight check so a damaged file gets the same sentence
everywhere). What tells them apart:

* an **embedding** model is a BERT-family architecture, or declares a
  ``{arch}.pooling_type`` (Qwen3-Embedding, EmbeddingGemma): llama.cpp turns
  text into vectors with it, it does not write replies;
* an **adapter** says ``general.type = "adapter"`` (``convert_lora_to_gguf.py``);
* everything else that reads is a **chat** model, base or instruction-tuned.

A vision projector (``mmproj``, architecture ``clip``) is only half of a
multimodal model: :mod:`.projector` recognises it, and it is never offered
in the chat picker.
"""

from __future__ import annotations

from engines.library.probes.base import Candidate, NotAMatch, Probe, ProbedModel
from engines.library.probes.names import clean_name
from engines.library.probes.projector import is_projector

EMBEDDING_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert",
    "t5encoder", "gemma-embedding",
})


def is_embedding(header) -> bool:
    return header.architecture in EMBEDDING_ARCHITECTURES or header.arch_value("pooling_type") is not None


def is_adapter(header) -> bool:
    return header.metadata.get("general.type") == "adapter"


def _name(header, candidate: Candidate) -> str:
    name = clean_name(header.name, candidate.path.stem)
    quant = header.quantization
    return f"{name} {quant}" if quant and quant.lower() not in name.lower() else name


def _record(candidate: Candidate, header, kind: str, engine: str | None, description: str, **extra) -> ProbedModel:
    return ProbedModel(
        kind=kind, format="gguf", engine=engine, name=_name(header, candidate), path=str(candidate.path),
        size_bytes=candidate.size_bytes, description=description, architecture=clean_name(header.architecture),
        quantization=header.quantization, context_length=header.context_length, gguf_header=header, **extra)


class GGUFChatProbe(Probe):
    kind, format = "chat", "gguf"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        header = candidate.gguf()
        if is_projector(header):
            raise NotAMatch(f"{candidate.path.name} is a vision projector (mmproj), not a chat model.")
        if is_embedding(header) or is_adapter(header):
            raise NotAMatch(f"{candidate.path.name} is not a chat model.")
        arch = clean_name(header.architecture)
        return _record(candidate, header, "chat", "llama_cpp", f"{arch} chat model")


class GGUFEmbeddingProbe(Probe):
    kind, format = "embedding", "gguf"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        header = candidate.gguf()
        if not is_embedding(header) or is_adapter(header):
            raise NotAMatch(f"{candidate.path.name} is not an embedding model.")
        arch = clean_name(header.architecture)
        pooling = header.arch_value("pooling_type")
        details = {"pooling_type": pooling} if isinstance(pooling, int) else {}
        return _record(candidate, header, "embedding", "llama_cpp", f"{arch} embedding model", details=details)


class GGUFAdapterProbe(Probe):
    kind, format = "lora", "gguf"

    @classmethod
    def probe(cls, candidate: Candidate) -> ProbedModel:
        header = candidate.gguf()
        if not is_adapter(header):
            raise NotAMatch(f"{candidate.path.name} is not a LoRA adapter.")
        arch = clean_name(header.architecture)
        alpha = header.metadata.get("adapter.lora.alpha")
        details = {"layout": "gguf", **({"alpha": alpha} if isinstance(alpha, (int, float)) else {})}
        return _record(candidate, header, "lora", None, f"LoRA adapter for {arch} models (GGUF)", base=arch,
                       details=details)
