"""Recognise an image-model folder before anything heavy is loaded.

Everything a user can get wrong about a model folder is caught here, with
a message that says what is wrong and what to do, before torch or ONNX
Runtime is even imported: a missing or empty folder, a file instead of a
folder, a folder that is not a diffusers pipeline, a pipeline class we do
not run, a truncated weights file (a download that stopped half-way) and
pickled weights, which Atelier refuses outright because unpickling can run
arbitrary code.

Two layouts are recognised:

* **diffusers** (``save_pretrained``): ``model_index.json`` plus one
  folder per component, weights in ``*.safetensors``;
* **onnx**: the layout that ``optimum`` exports and that
  :mod:`engines.diffusion.convert` writes: ``text_encoder/model.onnx``,
  ``unet/model.onnx``, ``vae_decoder/model.onnx`` (``vae_encoder/`` for
  img2img), ``tokenizer/`` and ``scheduler/``; SDXL adds
  ``text_encoder_2/model.onnx`` and ``tokenizer_2/``.

SDXL *refiners* (no first text encoder, an aesthetic score in the UNet's
conditioning) only finish images that a base model started; neither engine
runs them, and they are refused here by name rather than failing halfway
through a first image with a shape error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import EngineError, ErrorKind

# Pipeline class → family, for the folders each backend can run.
TORCH_PIPELINES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    # Dedicated inpainting models (a 9-channel UNet: noise + mask + masked image); engines.diffusion.inpaint
    "StableDiffusionInpaintPipeline": "sd",
    "StableDiffusionXLInpaintPipeline": "sdxl",
}
# ``optimum-cli export onnx`` keeps the source pipeline's class name, optimum's ORT pipelines save their
# own (ORT*) names, diffusers' old exporter wrote the Onnx* names; Atelier's converter writes either of the
# last two.
ONNX_PIPELINES = {
    "OnnxStableDiffusionPipeline": "sd",
    "OnnxStableDiffusionImg2ImgPipeline": "sd",
    "ORTStableDiffusionPipeline": "sd",
    "ORTStableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "ORTStableDiffusionXLPipeline": "sdxl",
    "ORTStableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
}
SUPPORTED_TEXT = (
    "Stable Diffusion 1.x/2.x (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline) and "
    "SDXL base models (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline), as diffusers or ONNX folders"
)
PICKLED_MESSAGE = (
    "Atelier never loads pickled weights (.bin/.ckpt) because they can run code; use a .safetensors version"
)
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
PICKLED_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
ONNX_REQUIRED = ("text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx")
ONNX_SDXL_REQUIRED = ("text_encoder_2/model.onnx",)
_DISTILLED_NAME = re.compile(r"(lcm|turbo)", re.IGNORECASE)


@dataclass(frozen=True)
class ModelFolder:
    """What an image-model folder is, found from its files alone."""

    path: Path
    kind: str  # "diffusers" or "onnx"
    pipeline_class: str
    name: str
    family: str  # "sd" (1.x/2.x) or "sdxl"
    distilled: bool  # an LCM or Turbo model: few steps, the LCM sampler allowed
    vae_scale_factor: int  # image pixels per latent pixel (8 for real models)
    native_size: int  # training resolution in pixels
    size_multiple: int  # width/height must be a multiple of this for the ONNX graph
    variant: str | None = None  # "fp16" when only *.fp16.safetensors files exist
    components: dict = field(default_factory=dict)  # model_index.json
    scheduler_config: dict = field(default_factory=dict)
    has_vae_encoder: bool = True  # ONNX: img2img needs vae_encoder/model.onnx
    has_safety_checker: bool = False


def _bad(message: str, kind: str = ErrorKind.MODEL_FILE) -> EngineError:
    return EngineError(kind, message)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"The {what} {path} could not be read ({exc}). The model folder is damaged; copy it again.")
    if not isinstance(data, dict):
        raise _bad(f"The {what} {path} is not a JSON object. The model folder is damaged; copy it again.")
    return data


def check_safetensors(path: Path) -> None:
    """Check a .safetensors file's header and length without reading the tensors.

    A download that stopped half-way leaves a file whose header promises
    more bytes than the file holds; torch would fail deep inside loading
    with an unhelpful error, so it is caught here in microseconds.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _bad(f"{path} is empty or truncated ({size} bytes). Download the model again.")
            header_len = int.from_bytes(head, "little")
            if header_len <= 0 or 8 + header_len > size:
                raise _bad(f"{path} is truncated or not a safetensors file (its header does not fit in the file). "
                           "Download the model again.")
            header = json.loads(f.read(header_len))
    except OSError as exc:
        raise _bad(f"{path} could not be read ({exc}).")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad(f"{path} is corrupt: its safetensors header is not valid. Download the model again.")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v]
    expected = 8 + header_len + (max(ends) if ends else 0)
    if size < expected:
        raise _bad(f"{path} is truncated: it should be {expected:,} bytes but is {size:,}. "
                   "The download probably stopped early; download the model again.")


