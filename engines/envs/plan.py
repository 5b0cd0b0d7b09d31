"""What to install for the image engine on this machine: the packages, the kind of PyTorch build, the sizes.

Pure decisions, no installing and no heavy imports. The exact PyTorch build
is uv's choice, made when it installs (``uv pip install --torch-backend=auto``
picks the CUDA build the NVIDIA driver supports, ROCm for an AMD GPU, plain
PyPI on a Mac, the CPU build otherwise), so Atelier keeps no tables of
driver versions. The plan only guesses the *kind* of build from the
hardware probe, for the sizes shown before installing and the sentence
that says why; the install's first step reports the build uv really chose.

Two settings:

* ``ATELIER_TORCH_BACKEND``: ``auto`` (the default), ``cpu`` (the small CPU
  build on any machine), any backend uv knows (``cu128``, ``rocm6.4``…),
  or ``index`` for no PyTorch index at all (torch comes from the package
  index like everything else, or a find-links folder).
* ``ATELIER_ENGINE_WHEELS``: a folder of wheels for machines without
  internet: uv then installs from it alone (``--offline --no-index
  --find-links``).

The packages are what ``engines/`` imports on the image path (the engine
host, the registry, the diffusion engines and the CPU probe), pinned to the
versions the ``images`` extra of pyproject.toml pins.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engines.byte_sizes import format_bytes

BACKEND_ENV = "ATELIER_TORCH_BACKEND"  # auto | cpu | cu128 | rocm6.4 | … | index
WHEELS_ENV = "ATELIER_ENGINE_WHEELS"  # a folder of wheels: install from it alone
NO_TORCH_INDEX = "index"  # the BACKEND_ENV value for "no PyTorch index"

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
    "peft==0.21.2",  # LoRAs: diffusers loads them through PEFT (engines/diffusion/lora.py)
    "psutil==7.2.2",  # engines/machine/hardware.py (the CPU probe the torch engine asks)
    "msgspec==0.22.0",  # the engine-host protocol (engines/host/protocol.py), pinned as pyproject.toml pins it
)

GiB = 1024**3
MiB = 1024**2
# (download, on disk) per kind of build. CPU was measured on Linux x86-64 (torch 2.13.0+cpu and the
# packages above: 284 MB of wheels, 1.08 GiB installed and checked; the bytecode Python writes on
# first use adds a little); the others are estimates from the published wheel sizes (CUDA pulls the
# nvidia-* libraries, ROCm ships its libraries inside torch). uv unpacks while it downloads and
# links from its cache, so the disk holds the unpacked files only once.
SIZES: dict[str, tuple[int, int]] = {
    "cpu": (300 * MiB, 1200 * MiB),
    "mps": (250 * MiB, 900 * MiB),
    "cuda": (3600 * MiB, 7 * GiB),
    "rocm": (4600 * MiB, 14 * GiB),
}
CPU_CHOSEN = "the CPU build was chosen: PyTorch runs on the CPU (a smaller download, on any computer)."
KIND_NAMES = {"cpu": "CPU", "mps": "Apple GPU", "cuda": "NVIDIA CUDA", "rocm": "AMD ROCm"}


@dataclass(frozen=True)
class InstallPlan:
    """One install: the packages (torch first), the torch backend uv is given, and what it should cost."""

    kind: str  # the build expected: "cpu", "cuda", "rocm", "mps" (uv picks the exact one)
    packages: tuple[str, ...]  # pinned requirements; the first is torch
    download_bytes_estimate: int
    disk_bytes_estimate: int
    torch_backend: str | None = "auto"  # uv's --torch-backend; None: torch from the package index
    wheel_dir: str | None = None  # install from this folder only, without any index
    reason: str = ""  # why this build, in words
    label: str = ""  # "PyTorch 2.13 (CPU)"

    def summary(self) -> str:
        """"PyTorch 2.13 (CPU) + diffusers + ONNX Runtime: about 1.3 GB on disk, 315 MB to download"."""
        download = ("nothing to download (from the folder of wheels)" if self.wheel_dir
                    else f"{format_bytes(self.download_bytes_estimate)} to download")
        return (f"{self.label} + diffusers + ONNX Runtime: about {format_bytes(self.disk_bytes_estimate)} on disk, "
                f"{download}")

    def with_wheel_dir(self, wheel_dir: str | os.PathLike | None) -> "InstallPlan":
        return replace(self, wheel_dir=str(wheel_dir) if wheel_dir else None)

    def cpu_only(self) -> "InstallPlan":
        """The same install with the CPU build of PyTorch, whatever the GPU (smaller, and always works)."""
        if self.kind == "cpu" and self.torch_backend == "cpu":
            return self
        return replace(_plan("cpu", "cpu", CPU_CHOSEN), wheel_dir=self.wheel_dir)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["packages"] = list(self.packages)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "InstallPlan":
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["packages"] = tuple(values.get("packages") or ())
        if "kind" not in values:  # install.json of the pip-based installer: {"variant": "cu128", ...}
            values["kind"] = variant_kind(str(data.get("variant") or "cpu"))
        return cls(**values)


def variant_kind(variant: str) -> str:
    """The kind of a PyTorch build from its local version ("cu128", "rocm6.4", "cpu")."""
    if variant.startswith("cu"):
        return "cuda"
    if variant.startswith("rocm"):
        return "rocm"
    return variant if variant in ("cpu", "mps") else "cpu"


def expected_kind(hardware) -> tuple[str, str]:
    """The kind of build uv's ``auto`` should pick on *hardware*, and why, in words (no version tables)."""
    system = (getattr(hardware, "os", "") or platform.system()).split()[0]
    machine = getattr(getattr(hardware, "cpu", None), "architecture", "") or platform.machine()
    gpus = list(getattr(hardware, "gpus", []) or [])
    if system == "Darwin":
        if machine.lower() in ("arm64", "aarch64"):
            return "mps", "Apple silicon: PyTorch uses the GPU through Metal (MPS)."
        return "cpu", "an Intel Mac: PyTorch runs on the CPU."
    nvidia = [g for g in gpus if (g.vendor or "").upper() == "NVIDIA"]
    if nvidia:
        gpu = nvidia[0]
        driver = f" {gpu.driver}" if gpu.driver else ""
        return "cuda", (f"{gpu.name}: uv picks the CUDA build of PyTorch that its NVIDIA driver{driver} supports "
                        "(the CPU build if the driver is too old for all of them).")
    if system == "Linux" and Path("/dev/kfd").exists():
        return "rocm", "an AMD GPU (ROCm driver): uv picks the ROCm build of PyTorch for it."
    return "cpu", "no supported GPU found: PyTorch runs on the CPU."


