"""What this machine has: CPU, memory, GPUs and disk.

Every probe is defensive: a machine without a GPU, without a driver or
without /proc must still get a report, never a crash. Free RAM and free
disk are read on every :func:`probe`. The CPU and the GPUs are probed once
and cached, since the CPU flags and the GPUs do not change while the app
runs; so each GPU's ``free_bytes`` is the free VRAM as of the last GPU
probe, not now, until ``probe(refresh=True)`` (the Models page's Refresh)
probes again.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import psutil

# Instruction sets that matter for llama.cpp and torch, as the OS names them.
_X86_FEATURES = {
    "sse4_2": "SSE4.2", "avx": "AVX", "f16c": "F16C", "fma": "FMA", "avx2": "AVX2", "bmi2": "BMI2",
    "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx512_bf16": "AVX-512 BF16",
    "avx512vbmi": "AVX-512 VBMI", "avx_vnni": "AVX-VNNI", "amx_tile": "AMX", "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}
_ARM_FEATURES = {"asimd": "NEON", "asimddp": "DOTPROD", "sve": "SVE", "sve2": "SVE2", "i8mm": "I8MM", "fphp": "FP16"}


# The features with which a CPU computes bf16 in hardware (amx_tile alone does no arithmetic).
BF16_FEATURES = ("AVX-512 BF16", "AMX-BF16")


@dataclass(frozen=True)
class CpuInfo:
    name: str
    architecture: str
    physical_cores: int
    logical_cores: int
    features: list[str]

    @property
    def native_bf16(self) -> bool:
        """Whether this CPU computes bf16 natively, where PyTorch runs bf16 about twice as fast as fp32.

        The one answer to "bf16 on this CPU?": the PyTorch engine's "auto" precision, the auto
        backend and the memory estimate all ask it, so they cannot disagree.
        """
        return any(feature in self.features for feature in BF16_FEATURES)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    vendor: str
    total_bytes: int | None
    free_bytes: int | None
    driver: str | None
    backend: str  # "nvml", "cuda", "mps"
    unified_memory: bool = False
    memory_bandwidth: float | None = None  # bytes per second at the memory's top clock (NVML), for speed estimates


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class DiskInfo:
    path: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class HardwareReport:
    os: str
    python: str
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: list[GpuInfo] = field(default_factory=list)
    disk: DiskInfo | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _cpuinfo_fields() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


@lru_cache(maxsize=1)
def probe_cpu() -> CpuInfo:
    fields = _cpuinfo_fields()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    table = _ARM_FEATURES if platform.machine().lower() in ("aarch64", "arm64") else _X86_FEATURES
    features = [label for flag, label in table.items() if flag in flags]
    if not fields and platform.system() == "Darwin" and platform.machine() == "arm64":
        features = ["NEON", "DOTPROD", "FP16"]
    name = fields.get("model name") or fields.get("Hardware") or platform.processor() or platform.machine()
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return CpuInfo(name, platform.machine(), physical, logical, features)


def _nvml_gpus() -> list[GpuInfo]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []  # no NVIDIA driver: not an error
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(name, "NVIDIA", int(memory.total), int(memory.free), driver, "nvml",
                                memory_bandwidth=_nvml_bandwidth(pynvml, handle)))
    except Exception:
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus


def _nvml_bandwidth(pynvml, handle) -> float | None:
    """Peak memory bandwidth: bus width × memory clock × 2 (double data rate), or None if NVML cannot say."""
    try:
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
    except Exception:  # older drivers and some virtual GPUs do not report them
        return None
    return float(bus_bits) / 8 * float(clock_mhz) * 1e6 * 2 if bus_bits and clock_mhz else None


@lru_cache(maxsize=1)
def probe_gpus() -> tuple[GpuInfo, ...]:
    gpus = _nvml_gpus()
    if not gpus and platform.system() == "Darwin" and platform.machine() == "arm64":
        total = psutil.virtual_memory().total
        gpus = [GpuInfo("Apple silicon GPU", "Apple", total, None, None, "mps", unified_memory=True)]
    return tuple(gpus)


def probe(models_dir: Path | None = None, refresh: bool = False) -> HardwareReport:
    if refresh:
        probe_cpu.cache_clear()
        probe_gpus.cache_clear()
    memory = psutil.virtual_memory()
    disk = None
    if models_dir is not None:
        target = models_dir if models_dir.exists() else models_dir.parent
        usage = shutil.disk_usage(target)
        disk = DiskInfo(str(models_dir), usage.free, usage.total)
    return HardwareReport(
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        cpu=probe_cpu(),
        memory=MemoryInfo(memory.total, memory.available),
        gpus=list(probe_gpus()),
        disk=disk,
    )