def _check_component_weights(folder: Path, component: str) -> str | None:
    """Validate one component's weights; return "fp16" when only that variant exists."""
    sub = folder / component
    if not sub.is_dir():
        if component == "unet":
            raise _bad(f"{folder} has no UNet (the unet/ folder is missing), so it cannot make images. "
                       "Copy the complete model folder.")
        raise _bad(f"{folder} is incomplete: its {component}/ folder is missing. Copy the complete model folder.")
    safetensors = sorted(sub.glob("*.safetensors"))
    if not safetensors:
        pickled = [p.name for p in sub.iterdir() if p.suffix.lower() in PICKLED_SUFFIXES]
        if pickled:
            raise _bad(f"{component}/ holds only pickled weights ({', '.join(pickled)}). {PICKLED_MESSAGE}.",
                       ErrorKind.UNSUPPORTED)
        raise _bad(f"{sub} has no weights file (*.safetensors). Copy the complete model folder.")
    for file in safetensors:
        check_safetensors(file)
    plain = [p for p in safetensors if ".fp16." not in p.name]
    return None if plain else "fp16"


def _unet_up_factor(unet_config: dict) -> int:
    """How much the UNet downsamples: latents must divide by this for a traced (ONNX) graph."""
    blocks = unet_config.get("block_out_channels") or (320, 640, 1280, 1280)
    return 2 ** (len(blocks) - 1)


def _vae_scale(vae_config: dict) -> int:
    blocks = vae_config.get("block_out_channels")
    return 2 ** (len(blocks) - 1) if blocks else 8  # 8: every released SD VAE


def is_distilled(name: str, scheduler_config: dict, unet_config: dict) -> bool:
    """An LCM or Turbo model, by its name, its scheduler or an LCM guidance embedding in the UNet."""
    return bool(
        _DISTILLED_NAME.search(name)
        or scheduler_config.get("_class_name") == "LCMScheduler"
        or unet_config.get("time_cond_proj_dim")
    )


def _optional_json(path: Path, what: str) -> dict:
    return _read_json(path, what) if path.is_file() else {}


