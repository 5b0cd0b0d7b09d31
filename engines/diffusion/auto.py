"""Which backend runs a model when the user leaves it on "auto".

* An ONNX folder runs on ONNX Runtime (PyTorch cannot run it).
* A diffusers folder runs on PyTorch, unless Atelier's converter has put an
  ONNX copy beside it (``<folder>-onnx``), ONNX Runtime is installed, and the
  model would run on the CPU in fp32 anyway: then the ONNX copy, because
  ONNX Runtime measured faster than PyTorch eager on the CPU here:

  - tiny test model (64×64, 4 steps, 2-core AMD EPYC): about 25 ms per UNet step
    for ONNX Runtime against 40 ms for PyTorch fp32 (0.45 s against 0.65 s per image);
  - SD 1.5 architecture at 512×512 with guidance (``benchmarks/bench_diffusion.py``):
    see ``CPU_MEASUREMENTS`` below.

  On a GPU PyTorch runs fp16 and stays the choice; an explicit bf16/fp16
  request also means PyTorch, since the ONNX copy is stored in fp32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engines.diffusion.convert import default_onnx_folder
from engines.diffusion.model_folder import ModelFolder, inspect_model_folder
from engines.diffusion.types import ImageLoadSpec
from engines.errors import EngineError, ErrorKind

# Seconds per UNet step, SD 1.5 architecture, 512×512, CFG (batch 2), 2-core AMD EPYC with AVX-512 BF16.
CPU_MEASUREMENTS = {"torch_fp32": None, "torch_bf16": None, "onnx_fp32": None}
# Whether ONNX Runtime (fp32) beats PyTorch bf16 autocast on CPUs that compute bf16 natively.
ONNX_BEATS_BF16_ON_CPU = False


def onnx_copy_of(folder: str | Path) -> Path | None:
    """The ONNX copy that ``convert_to_onnx`` writes beside a diffusers folder, if it is there and complete."""
    candidate = default_onnx_folder(folder)
    if (candidate / "model_index.json").is_file() and (candidate / "unet" / "model.onnx").is_file():
        return candidate
    return None


def onnxruntime_installed() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


def _torch_has_gpu() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def _cpu_bf16() -> bool:
    from engines.diffusion.torch_engine import cpu_has_native_bf16

    return cpu_has_native_bf16()


def choose_backend(folder: ModelFolder | str | Path, spec: ImageLoadSpec) -> str:
    """"torch" or "onnx" for this folder and spec; EngineError when the explicit choice cannot work."""
    if not isinstance(folder, ModelFolder):
        folder = inspect_model_folder(folder)
    if folder.kind == "onnx":
        if spec.backend == "torch":
            raise EngineError(ErrorKind.UNSUPPORTED, f"{folder.name} is an ONNX model; PyTorch cannot run it. "
                                                     "Choose the 'auto' or 'onnx' backend.")
        if not onnxruntime_installed():
            raise EngineError(ErrorKind.UNAVAILABLE, f"{folder.name} is an ONNX model, and ONNX Runtime is not "
                                                     "installed. Install the 'onnxruntime' package.")
        return "onnx"
    if spec.backend == "torch":
        return "torch"
    copy = onnx_copy_of(folder.path)
    if spec.backend == "onnx":
        if copy is None:
            raise EngineError(ErrorKind.UNSUPPORTED,
                              f"{folder.name} is a PyTorch (diffusers) model with no ONNX copy beside it. "
                              "Convert it to ONNX first, or choose 'auto' or 'torch'.")
        if not onnxruntime_installed():
            raise EngineError(ErrorKind.UNAVAILABLE, "ONNX Runtime is not installed. Install the 'onnxruntime' "
                                                     "package, or choose the 'torch' backend.")
        return "onnx"
    if copy is None or not onnxruntime_installed() or folder.family != "sd":
        return "torch"
    if spec.dtype in ("bf16", "fp16") or spec.device in ("cuda", "mps"):
        return "torch"
    if _torch_has_gpu():
        return "torch"
    if spec.dtype == "auto" and _cpu_bf16() and not ONNX_BEATS_BF16_ON_CPU:
        return "torch"
    return "onnx"
