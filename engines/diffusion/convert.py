"""Convert a diffusers Stable Diffusion 1.x/2.x folder to ONNX, for ONNX Runtime.

Why convert at all: on CPUs ONNX Runtime ran the UNet faster than
PyTorch eager (see :mod:`engines.diffusion.auto` for the figures), and it
opens the door to DirectML and CoreML without PyTorch GPU builds.

The output follows the layout ``optimum`` exports (``text_encoder/model.onnx``,
``unet/model.onnx``, ``vae_encoder/model.onnx``, ``vae_decoder/model.onnx``,
``tokenizer/``, ``scheduler/``, each model folder with its ``config.json``)
plus a ``model_index.json``. Exports use the TorchScript exporter
(``dynamo=False``, opset 17): the dynamo exporter needs onnxscript, is
slower and failed on these models here. Batch, height, width and sequence
axes are dynamic. A UNet over 2 GB (SD 1.5's is 3.4 GB in fp32) cannot live
inside one protobuf; its weights go to ``model.onnx_data`` beside it.

The conversion is atomic: everything is written to ``<dst>.tmp-xxxx`` and
renamed into place at the end, so a crash or a full disk never leaves a
half-converted folder that looks complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import warnings
from pathlib import Path

from engines.api import Emit, ProgressEvent
from engines.diffusion.model_folder import inspect_model_folder
from engines.errors import EngineError, ErrorKind

OPSET = 17
EXTERNAL_DATA_NAME = "model.onnx_data"
ONNX_SUFFIX = "-onnx"


def default_onnx_folder(src_folder: str | Path) -> Path:
    """Where :mod:`engines.diffusion.auto` looks for the ONNX copy of a model: ``<folder>-onnx`` beside it."""
    src = Path(src_folder)
    return src.with_name(src.name + ONNX_SUFFIX)


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def _export(module, args: tuple, out_dir: Path, input_names, output_names, dynamic_axes) -> None:
    """Export one module to ``out_dir/model.onnx``, gathering >2 GB weights into one data file."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".export"
    scratch.mkdir()
    target = scratch / "model.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about every Python branch on a shape; they are expected (see size_multiple).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(target), dynamo=False, opset_version=OPSET, input_names=list(input_names),
            output_names=list(output_names), dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
    extra = [p for p in scratch.iterdir() if p.name != "model.onnx"]
    if not extra:
        os.replace(target, out_dir / "model.onnx")
    else:  # the exporter wrote one file per tensor: gather them into a single data file
        import onnx

        model = onnx.load(str(target), load_external_data=True)
        onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=EXTERNAL_DATA_NAME, size_threshold=1024)
        del model
    shutil.rmtree(scratch)


def _modules(pipe):
    """Thin wrappers that give each exported graph plain tensor inputs and outputs."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            out = self.model(input_ids=input_ids, return_dict=False)
            return out[0], out[1]

    class UNet(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.model(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    class VaeEncoder(torch.nn.Module):
        """Outputs the latent distribution's parameters (mean and log-variance), not a sample:
        the engine samples it with its own seeded generator, exactly as the torch pipeline does."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, sample):
            return self.model.encode(sample, return_dict=False)[0].parameters

    class VaeDecoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, latent_sample):
            return self.model.decode(latent_sample, return_dict=False)[0]

    return TextEncoder(pipe.text_encoder), UNet(pipe.unet), VaeEncoder(pipe.vae), VaeDecoder(pipe.vae)