def inspect_model_folder(path: str | Path) -> ModelFolder:
    """Identify the image model in ``path`` or raise :class:`EngineError` saying what is wrong."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise _bad(f"The model folder {folder} does not exist.")
    if folder.is_file():
        if folder.suffix.lower() in PICKLED_SUFFIXES:
            raise _bad(f"{folder.name} is a pickled checkpoint. {PICKLED_MESSAGE}.", ErrorKind.UNSUPPORTED)
        raise _bad(f"{folder.name} is a single file. Atelier loads diffusers model folders (a folder with "
                   "model_index.json, unet/, vae/, text_encoder/...); choose the folder instead.",
                   ErrorKind.UNSUPPORTED)
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise _bad(f"The model folder {folder} is empty.")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        singles = [p.name for p in entries if p.suffix.lower() in (".safetensors", ".ckpt")]
        hint = (f" It holds {', '.join(singles)}, which looks like a single-file checkpoint: Atelier needs "
                "the diffusers folder version of the model." if singles else "")
        raise _bad(f"{folder} is not a diffusers model folder: it has no model_index.json.{hint}")
    index = _read_json(index_path, "model index")
    pipeline_class = str(index.get("_class_name", ""))
    onnx = (folder / "unet" / "model.onnx").is_file()
    scheduler_config = _optional_json(folder / "scheduler" / "scheduler_config.json", "scheduler config")
    if onnx:
        return _inspect_onnx(folder, index, pipeline_class, scheduler_config)
    if pipeline_class not in TORCH_PIPELINES:
        if "Onnx" in pipeline_class or "ORT" in pipeline_class:
            raise _bad(f"{folder} says it is an ONNX model ({pipeline_class}) but unet/model.onnx is missing. "
                       "Copy the complete model folder.")
        raise _bad(f"{folder} holds a {pipeline_class or 'unnamed'} pipeline, which Atelier does not run. "
                   f"Supported: {SUPPORTED_TEXT}.", ErrorKind.UNSUPPORTED)
    if not (folder / "unet").is_dir():
        raise _bad(f"{folder} has no UNet (the unet/ folder is missing), so it cannot make images. "
                   "Copy the complete model folder.")
    family = TORCH_PIPELINES[pipeline_class]
    if family == "sdxl":
        _refuse_refiner(folder, index)
    variants = set()
    for component in WEIGHT_COMPONENTS:
        entry = index.get(component)
        if component == "unet" or (isinstance(entry, list) and entry and entry[0] is not None):
            variants.add(_check_component_weights(folder, component))
    safety = index.get("safety_checker")
    return ModelFolder(
        path=folder,
        kind="diffusers",
        pipeline_class=pipeline_class,
        **_from_configs(folder, family, scheduler_config, folder / "vae"),
        variant="fp16" if "fp16" in variants else None,
        components=index,
        has_safety_checker=isinstance(safety, list) and bool(safety) and safety[0] is not None,
    )


def _from_configs(folder: Path, family: str, scheduler_config: dict, vae: Path) -> dict:
    """What both layouts read from the same configs, the same way: the sizes a model makes, and whether it is distilled."""
    unet_config = _optional_json(folder / "unet" / "config.json", "UNet config")
    scale = _vae_scale(_optional_json(vae / "config.json", "VAE config"))
    return dict(
        name=folder.name,
        family=family,
        distilled=is_distilled(folder.name, scheduler_config, unet_config),
        vae_scale_factor=scale,
        native_size=int(unet_config.get("sample_size") or (128 if family == "sdxl" else 64)) * scale,
        size_multiple=scale * _unet_up_factor(unet_config),
        scheduler_config=scheduler_config,
    )


def _refuse_refiner(folder: Path, index: dict) -> None:
    """SDXL refiners condition on an aesthetic score and have no first text encoder; no engine runs them."""
    first_encoder = index.get("text_encoder")
    no_first_encoder = isinstance(first_encoder, list) and (not first_encoder or first_encoder[0] is None)
    if index.get("requires_aesthetics_score") or no_first_encoder:
        raise _bad(f"{folder.name} is an SDXL refiner: it only finishes images that an SDXL base model started, "
                   "and Atelier runs base models only. Choose the base model (for example "
                   "stable-diffusion-xl-base-1.0) instead.", ErrorKind.UNSUPPORTED)


def _inspect_onnx(folder: Path, index: dict, pipeline_class: str, scheduler_config: dict) -> ModelFolder:
    if pipeline_class and pipeline_class not in ONNX_PIPELINES:
        raise _bad(f"{folder} holds a {pipeline_class} pipeline, which Atelier does not run. "
                   f"Supported: {SUPPORTED_TEXT}.", ErrorKind.UNSUPPORTED)
    family = ONNX_PIPELINES.get(pipeline_class) or ("sdxl" if (folder / "text_encoder_2").is_dir() else "sd")
    if family == "sdxl":
        _refuse_refiner(folder, index)
    required = ONNX_REQUIRED + (ONNX_SDXL_REQUIRED if family == "sdxl" else ())
    tokenizers = ("tokenizer", "tokenizer_2") if family == "sdxl" else ("tokenizer",)
    missing = [p for p in required if not (folder / p).is_file()]
    missing += [p + "/" for p in (*tokenizers, "scheduler") if not (folder / p).is_dir()]
    if missing:
        raise _bad(f"The ONNX model in {folder} is incomplete: {', '.join(missing)} missing. "
                   "Convert or copy the model again.")
    return ModelFolder(
        path=folder,
        kind="onnx",
        pipeline_class=pipeline_class or ("ORTStableDiffusionXLPipeline" if family == "sdxl"
                                          else "OnnxStableDiffusionPipeline"),
        **_from_configs(folder, family, scheduler_config, folder / "vae_decoder"),
        components=index,
        has_vae_encoder=(folder / "vae_encoder" / "model.onnx").is_file(),
    )
