"""What the optional engine libraries can use on this machine.

These probes import torch and onnxruntime, which take a second or more, so
only the CLI (``atelier doctor``) and the engine host call them; the GUI
never does at start-up. Each probe answers even when the library is
missing or broken.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field

from engines.machine.hardware import GpuInfo


@dataclass(frozen=True)
class TorchInfo:
    installed: bool
    version: str | None = None
    cuda: bool = False
    cuda_version: str | None = None
    mps: bool = False
    cpu_bf16: bool = False
    devices: list[GpuInfo] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class AcceleratorReport:
    torch: TorchInfo
    onnxruntime_providers: list[str]
    onnxruntime_version: str | None
    llama_gpu_backends: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def probe_torch() -> TorchInfo:
    if importlib.util.find_spec("torch") is None:
        return TorchInfo(False)
    try:
        import torch
    except Exception as exc:  # a broken install is reported, not raised
        return TorchInfo(False, error=str(exc))
    devices = []
    cuda = False
    try:
        cuda = bool(torch.cuda.is_available())
        for index in range(torch.cuda.device_count() if cuda else 0):
            free, total = torch.cuda.mem_get_info(index)
            devices.append(GpuInfo(torch.cuda.get_device_name(index), "NVIDIA", int(total), int(free), None, "cuda"))
    except Exception:
        pass
    mps = False
    try:
        mps = bool(torch.backends.mps.is_available())
    except Exception:
        pass
    bf16 = False
    try:
        bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        pass
    return TorchInfo(True, torch.__version__, cuda, getattr(torch.version, "cuda", None), mps, bf16, devices)


def probe_onnxruntime() -> tuple[list[str], str | None]:
    if importlib.util.find_spec("onnxruntime") is None:
        return [], None
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers()), onnxruntime.__version__
    except Exception:
        return [], None


def llama_gpu_backends() -> list[str]:
    """GPU backends shipped with the installed llama.cpp build, found without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return []
    from pathlib import Path

    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    names = {"cuda": "CUDA", "vulkan": "Vulkan", "metal": "Metal", "hip": "ROCm", "sycl": "SYCL", "opencl": "OpenCL"}
    found = []
    for key, label in names.items():
        if any(lib.glob(f"*ggml-{key}*")):
            found.append(label)
    return found


def probe_accelerators() -> AcceleratorReport:
    providers, version = probe_onnxruntime()
    return AcceleratorReport(probe_torch(), providers, version, llama_gpu_backends())
