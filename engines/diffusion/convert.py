"""Convert a diffusers Stable Diffusion 1.x/2.x or SDXL folder to ONNX, for ONNX Runtime.

Why convert at all: on CPUs ONNX Runtime ran the UNet faster than
PyTorch eager (see :mod:`engines.diffusion.auto` for the figures), and it
opens the door to DirectML and CoreML without PyTorch GPU builds.

The output follows the layout ``optimum`` exports (``text_encoder/model.onnx``,
``unet/model.onnx``, ``vae_encoder/model.onnx``, ``vae_decoder/model.onnx``,
``tokenizer/``, ``scheduler/``, each model folder with its ``config.json``)
plus a ``model_index.json``.

SDXL adds ``text_encoder_2/model.onnx`` and ``tokenizer_2/``, and its
graphs carry optimum's names too: the text encoders also output every
hidden state (``hidden_states.0`` …; SDXL conditions on the penultimate
one), the second one its pooled projection (``text_embeds``), and the UNet
takes ``text_embeds`` and ``time_ids`` besides ``sample``, ``timestep`` and
``encoder_hidden_states``. The index names the pipeline
``ORTStableDiffusionXLPipeline``, as optimum's ORT pipelines do, and keeps
``force_zeros_for_empty_prompt``.

Exports use the TorchScript exporter (``dynamo=False``, opset 17): the
dynamo exporter needs onnxscript, is slower and failed on these models
here. Batch, height, width and sequence axes are dynamic. A UNet over 2 GB (SD 1.5's is 3.4 GB in fp32) cannot live
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
from engines.byte_sizes import format_bytes
from engines.model_folder import inspect_model_folder
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


def _modules(pipe, sdxl: bool):
    """Thin wrappers that give each exported graph plain tensor inputs and outputs."""
    import torch

    class TextEncoder(torch.nn.Module):
        """(last_hidden_state, pooler_output) for SD; SDXL adds every hidden state (optimum's outputs)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            out = self.model(input_ids=input_ids, output_hidden_states=sdxl, return_dict=True)
            if not sdxl:
                return out.last_hidden_state, out.pooler_output
            return (out.last_hidden_state, out.pooler_output, *out.hidden_states)

    class TextEncoderWithProjection(torch.nn.Module):
        """SDXL's second encoder: (text_embeds, last_hidden_state, hidden_states…), as optimum names them."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            out = self.model(input_ids=input_ids, output_hidden_states=True, return_dict=True)
            return (out.text_embeds, out.last_hidden_state, *out.hidden_states)

    class UNet(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.model(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    class UNetXL(torch.nn.Module):
        """SDXL's UNet with its extra conditioning as plain inputs instead of ``added_cond_kwargs``."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
            return self.model(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False,
                              added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids})[0]

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

    modules = {"text_encoder": TextEncoder(pipe.text_encoder), "unet": (UNetXL if sdxl else UNet)(pipe.unet),
               "vae_encoder": VaeEncoder(pipe.vae), "vae_decoder": VaeDecoder(pipe.vae)}
    if sdxl:
        modules["text_encoder_2"] = TextEncoderWithProjection(pipe.text_encoder_2)
    return modules


def _write_index(pipe, tmp: Path, src_name: str, sdxl: bool) -> None:
    import diffusers

    onnx_model = ["diffusers", "OnnxRuntimeModel"]
    index = {
        "_class_name": "ORTStableDiffusionXLPipeline" if sdxl else "OnnxStableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "_atelier": {"converted_from": src_name, "opset": OPSET, "exporter": "torchscript"},
        "feature_extractor": [None, None],
        "scheduler": ["diffusers", type(pipe.scheduler).__name__],
        "text_encoder": onnx_model,
        "tokenizer": ["transformers", type(pipe.tokenizer).__name__],
        "unet": onnx_model,
        "vae_decoder": onnx_model,
        "vae_encoder": onnx_model,
    }
    if sdxl:
        index.update({
            "text_encoder_2": onnx_model,
            "tokenizer_2": ["transformers", type(pipe.tokenizer_2).__name__],
            "force_zeros_for_empty_prompt": bool(pipe.config.get("force_zeros_for_empty_prompt", True)),
            "requires_aesthetics_score": False,
        })
    else:
        index.update({"requires_safety_checker": False, "safety_checker": [None, None]})
    (tmp / "model_index.json").write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n",
                                          encoding="utf-8")


def _text_export(name: str, module, encoder, seq: int, sdxl: bool):
    """The export step of one text encoder: its dummy input, output names and dynamic axes."""
    import torch

    if name == "text_encoder_2":
        first = ["text_embeds", "last_hidden_state"]
    else:
        first = ["last_hidden_state", "pooler_output"]
    hidden = [f"hidden_states.{i}" for i in range(encoder.config.num_hidden_layers + 1)] if sdxl else []
    axes = {"input_ids": {0: "batch", 1: "sequence"}}
    for output in first + hidden:  # the pooled outputs have one vector per prompt, the rest one per token
        axes[output] = {0: "batch"} if output in ("pooler_output", "text_embeds") else {0: "batch", 1: "sequence"}
    label = "second text encoder" if name == "text_encoder_2" else "text encoder"
    return (label, name, module, (torch.zeros(1, seq, dtype=torch.int32),), ["input_ids"], first + hidden, axes)


