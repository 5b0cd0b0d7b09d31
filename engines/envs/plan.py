"""What to install for the image engine on this machine: the PyTorch build, the packages, the sizes.

Pure decisions, no installing and no heavy imports. The PyTorch build
follows the hardware probe: CPU; the newest CUDA build the NVIDIA driver
supports; ROCm on Linux with an AMD GPU; plain PyPI (MPS) on macOS. The
package index for PyTorch can be replaced with ``ATELIER_TORCH_INDEX_URL``
(``pypi`` means no extra index), and a folder of wheels replaces every
index (``--no-index --find-links``) for machines without internet.

The packages are what ``engines/`` imports on the image path (the engine
host, the registry, the diffusion engines and the CPU probe), pinned to the
versions the ``images`` extra of pyproject.toml pins.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

INDEX_ENV = "ATELIER_TORCH_INDEX_URL"  # a PyTorch index URL, or "pypi" for no extra index
WHEELS_ENV = "ATELIER_ENGINE_WHEELS"  # a folder of wheels: install from it alone
PYTORCH_INDEX = "https://download.pytorch.org/whl"

TORCH_VERSION = "2.13.0"
# The rest of the image path, as pinned by the "images" extra (tests check they agree).
PACKAGES: tuple[str, ...] = (
    "diffusers==0.42.1",
    "transformers==5.23.0",
    "accelerate==1.15.0",
    "safetensors==0.8.0",
    "onnxruntime==1.31.1",  # onnxruntime-gpu for CUDA
    "onnx==1.23.2",  # the ONNX converter (engines/diffusion/convert.py)
    "Pillow==13.0.0",
    "numpy>=1.26",
    "psutil==7.2.2",  # engines/library/hardware.py (the CPU probe the torch engine asks)
)

# CUDA builds of PyTorch, newest first: (variant, CUDA version, minimum Linux driver, torch version).
# A driver supports every CUDA up to its own version; the builds before cu126 stopped with the
# torch release named here, so an old driver gets that release.
CUDA_BUILDS: tuple[tuple[str, tuple[int, int], tuple[int, ...], str], ...] = (
    ("cu130", (13, 0), (580, 65), TORCH_VERSION),
    ("cu128", (12, 8), (570, 26), TORCH_VERSION),
    ("cu126", (12, 6), (560, 28), TORCH_VERSION),
    ("cu124", (12, 4), (550, 54), "2.6.0"),
    ("cu121", (12, 1), (530, 30), "2.5.1"),
    ("cu118", (11, 8), (520, 61), "2.7.1"),
)
# ROCm builds, newest first: (variant, ROCm version, torch version).
ROCM_BUILDS: tuple[tuple[str, tuple[int, int], str], ...] = (
    ("rocm6.4", (6, 4), TORCH_VERSION),
    ("rocm6.3", (6, 3), "2.7.1"),
)

GB = 1024**3
MB = 1024**2
# (download, on disk) per kind of build. CPU was measured on Linux x86-64 (torch 2.13.0+cpu and
# the packages above: 0.3 GB of wheels, 1.4 GB installed); the others are estimates from the
# published wheel sizes (CUDA pulls the nvidia-* libraries, ROCm ships its libraries inside torch).
SIZES: dict[str, tuple[int, int]] = {
    "cpu": (300 * MB, 1400 * MB),
    "mps": (250 * MB, 900 * MB),
    "cuda": (3600 * MB, 7 * GB),
    "rocm": (4600 * MB, 14 * GB),
}


@dataclass(frozen=True)
class InstallPlan:
    """One install: the PyTorch build, the packages (torch first) and what it costs."""

    variant: str  # "cpu", "cu128", "rocm6.4", "mps"
    packages: tuple[str, ...]  # pinned requirements; the first is torch
    download_bytes_estimate: int
    disk_bytes_estimate: int
    index_url: str | None  # where torch comes from; None: PyPI (or the pip configuration)
    wheel_dir: str | None = None  # install from this folder only, without any index
    reason: str = ""  # why this build, in words
    label: str = ""  # "PyTorch 2.13 (CPU)"

    @property
    def torch_requirement(self) -> str:
        return self.packages[0]

    @property
    def other_packages(self) -> tuple[str, ...]:
        return self.packages[1:]

    @property
    def kind(self) -> str:
        return variant_kind(self.variant)

    def summary(self) -> str:
        """"PyTorch 2.13 (CPU) + diffusers + ONNX Runtime: about 1.4 GB on disk, 0.3 GB to download"."""
        download = ("nothing to download (from the folder of wheels)" if self.wheel_dir
                    else f"{format_size(self.download_bytes_estimate)} to download")
        return (f"{self.label} + diffusers + ONNX Runtime: about {format_size(self.disk_bytes_estimate)} on disk, "
                f"{download}")

    def with_wheel_dir(self, wheel_dir: str | os.PathLike | None) -> "InstallPlan":
        data = self.to_dict()
        data["wheel_dir"] = str(wheel_dir) if wheel_dir else None
        return InstallPlan.from_dict(data)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["packages"] = list(self.packages)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "InstallPlan":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["packages"] = tuple(values.get("packages") or ())
        return cls(**values)


@dataclass(frozen=True)
class Accelerator:
    """The PyTorch build the hardware calls for."""

    variant: str
    torch_version: str
    reason: str
    extra: dict = field(default_factory=dict)


def variant_kind(variant: str) -> str:
    if variant.startswith("cu"):
        return "cuda"
    if variant.startswith("rocm"):
        return "rocm"
    return variant if variant in ("cpu", "mps") else "cpu"


def format_size(n: int) -> str:
    if n >= GB:
        return f"{n / GB:.1f} GB"
    if n >= MB:
        return f"{n / MB:.0f} MB"
    return f"{max(n, 0) / 1024:.0f} KB"


def _version_tuple(text: str | None) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in numbers[:3])


def probe_cuda_driver_version() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver supports (NVML), or None without a driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        value = int(pynvml.nvmlSystemGetCudaDriverVersion())  # 12040 = 12.4
        return value // 1000, (value % 1000) // 10
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def probe_rocm() -> tuple[int, int] | None:
    """The installed ROCm version on Linux with an AMD GPU (``/dev/kfd``), or None."""
    if platform.system() != "Linux" or not Path("/dev/kfd").exists():
        return None
    for candidate in (Path("/opt/rocm/.info/version"), *sorted(Path("/opt").glob("rocm-*/.info/version"))):
        try:
            version = _version_tuple(candidate.read_text(encoding="utf-8"))
        except OSError:
            continue
        if len(version) >= 2:
            return version[0], version[1]
    return ROCM_BUILDS[0][1]  # a ROCm-capable kernel driver without the user-space stack: the newest build


def choose_accelerator(hardware, cuda_version: tuple[int, int] | None = None,
                       rocm_version: tuple[int, int] | None = None) -> Accelerator:
    """The PyTorch build for *hardware* (an :class:`engines.library.hardware.HardwareReport`).

    ``cuda_version`` (the newest CUDA the driver supports) overrides the
    driver-version table; NVML is asked only when the report has no driver
    version. ``rocm_version`` is probed when not given.
    """
    system = (getattr(hardware, "os", "") or platform.system()).split()[0]
    machine = getattr(getattr(hardware, "cpu", None), "architecture", "") or platform.machine()
    gpus = list(getattr(hardware, "gpus", []) or [])
    if system == "Darwin":
        if machine.lower() in ("arm64", "aarch64"):
            return Accelerator("mps", TORCH_VERSION, "Apple silicon: PyTorch from PyPI uses the GPU through Metal (MPS).")
        return Accelerator("cpu", TORCH_VERSION, "an Intel Mac: PyTorch runs on the CPU.")
    nvidia = [g for g in gpus if (g.vendor or "").upper() == "NVIDIA"]
    if nvidia:
        gpu = nvidia[0]
        driver = _version_tuple(gpu.driver)
        # The driver's own number decides (NVIDIA's table); NVML is asked only when it is unknown.
        supported = cuda_version or (None if driver else probe_cuda_driver_version())
        for variant, cuda, min_driver, torch_version in CUDA_BUILDS:
            ok = supported >= cuda if supported else (bool(driver) and driver >= min_driver)
            if ok:
                why = f"CUDA {supported[0]}.{supported[1]}" if supported else f"driver {gpu.driver}"
                return Accelerator(variant, torch_version,
                                   f"{gpu.name} with NVIDIA {why}: the CUDA {cuda[0]}.{cuda[1]} build of PyTorch.",
                                   {"gpu": gpu.name})
        return Accelerator("cpu", TORCH_VERSION,
                           f"{gpu.name} found, but its driver ({gpu.driver or 'unknown version'}) is too old for "
                           f"PyTorch's CUDA builds (they need driver {'.'.join(map(str, CUDA_BUILDS[-1][2]))} or "
                           f"newer): PyTorch runs on the CPU. Update the NVIDIA driver, then reinstall the engine.")
    if system == "Linux":
        rocm = rocm_version or probe_rocm()
        if rocm:
            for variant, version, torch_version in ROCM_BUILDS:
                if rocm >= version:
                    return Accelerator(variant, torch_version,
                                       f"an AMD GPU with ROCm {rocm[0]}.{rocm[1]}: the ROCm build of PyTorch.")
            return Accelerator("cpu", TORCH_VERSION, f"ROCm {rocm[0]}.{rocm[1]} is older than PyTorch's ROCm builds "
                                                     "support: PyTorch runs on the CPU.")
    return Accelerator("cpu", TORCH_VERSION, "no supported GPU found: PyTorch runs on the CPU.")


def torch_index_url(variant: str) -> str | None:
    """Where the torch wheel of *variant* comes from (None: PyPI), honouring ``ATELIER_TORCH_INDEX_URL``."""
    override = os.environ.get(INDEX_ENV, "").strip()
    if override:
        return None if override.lower() == "pypi" else override
    if variant == "mps":
        return None
    return f"{PYTORCH_INDEX}/{variant}"


def _label(variant: str, torch_version: str) -> str:
    short = ".".join(torch_version.split(".")[:2])
    if variant.startswith("cu"):
        digits = variant[2:]
        name = f"CUDA {digits[:-1]}.{digits[-1]}"
    elif variant.startswith("rocm"):
        name = f"ROCm {variant[4:]}"
    elif variant == "mps":
        name = "Apple GPU"
    else:
        name = "CPU"
    return f"PyTorch {short} ({name})"


def make_plan(hardware, wheel_dir: str | os.PathLike | None = None, cuda_version: tuple[int, int] | None = None,
              rocm_version: tuple[int, int] | None = None) -> InstallPlan:
    """The install plan for *hardware*: see :func:`choose_accelerator` and the module docstring."""
    accel = choose_accelerator(hardware, cuda_version, rocm_version)
    packages = list(PACKAGES)
    if accel.variant.startswith("cu"):
        packages = [p.replace("onnxruntime==", "onnxruntime-gpu==") for p in packages]
    if wheel_dir is None:
        wheel_dir = os.environ.get(WHEELS_ENV) or None
    download, disk = SIZES[variant_kind(accel.variant)]
    return InstallPlan(
        variant=accel.variant,
        packages=(f"torch=={accel.torch_version}", *packages),
        download_bytes_estimate=download,
        disk_bytes_estimate=disk,
        index_url=torch_index_url(accel.variant),
        wheel_dir=str(wheel_dir) if wheel_dir else None,
        reason=accel.reason,
        label=_label(accel.variant, accel.torch_version),
    )
