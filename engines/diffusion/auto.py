"""Which backend runs a model when the user leaves it on "auto".

* An ONNX folder runs on ONNX Runtime (PyTorch cannot run it).
* A diffusers folder runs on PyTorch, unless all of these hold, in which
  case its ONNX copy runs:

  - Atelier's converter has put an ONNX copy beside it (``<folder>-onnx``)
    and ONNX Runtime is installed;
  - the model would run on the CPU in fp32 anyway: no GPU for PyTorch, no
    explicit bf16/fp16 (the ONNX copy is fp32), and a CPU without native bf16;
  - there is memory for it, by the model library's ONNX Runtime estimate
    (about 2.9× the ONNX folder's size for SD 1.5 at 512×512).

  The same rules apply to SDXL (its ONNX copy runs since the converter
  learned SDXL). They were measured on SD 1.5 only; the memory rule is
  what keeps a 10 GB fp32 SDXL copy off machines that cannot hold it.

Measured with ``benchmarks/bench_diffusion.py`` (SD 1.5 architecture,
512×512, guidance 7, 3 steps, 2-core AMD EPYC with AVX-512 BF16), seconds
per UNet step / whole image / peak anonymous memory, PyTorch with Atelier's
CPU speed-ups (engines/diffusion/cpu_speedups.py):

  ============================  ========  =======  ========
  PyTorch fp32                    6.8 s    31.4 s   5.4 GB
  PyTorch bf16                    2.9 s    14.7 s   3.8 GB
  ONNX Runtime fp32 (CPU EP)      5.4 s    30.4 s  11.3 GB
  ============================  ========  =======  ========

So ONNX Runtime is 1.26× faster than PyTorch fp32 per step (at twice the
memory) and is the choice on CPUs without native bf16 when RAM allows, but
where the CPU has bf16 PyTorch is far faster (1.9× per step, 2.1× per image)
at a third of the memory.
On the tiny test model (64×64, 4 steps) ONNX Runtime was also faster: 23 ms
per step against 36 ms for PyTorch fp32 and 34 ms for bf16 (118 against 229 ms
per image).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engines.diffusion.convert import default_onnx_folder
from engines.model_folder import ModelFolder, inspect_model_folder
from engines.diffusion.types import ImageLoadSpec
from engines.errors import EngineError, ErrorKind


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


def _onnx_fits(copy: Path) -> bool:
    """Whether ONNX Runtime's peak for this model, at its trained size, fits in the memory available now.

    The estimate is the model library's (engines.machine.image_fit): the
    weights twice (ONNX Runtime pre-packs a copy) plus the full attention
    matrices its exported graph keeps; 12.3 GB estimated against 11.3 GB
    measured for SD 1.5 at 512×512.
    """
    import psutil

    from engines.machine.hardware import probe
    from engines.machine.image_fit import PipelineShape, estimate_image, folder_weights

    weights, dtype = folder_weights(copy)
    shape = PipelineShape.from_folder(copy)
    need = estimate_image(weights, shape.native_size, probe(), file_dtype=dtype, shape=shape, runtime="onnx")
    return psutil.virtual_memory().available > need.total_bytes


def _cpu_bf16() -> bool:
    from engines.machine.hardware import probe_cpu

    return probe_cpu().native_bf16


def choose_backend(folder: ModelFolder | str | Path, spec: ImageLoadSpec) -> str:
    """Pick "torch" or "onnx" for this folder and spec; EngineError when an explicit choice cannot work."""
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
    if copy is None or not onnxruntime_installed():
        return "torch"
    if spec.dtype in ("bf16", "fp16") or spec.device in ("cuda", "mps"):
        return "torch"
    if _torch_has_gpu():
        return "torch"
    if spec.dtype == "auto" and _cpu_bf16():  # PyTorch bf16 beats ONNX Runtime fp32 (the table above)
        return "torch"
    return "onnx" if _onnx_fits(copy) else "torch"