def _write_index(pipe, tmp: Path, src_name: str) -> None:
    import diffusers

    onnx_model = ["diffusers", "OnnxRuntimeModel"]
    index = {
        "_class_name": "OnnxStableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "_atelier": {"converted_from": src_name, "opset": OPSET, "exporter": "torchscript"},
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(pipe.scheduler).__name__],
        "text_encoder": onnx_model,
        "tokenizer": ["transformers", type(pipe.tokenizer).__name__],
        "unet": onnx_model,
        "vae_decoder": onnx_model,
        "vae_encoder": onnx_model,
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _convert_into(src: Path, tmp: Path, folder, emit: Emit) -> None:
    import torch

    from engines.diffusion.torch_engine import load_pipeline

    emit(ProgressEvent("convert", f"Loading {folder.name} with PyTorch…", 0.02))
    pipe = load_pipeline(folder, torch.float32)
    if pipe.unet.config.get("time_cond_proj_dim"):
        raise EngineError(ErrorKind.UNSUPPORTED, f"{folder.name} is an LCM-distilled model whose UNet takes a "
                                                 "guidance embedding; the ONNX engine cannot run it. Use PyTorch.")
    text_encoder, unet, vae_encoder, vae_decoder = _modules(pipe)
    seq = pipe.tokenizer.model_max_length if pipe.tokenizer.model_max_length < 10_000 else 77
    latent = int(pipe.unet.config.sample_size)
    channels = int(pipe.unet.config.in_channels)
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    hidden = int(pipe.text_encoder.config.hidden_size)
    image_axes = {0: "batch", 2: "height", 3: "width"}
    steps = [
        ("text encoder", "text_encoder", text_encoder, (torch.zeros(1, seq, dtype=torch.int32),),
         ["input_ids"], ["last_hidden_state", "pooler_output"],
         {"input_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"}}),
        ("UNet (the slow part)", "unet", unet,
         (torch.randn(2, channels, latent, latent), torch.tensor([999.0, 999.0]), torch.randn(2, seq, hidden)),
         ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
         {"sample": image_axes, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch", 1: "sequence"},
          "out_sample": image_axes}),
        ("VAE encoder", "vae_encoder", vae_encoder, (torch.randn(1, 3, latent * scale, latent * scale),),
         ["sample"], ["latent_parameters"], {"sample": image_axes, "latent_parameters": image_axes}),
        ("VAE decoder", "vae_decoder", vae_decoder, (torch.randn(1, channels, latent, latent),),
         ["latent_sample"], ["sample"], {"latent_sample": image_axes, "sample": image_axes}),
    ]
    fractions = (0.1, 0.2, 0.75, 0.85)
    for fraction, (label, name, module, args, inputs, outputs, axes) in zip(fractions, steps):
        emit(ProgressEvent("convert", f"Exporting the {label}…", fraction))
        _export(module.eval(), args, tmp / name, inputs, outputs, axes)
    emit(ProgressEvent("convert", "Copying the tokenizer, scheduler and configs…", 0.95))
    pipe.text_encoder.config.to_json_file(str(tmp / "text_encoder" / "config.json"))
    pipe.unet.save_config(str(tmp / "unet"))
    pipe.vae.save_config(str(tmp / "vae_encoder"))
    pipe.vae.save_config(str(tmp / "vae_decoder"))
    for sub in ("tokenizer", "scheduler"):
        shutil.copytree(src / sub, tmp / sub)
    _write_index(pipe, tmp, folder.name)


def convert_to_onnx(src_folder: str | Path, dst_folder: str | Path | None = None, emit: Emit | None = None) -> Path:
    """Convert the diffusers folder ``src_folder`` into an ONNX folder at ``dst_folder`` and return it.

    ``dst_folder`` defaults to ``<src_folder>-onnx``, where the "auto" backend
    finds it. Raises :class:`EngineError` for anything that goes wrong.
    """
    emit = emit or (lambda event: None)
    folder = inspect_model_folder(src_folder)
    if folder.kind != "diffusers":
        raise EngineError(ErrorKind.BAD_INPUT, f"{folder.path} is already an ONNX model.")
    if folder.family != "sd":
        raise EngineError(ErrorKind.UNSUPPORTED, f"{folder.name} is an SDXL model; Atelier converts only Stable "
                                                 "Diffusion 1.x/2.x to ONNX. Run SDXL with PyTorch.")
    src = folder.path
    dst = Path(dst_folder).expanduser() if dst_folder is not None else default_onnx_folder(src)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise EngineError(ErrorKind.BAD_INPUT, f"{dst} already exists. Delete it or choose another folder.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    needed = _weights_bytes(src) * (2 if folder.variant == "fp16" else 1) * 1.1
    free = shutil.disk_usage(dst.parent).free
    if free < needed:
        raise EngineError(ErrorKind.BAD_INPUT, f"Converting needs about {needed / 1e9:.1f} GB free in {dst.parent}, "
                                               f"but only {free / 1e9:.1f} GB are free.")
    tmp = dst.with_name(f"{dst.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        _convert_into(src, tmp, folder, emit)
        if dst.exists():
            dst.rmdir()  # an empty folder the user made: replace it
        os.replace(tmp, dst)
    except EngineError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EngineError(ErrorKind.BAD_INPUT, f"Writing the ONNX model to {dst.parent} failed: {exc}.") from None
    except MemoryError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EngineError(ErrorKind.MEMORY, "Converting ran out of memory; close other programs and try again.")
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EngineError(ErrorKind.INTERNAL, f"Converting {folder.name} to ONNX failed "
                                              f"({type(exc).__name__}: {exc}).") from exc
    emit(ProgressEvent("convert", f"Converted {folder.name} to ONNX in {dst}.", 1.0))
    return dst
