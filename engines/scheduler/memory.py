"""What a model will take, what a loaded one measures, and what the machine has free.

The scheduler decides with the same arithmetic as the fit verdict the
Models page shows (``judge_text_fit`` for GGUF models, ``judge_image_fit``
for image pipelines), so a refusal reads like the verdict the user already
knows: "1.1 GB weights + ... = 1.6 GB; you have 0.9 GB free memory". What
unloading idle models would give back is added to the free memory before
judging: their *measured* size (the engine host's resident set, and its
VRAM where the driver says), or the estimate while nothing was measured.

Everything here is best-effort: a model whose size cannot be estimated
(an unreadable file, an unknown engine) is loaded without a check and the
engine itself says what is wrong, and a measurement that fails is None.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from engines.byte_sizes import format_bytes
log = logging.getLogger(__name__)

TEXT_ENGINES = frozenset({"llama_cpp", "documents"})  # documents: llama.cpp in embedding mode


@dataclass(frozen=True)
class Estimate:
    """How to judge one model against the machine's free memory (a fit verdict on demand)."""

    name: str
    judge: Callable[[Any], Any]  # HardwareReport -> engines.machine.fit.FitVerdict
    block_count: int | None = None  # text models: the layers, to tell "every layer on the GPU"
    context_length: int | None = None  # text models: the context it is loaded with

    def refusal(self, verdict) -> str:
        """Why it cannot load, in the verdict's words; for a GGUF model, the words llama.cpp's preflight uses."""
        if self.context_length is not None:
            head = f"Not enough memory for a context of {self.context_length:,} tokens"
        else:
            head = f"Not enough memory to load {self.name}"
        return f"{head}: {verdict.explanation}"

    def bytes_needed(self, report) -> int | None:
        try:
            return int(self.judge(report).need.total_bytes)
        except Exception:  # noqa: BLE001 - best effort
            return None


def model_name(spec: Any) -> str:
    path = getattr(spec, "model_path", None)
    if path:
        return Path(str(path)).name or str(path)
    return str(getattr(spec, "name", None) or getattr(spec, "model", None) or spec)


def gpu_offload_available() -> bool:
    """Whether the installed llama.cpp build can use a GPU (found without importing it)."""
    from engines.machine.accelerators import llama_gpu_backends

    return bool(llama_gpu_backends())


def estimate_for(engine: str, spec: Any, gpu_offload: bool | None = None) -> Estimate | None:
    """The estimate for a text or image model; None when it cannot be made (the engine will say why)."""
    try:
        if engine in TEXT_ENGINES and getattr(spec, "model_path", None):
            return _text_estimate(spec, gpu_offload_available() if gpu_offload is None else gpu_offload)
        if getattr(spec, "model_path", None) and Path(spec.model_path).is_dir():
            return _image_estimate(spec)
    except Exception as exc:  # noqa: BLE001 - a bad file is the engine's to report, in its words
        log.info("no memory estimate for %s: %s", model_name(spec), exc)
    return None


def _text_estimate(spec, gpu_offload: bool) -> Estimate:
    from engines.machine.fit import ModelShape, Resources, judge_text_fit
    from engines.gguf.model_file import check_model_file

    shape = ModelShape.from_header(check_model_file(Path(spec.model_path)))
    if getattr(spec, "projector", None):  # a vision model: its projector is loaded with it
        from engines.llama.preflight import projector_shape

        shape = replace(shape, projector=projector_shape(Path(spec.projector)))
    context, cache = spec.context_length, spec.cache_type

    def judge(report):
        return judge_text_fit(shape, context, Resources.from_report(report, gpu_offload), cache)

    return Estimate(model_name(spec), judge, shape.block_count, context)


def _image_estimate(spec) -> Estimate:
    from engines.machine.image_fit import PipelineShape, folder_weights, judge_image_fit

    folder = Path(spec.model_path)
    weights, dtype = folder_weights(folder)
    shape = PipelineShape.from_folder(folder)
    runtime = "onnx" if _runs_on_onnx(folder, getattr(spec, "backend", "auto")) else "torch"

    def judge(report):
        return judge_image_fit(weights, shape.native_size, report, file_dtype=dtype, shape=shape, runtime=runtime)

    return Estimate(model_name(spec), judge)


def _runs_on_onnx(folder: Path, backend: str) -> bool:
    if backend in ("onnx", "torch"):
        return backend == "onnx"
    unet = folder / "unet"
    has_torch = any(unet.glob("*.safetensors")) or any(unet.glob("*.bin"))
    return not has_torch and (unet / "model.onnx").is_file()


# ---- the machine -----------------------------------------------------------


def current_report():
    """Free RAM now, and free VRAM now when there is a GPU (NVML's figure is cached otherwise)."""
    from engines.machine.hardware import probe, probe_gpus

    report = probe()
    if report.gpus:
        probe_gpus.cache_clear()
        report = probe()
    return report


def with_freed(report, ram_bytes: int, vram_bytes: int = 0):
    """``report`` as it would read once ``ram_bytes`` (and ``vram_bytes``) were given back (or taken, if < 0)."""
    memory = replace(report.memory, available_bytes=max(0, report.memory.available_bytes + int(ram_bytes)))
    gpus = list(report.gpus)
    if vram_bytes and gpus and gpus[0].free_bytes is not None:
        gpus[0] = replace(gpus[0], free_bytes=max(0, gpus[0].free_bytes + int(vram_bytes)))
    return replace(report, memory=memory, gpus=gpus)


def describe(n: int) -> str:
    """Bytes in GB, as the fit verdict writes them."""
    return format_bytes(n, in_gb=True)


# ---- a loaded model ---------------------------------------------------------


def resident_bytes(pid: int | None) -> int | None:
    """The engine host's resident set (psutil), or None."""
    if not pid:
        return None
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return None


def vram_bytes(pid: int | None) -> int | None:
    """What the NVIDIA driver says ``pid`` holds on its GPUs; None without NVML or where it does not say."""
    if not pid:
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            total, seen = 0, False
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == pid and process.usedGpuMemory:
                        total += int(process.usedGpuMemory)
                        seen = True
            return total if seen else None
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no GPU, or a driver that does not account per process
        return None
