"""Will this model run here? One estimate, used before download and before load.

For a GGUF model the need is the sum of:
  weights (tensor bytes from the header or the catalog)
+ KV cache  = Σ layers × KV heads × (key + value length) × element size × context
              (element size from the chosen cache type: engines/kv_cache.py)
+ buffers   = activations of one micro-batch + attention scratch + output logits
+ overhead  = the engine-host process itself (Python, llama.cpp runtime)
+ projector = for a vision model, its mmproj weights and the buffers of one
              image encode (:class:`ProjectorShape`); the image's tokens go in
              the context, whose cache is already counted at full length
It is judged against memory that is *free now*, keeping a reserve, and the
layers are split between VRAM and RAM when a usable GPU is present. Every
verdict carries the arithmetic in plain words, and a suggestion when the
model does not fit. The buffer and overhead constants were calibrated on
Gemma 3 270M against peak RSS (benchmarks/bench_fit.py reports the error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from engines.byte_sizes import format_bytes
from engines.kv_cache import CACHE_TYPES, DEFAULT_CACHE_TYPE, element_bytes, smaller_cache_types

GiB = 1024**3
MiB = 1024**2
PROCESS_OVERHEAD = 64 * MiB  # Python + llama.cpp runtime in the engine host, measured
N_UBATCH = 512  # llama.cpp's default micro-batch
OUTPUT_ROWS = 32  # logits rows and sampler scratch kept per vocabulary entry
VRAM_RESERVE = 512 * MiB

Verdict = Literal["gpu_full", "gpu_partial", "cpu_only", "wont_fit"]


def ram_reserve(total_bytes: int) -> int:
    """Kept free for the OS and the app: 10% of RAM, at least 0.75 GiB, at most 2 GiB."""
    return int(min(2 * GiB, max(0.75 * GiB, 0.10 * total_bytes)))


@dataclass(frozen=True)
class ProjectorShape:
    """A vision projector (mmproj) loaded beside the model: its weights and one image encode's buffers."""

    weights_bytes: int
    encode_bytes: int

    @classmethod
    def from_header(cls, header, file_bytes: int) -> "ProjectorShape":
        """From the projector's GGUF header: its vision tower attends over every patch of an image at once.

        The encode keeps the f32 attention scores of one layer (patches² per
        head) and a few activations per patch; for Gemma 3's SigLIP (896 px
        in 14 px patches, 16 heads) that is 1.2 GB, what llama.cpp reports.
        """
        meta = header.metadata
        size, patch = meta.get("clip.vision.image_size"), meta.get("clip.vision.patch_size")
        heads, width = meta.get("clip.vision.attention.head_count"), meta.get("clip.vision.embedding_length")
        if not all(isinstance(v, int) and v > 0 for v in (size, patch, heads, width)):
            return cls.from_file_size(file_bytes)
        patches = (size // patch) ** 2
        return cls(int(header.tensor_data_bytes or file_bytes), patches * patches * heads * 4 + patches * width * 4 * 8)

    @classmethod
    def from_file_size(cls, file_bytes: int) -> "ProjectorShape":
        """Before download (the catalog knows only the file's size): the encode's buffers are about as large."""
        return cls(file_bytes, file_bytes)


@dataclass(frozen=True)
class ModelShape:
    """The numbers the estimate needs, from a GGUF header or a catalog entry."""

    weights_bytes: int
    block_count: int
    embedding_length: int
    feed_forward_length: int
    head_count: int
    kv_heads_per_layer: tuple[int, ...]
    key_length: int
    value_length: int
    vocab_size: int
    layer_bytes: tuple[int, ...] = ()  # per block; empty: spread evenly
    trained_context: int | None = None
    projector: ProjectorShape | None = None  # a vision model's mmproj, loaded with it

    @classmethod
    def from_header(cls, header) -> "ModelShape":
        layers = header.block_count or 0
        per_layer = header.layer_tensor_bytes()
        ff = header.arch_value("feed_forward_length")
        ff = max(ff) if isinstance(ff, list) and ff else ff
        return cls(
            weights_bytes=int(header.tensor_data_bytes),
            block_count=layers,
            embedding_length=header.embedding_length or 0,
            feed_forward_length=int(ff or 4 * (header.embedding_length or 0)),
            head_count=header.head_count or 0,
            kv_heads_per_layer=tuple(header.head_count_kv_per_layer or [0] * layers),
            key_length=header.key_length or 0,
            value_length=header.value_length or 0,
            vocab_size=header.vocab_size or 32000,
            layer_bytes=tuple(per_layer.get(i, 0) for i in range(layers)),
            trained_context=header.context_length,
        )

    @property
    def non_layer_bytes(self) -> int:
        return max(0, self.weights_bytes - sum(self.layer_bytes)) if self.layer_bytes else self.weights_bytes // 20

    def bytes_of_layer(self, index: int) -> int:
        if self.layer_bytes:
            return self.layer_bytes[index]
        return (self.weights_bytes - self.non_layer_bytes) // max(1, self.block_count)

    def kv_bytes_per_token(self, element_bytes: float = 2.0) -> float:
        return sum(h * (self.key_length + self.value_length) for h in self.kv_heads_per_layer) * element_bytes


@dataclass(frozen=True)
class MemoryNeed:
    weights_bytes: int
    kv_cache_bytes: int
    buffers_bytes: int
    overhead_bytes: int
    context_length: int = 0
    cache_type: str = DEFAULT_CACHE_TYPE
    projector_bytes: int = 0  # of weights_bytes and buffers_bytes: the vision projector's part

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.buffers_bytes + self.overhead_bytes

    def sentence(self) -> str:
        """The sum in words, every term in GB so that it can be checked by eye."""
        weights, cache = format_bytes(self.weights_bytes, in_gb=True), format_bytes(self.kv_cache_bytes, in_gb=True)
        parts = [f"{weights} weights"]
        if self.projector_bytes:
            parts[0] += f" (with {format_bytes(self.projector_bytes, in_gb=True)} for the vision projector)"
        if self.context_length:
            parts.append(f"{cache} context cache ({self.cache_type}) at {self.context_length:,} tokens")
        elif self.kv_cache_bytes:
            parts.append(f"{cache} activations")
        parts.append(f"{format_bytes(self.buffers_bytes + self.overhead_bytes, in_gb=True)} buffers")
        return " + ".join(parts) + f" = {format_bytes(self.total_bytes, in_gb=True)}"


@dataclass(frozen=True)
class FitVerdict:
    verdict: Verdict
    label: str
    explanation: str
    need: MemoryNeed
    gpu_layers: int = 0
    total_layers: int = 0
    ram_free_bytes: int = 0
    vram_free_bytes: int = 0
    suggestions: tuple[str, ...] = field(default_factory=tuple)
    # The expected speed here (an engines.machine.speed.SpeedEstimate), attached by
    # engines.library.advisor once the machine's speed is known; None until then, or when it won't fit.
    speed: object | None = None

    @property
    def fits(self) -> bool:
        return self.verdict != "wont_fit"

    @property
    def summary(self) -> str:
        """"CPU only · about 18 tokens/s here": the verdict and the expected speed, in a few words."""
        return f"{self.label} · {self.speed.words}" if self.speed is not None else self.label

    def to_dict(self) -> dict:
        data = asdict(self)
        data["need"]["total_bytes"] = self.need.total_bytes
        data["total_bytes"] = self.need.total_bytes
        data["cache_type"] = self.need.cache_type
        return data


def estimate_text(shape: ModelShape, context_length: int, cache_type: str = DEFAULT_CACHE_TYPE) -> MemoryNeed:
    """Weights + KV cache + compute buffers + process overhead for one loaded model.

    ``cache_type`` ("f16", "q8_0", "q4_0") sets the bytes per cached element;
    only the cache shrinks with it, the compute buffers stay as they are.
    """
    batch = min(N_UBATCH, context_length)
    activations = batch * (shape.embedding_length + shape.feed_forward_length) * 4 * 8
    attention = batch * min(context_length, 4096) * shape.head_count * 4
    logits = shape.vocab_size * 4 * OUTPUT_ROWS
    projector = shape.projector or ProjectorShape(0, 0)
    return MemoryNeed(
        weights_bytes=shape.weights_bytes + projector.weights_bytes,
        kv_cache_bytes=int(shape.kv_bytes_per_token(element_bytes(cache_type)) * context_length),
        buffers_bytes=activations + attention + logits + projector.encode_bytes,
        overhead_bytes=PROCESS_OVERHEAD,
        context_length=context_length,
        cache_type=cache_type,
        projector_bytes=projector.weights_bytes + projector.encode_bytes,
    )


@dataclass(frozen=True)
class Resources:
    """Free memory right now, and the GPU llama.cpp could use (if any)."""

    ram_total: int
    ram_free: int
    gpu_name: str | None = None
    vram_free: int = 0
    unified_memory: bool = False

    @classmethod
    def from_report(cls, report, gpu_offload: bool) -> "Resources":
        gpu = next((g for g in report.gpus if g.free_bytes or g.unified_memory), None) if gpu_offload else None
        if gpu is None:
            return cls(report.memory.total_bytes, report.memory.available_bytes)
        vram = report.memory.available_bytes if gpu.unified_memory else (gpu.free_bytes or 0)
        return cls(report.memory.total_bytes, report.memory.available_bytes, gpu.name, vram, gpu.unified_memory)


def judge_text_fit(shape: ModelShape, context_length: int, resources: Resources,
                   cache_type: str = DEFAULT_CACHE_TYPE) -> FitVerdict:
    need = estimate_text(shape, context_length, cache_type)
    ram_budget = max(0, resources.ram_free - ram_reserve(resources.ram_total))
    ram_words = f"you have {format_bytes(resources.ram_free, in_gb=True)} free memory"
    layers = shape.block_count
    kv_per_layer = need.kv_cache_bytes / max(1, layers)
    if resources.gpu_name and not resources.unified_memory:
        vram_budget = max(0, resources.vram_free - VRAM_RESERVE)
        fixed_gpu = shape.non_layer_bytes + need.buffers_bytes
        on_gpu, used = 0, fixed_gpu
        while on_gpu < layers and used + shape.bytes_of_layer(on_gpu) + kv_per_layer <= vram_budget:
            used += shape.bytes_of_layer(on_gpu) + kv_per_layer
            on_gpu += 1
        if on_gpu == 0:
            used = 0
        ram_part = need.total_bytes - used
        gpu_words = f"{format_bytes(resources.vram_free, in_gb=True)} free on the {resources.gpu_name}"
        if on_gpu == layers and ram_part <= ram_budget:
            return FitVerdict("gpu_full", "Runs fully on GPU", f"{need.sentence()}; all {layers} layers fit in the {gpu_words}.",
                              need, on_gpu, layers, resources.ram_free, resources.vram_free)
        if on_gpu > 0 and ram_part <= ram_budget:
            return FitVerdict(
                "gpu_partial", f"Partly on GPU ({on_gpu} of {layers} layers)",
                f"{need.sentence()}; {on_gpu} of {layers} layers ({format_bytes(used, in_gb=True)}) fit in the "
                f"{gpu_words}, the rest ({format_bytes(ram_part, in_gb=True)}) runs from RAM "
                f"({format_bytes(resources.ram_free, in_gb=True)} free).",
                need, on_gpu, layers, resources.ram_free, resources.vram_free)
    elif resources.gpu_name and resources.unified_memory:
        if need.total_bytes <= ram_budget:
            return FitVerdict("gpu_full", "Runs fully on GPU",
                              f"{need.sentence()}; the {resources.gpu_name} shares the "
                              f"{format_bytes(resources.ram_free, in_gb=True)} of free memory.",
                              need, layers, layers, resources.ram_free, resources.vram_free)
    no_gpu = "" if resources.gpu_name else " and no supported GPU"
    if need.total_bytes <= ram_budget:
        return FitVerdict("cpu_only", "CPU only", f"{need.sentence()}; {ram_words}{no_gpu}.", need, 0, layers,
                          resources.ram_free, resources.vram_free)
    budget = ram_budget + (resources.vram_free if resources.gpu_name else 0)
    shorter = longest_context_that_fits(shape, budget, context_length, cache_type)
    suggestions = []
    if shorter:
        suggestions.append(f"A context of {shorter:,} tokens would fit.")
    cache = smaller_cache_that_fits(shape, budget, context_length, cache_type)
    if cache:
        suggestions.append(f"A {cache} context cache ({CACHE_TYPES[cache].description}) would fit {context_length:,} tokens.")
    suggestions.append("A smaller quantization or a smaller model would need less memory.")
    return FitVerdict(
        "wont_fit", "Won't fit",
        f"{need.sentence()}; {ram_words}{no_gpu}, and {format_bytes(ram_reserve(resources.ram_total), in_gb=True)} "
        "is kept free for the system.",
        need, 0, layers, resources.ram_free, resources.vram_free, tuple(suggestions))


def longest_context_that_fits(shape: ModelShape, budget: int, start: int, cache_type: str = DEFAULT_CACHE_TYPE) -> int:
    """The longest power-of-two context (≥ 512) whose estimate fits in ``budget``, or 0."""
    context = 1 << max(9, (max(start, 2) - 1).bit_length() - 1)
    while context >= 512:
        if estimate_text(shape, context, cache_type).total_bytes <= budget:
            return context
        context //= 2
    return 0


def smaller_cache_that_fits(shape: ModelShape, budget: int, context_length: int, cache_type: str = DEFAULT_CACHE_TYPE) -> str | None:
    """The least-compressed cache type, smaller than ``cache_type``, that fits ``context_length`` in ``budget``.

    Least-compressed first because q8_0 costs almost no quality while q4_0
    costs some: the user should hear about the gentler option when it is enough.
    """
    for candidate in smaller_cache_types(cache_type):
        if estimate_text(shape, context_length, candidate).total_bytes <= budget:
            return candidate
    return None