def _convert_into(src: Path, tmp: Path, folder, emit: Emit) -> None:
    import torch

    from engines.diffusion.torch_engine import load_pipeline

    emit(ProgressEvent("convert", f"Loading {folder.name} with PyTorch…", 0.02))
    pipe = load_pipeline(folder, torch.float32)
    if pipe.unet.config.get("time_cond_proj_dim"):
        raise EngineError(ErrorKind.UNSUPPORTED, f"{folder.name} is an LCM-distilled model whose UNet takes a "
                                                 "guidance embedding; the ONNX engine cannot run it. Use PyTorch.")
    sdxl = folder.family == "sdxl"
    modules = _modules(pipe, sdxl)
    encoders = ("text_encoder", "text_encoder_2") if sdxl else ("text_encoder",)
    seq = pipe.tokenizer.model_max_length if pipe.tokenizer.model_max_length < 10_000 else 77
    latent = int(pipe.unet.config.sample_size)
    channels = int(pipe.unet.config.in_channels)
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    context = int(pipe.unet.config.cross_attention_dim)  # SDXL: both encoders' widths side by side
    image_axes = {0: "batch", 2: "height", 3: "width"}
    unet_args = (torch.randn(2, channels, latent, latent), torch.tensor([999.0, 999.0]), torch.randn(2, seq, context))
    unet_inputs = ["sample", "timestep", "encoder_hidden_states"]
    unet_axes = {"sample": image_axes, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch", 1: "sequence"},
                 "out_sample": image_axes}
    if sdxl:
        pooled = int(pipe.text_encoder_2.config.projection_dim)
        size = float(latent * scale)
        unet_args += (torch.randn(2, pooled), torch.tensor([[size, size, 0.0, 0.0, size, size]] * 2))
        unet_inputs += ["text_embeds", "time_ids"]
        unet_axes.update(text_embeds={0: "batch"}, time_ids={0: "batch"})
    steps = [_text_export(name, modules[name], getattr(pipe, name), seq, sdxl) for name in encoders] + [
        ("UNet (the slow part)", "unet", modules["unet"], unet_args, unet_inputs, ["out_sample"], unet_axes),
        ("VAE encoder", "vae_encoder", modules["vae_encoder"], (torch.randn(1, 3, latent * scale, latent * scale),),
         ["sample"], ["latent_parameters"], {"sample": image_axes, "latent_parameters": image_axes}),
        ("VAE decoder", "vae_decoder", modules["vae_decoder"], (torch.randn(1, channels, latent, latent),),
         ["latent_sample"], ["sample"], {"latent_sample": image_axes, "sample": image_axes}),
    ]
    fractions = (0.1, 0.15, 0.2, 0.75, 0.85) if sdxl else (0.1, 0.2, 0.75, 0.85)
    for fraction, (label, name, module, args, inputs, outputs, axes) in zip(fractions, steps):
        emit(ProgressEvent("convert", f"Exporting the {label}…", fraction))
        _export(module.eval(), args, tmp / name, inputs, outputs, axes)
    emit(ProgressEvent("convert", "Copying the tokenizers, scheduler and configs…", 0.95))
    for name in encoders:
        getattr(pipe, name).config.to_json_file(str(tmp / name / "config.json"))
    pipe.unet.save_config(str(tmp / "unet"))
    pipe.vae.save_config(str(tmp / "vae_encoder"))
    pipe.vae.save_config(str(tmp / "vae_decoder"))
    for sub in ("tokenizer", "tokenizer_2", "scheduler") if sdxl else ("tokenizer", "scheduler"):
        shutil.copytree(src / sub, tmp / sub)
    _write_index(pipe, tmp, folder.name, sdxl)


def convert_to_onnx(src_folder: str | Path, dst_folder: str | Path | None = None, emit: Emit | None = None) -> Path:
    """Convert the diffusers folder ``src_folder`` into an ONNX folder at ``dst_folder`` and return it.

    ``dst_folder`` defaults to ``<src_folder>-onnx``, where the "auto" backend
    finds it. Raises :class:`EngineError` for anything that goes wrong.
    """
    emit = emit or (lambda event: None)
    folder = inspect_model_folder(src_folder)
    if folder.kind != "diffusers":
        raise EngineError(ErrorKind.BAD_INPUT, f"{folder.path} is already an ONNX model.")
    src = folder.path
    dst = Path(dst_folder).expanduser() if dst_folder is not None else default_onnx_folder(src)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise EngineError(ErrorKind.BAD_INPUT, f"{dst} already exists. Delete it or choose another folder.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    needed = _weights_bytes(src) * (2 if folder.variant == "fp16" else 1) * 1.1
    free = shutil.disk_usage(dst.parent).free
    if free < needed:
        raise EngineError(ErrorKind.BAD_INPUT, f"Converting needs about {format_bytes(needed)} free in {dst.parent}, "
                                               f"but only {format_bytes(free)} are free.")
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
