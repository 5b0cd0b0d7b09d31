"""LoRAs on the PyTorch image engine: checked against the model, fused into its weights, then packed.

diffusers' ``load_lora_weights`` reads every common layout (kohya/A1111,
diffusers, PEFT) and converts it to PEFT layers. Atelier then fuses them
(``set_adapters`` with each LoRA's weight, ``fuse_lora``) and unloads the
PEFT layers, so the UNet and text encoder are plain ``nn.Linear``/``nn.Conv2d``
modules again, holding base + weight × LoRA. Only then do the CPU speed-ups
pack the weights (:mod:`engines.diffusion.cpu_speedups`), so every layer, the
LoRA-touched ones included, runs at the packed speed and a step costs what it
costs without a LoRA. The other way, leaving PEFT's layers in place and
packing around them, would run every LoRA-touched layer unpacked (their
subclassed modules are left alone) plus two extra matrix products per layer
and step. The price of fusing: packing keeps no unpacked copy of the weights,
so another set of LoRAs means loading the pipeline again (a few seconds,
from the page cache), which the engine does only when the set changes.

Before anything is loaded each file is checked here, in words: a pickle
(``.pt``/``.ckpt``) is never opened, a damaged file or one that is not a
LoRA is refused, and so is a LoRA trained for another family than the
model (its cross-attention width is the model's text-embedding width, which
tells SD 1.x, SD 2.x and SDXL apart, see :mod:`engines.diffusion.lora_files`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from engines.api import Emit, ProgressEvent
from engines.diffusion.lora_files import BASE_LABELS, CONTEXT_WIDTH, base_of, cross_attention_width, layout_of
from engines.diffusion.types import LoraSpec
from engines.errors import EngineError, ErrorKind
from engines.model_folder import PICKLED_MESSAGE

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
ONNX_REFUSED = ("LoRAs run on the PyTorch backend only; choose the 'torch' (or 'auto') backend for this model, "
                "or leave the LoRAs out.")


def active(loras) -> tuple[LoraSpec, ...]:
    """The LoRAs that change anything: a weight of 0 is the base model, so it is not even loaded."""
    return tuple(lora for lora in loras if lora.weight != 0)


def model_words(family: str, width: int | None) -> str:
    """"SDXL", "SD 1.x", "SD 2.x", or "an SD model with 32-wide text embeddings"."""
    if family == "sdxl":
        return "SDXL"
    base = CONTEXT_WIDTH.get(width)
    if base in BASE_LABELS:
        return BASE_LABELS[base]
    return f"an SD model with {width}-wide text embeddings" if width else "an SD 1.x/2.x model"


def read_header(path: Path) -> tuple[dict, dict]:
    """The tensor shapes and metadata of a LoRA file, without loading a tensor; refusals in words."""
    name = path.name
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise EngineError(ErrorKind.UNSUPPORTED, f"{name} is a pickled checkpoint. {PICKLED_MESSAGE}.")
    if not path.is_file():
        raise EngineError(ErrorKind.BAD_INPUT, f"The LoRA {path} does not exist." if not path.exists()
                          else f"The LoRA {path} is not a file; it must be a .safetensors file.")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise EngineError(ErrorKind.MODEL_FILE, f"The LoRA {name} could not be read as a .safetensors file "
                                                f"({exc}). The file may be damaged or incomplete.") from None
    return shapes, metadata


def check_lora(lora: LoraSpec, family: str, width: int | None, model_name: str) -> None:
    """Refuse (in words) a LoRA file that is not one, or that was trained for another family than the model's."""
    path = Path(lora.path)
    shapes, metadata = read_header(path)
    if layout_of(shapes) is None:
        raise EngineError(ErrorKind.UNSUPPORTED, f"{path.name} is not a LoRA: it holds no LoRA tensors "
                                                 "(kohya, diffusers or PEFT layout).")
    problem = family_problem(path.name, shapes, metadata, family, width, model_name)
    if problem:
        raise EngineError(ErrorKind.BAD_INPUT, problem)


def family_problem(file_name: str, shapes: dict, metadata: dict, family: str, width: int | None,
                   model_name: str) -> str | None:
    """The sentence refusing a LoRA trained for another family than the model's, or None when it fits.

    Pure (shapes from any header reader), so the Images page's LoRA picker
    (engines.library.lora_choice) disables a LoRA with the engine's own words.
    """
    lora_width = cross_attention_width(shapes)
    base = base_of(shapes, metadata)
    if lora_width is not None:
        wrong = width is not None and lora_width != width
        trained = BASE_LABELS.get(CONTEXT_WIDTH.get(lora_width), f"a model with {lora_width}-wide text embeddings")
    else:
        wrong = base is not None and (base == "sdxl") != (family == "sdxl") or base == "flux"
        trained = BASE_LABELS.get(base, "another model")
    if wrong:
        return (f"{file_name} is a LoRA for {trained}, but {model_name} is {model_words(family, width)}: "
                "a LoRA works only with the model family it was trained for.")
    return None


def apply_loras(pipe, loras: tuple[LoraSpec, ...], family: str, model_name: str, emit: Emit) -> None:
    """Check every LoRA, then load, weigh and fuse them into ``pipe``'s weights (see the module docstring)."""
    width = getattr(pipe.unet.config, "cross_attention_dim", None)
    width = width if isinstance(width, int) else None
    for lora in loras:
        check_lora(lora, family, width, model_name)
    names = []
    for index, lora in enumerate(loras):
        emit(ProgressEvent("load", f"Applying the LoRA {lora.label} (weight {lora.weight:g})…"))
        adapter = f"lora{index}"
        try:
            pipe.load_lora_weights(lora.path, adapter_name=adapter)
        except Exception as exc:  # diffusers/PEFT say what did not match; a user needs the file named
            log.warning("LoRA %s failed to load", lora.path, exc_info=True)
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise EngineError(ErrorKind.MODEL_FILE, f"The LoRA {Path(lora.path).name} could not be applied to "
                                                    f"{model_name}: {detail}") from None
        names.append(adapter)
    pipe.set_adapters(names, adapter_weights=[float(lora.weight) for lora in loras])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()  # the PEFT layers go; the fused weights stay