def _label(kind: str) -> str:
    return f"PyTorch {'.'.join(TORCH_VERSION.split('.')[:2])} ({KIND_NAMES.get(kind, kind)})"


def _plan(kind: str, backend: str | None, reason: str) -> InstallPlan:
    packages = list(PACKAGES)
    if kind == "cuda":
        packages = [p.replace("onnxruntime==", "onnxruntime-gpu==") for p in packages]
    download, disk = SIZES.get(kind, SIZES["cpu"])
    return InstallPlan(kind=kind, packages=(f"torch=={TORCH_VERSION}", *packages), download_bytes_estimate=download,
                       disk_bytes_estimate=disk, torch_backend=backend, reason=reason, label=_label(kind))


def make_plan(hardware, wheel_dir: str | os.PathLike | None = None, backend: str | None = None) -> InstallPlan:
    """The install plan for *hardware*; *backend* (else ``ATELIER_TORCH_BACKEND``, else ``auto``) is uv's choice.

    ``cpu`` forces the CPU build; another explicit backend (``cu126``) is
    passed to uv as it is; ``index`` passes none (torch from the index).
    """
    backend = (backend or os.environ.get(BACKEND_ENV, "").strip() or "auto").lower()
    if wheel_dir is None:
        wheel_dir = os.environ.get(WHEELS_ENV) or None
    if backend == "cpu":
        plan = _plan("cpu", "cpu", CPU_CHOSEN)
    elif backend == "auto":
        kind, why = expected_kind(hardware)
        plan = _plan(kind, "auto", why)
    else:
        kind = variant_kind(backend) if backend != NO_TORCH_INDEX else expected_kind(hardware)[0]
        why = ("no PyTorch index: torch comes from the package index like every other package."
               if backend == NO_TORCH_INDEX else f"the PyTorch build {backend} was asked for.")
        plan = _plan(kind, None if backend == NO_TORCH_INDEX else backend, why)
    return plan.with_wheel_dir(wheel_dir)
