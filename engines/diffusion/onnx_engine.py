"""The ONNX Runtime image engine: Stable Diffusion 1.x/2.x and SDXL from an ONNX folder.

diffusers' ``OnnxStableDiffusionPipeline`` is deprecated (removed in
0.43), breaks with the Euler scheduler on numpy inputs and assumes a VAE
that scales by 8, so the denoising loop is written here. It mirrors the
diffusers PyTorch pipelines step for step: the same diffusers scheduler
(on torch tensors), the same seeded CPU ``torch.Generator`` consumed in the
same order (initial noise; for img2img the VAE sample, then the noise), the
same classifier-free guidance and the same image pre- and post-processing.
That is why one seed gives the same image on both backends. What differs
between SD 1.x/2.x and SDXL is only what the UNet is conditioned on, which
:mod:`engines.diffusion.onnx_text` builds from the prompt.

ONNX Runtime picks the best execution provider it has: CUDA, DirectML
(Windows GPUs), CoreML (Apple), else the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.api import CancelFlag, Emit, NoticeEvent, ProgressEvent
from engines.diffusion.common import (
    RunInfo,
    StepReporter,
    cpu_generator,
    denoised_of,
    initial_latents,
    is_out_of_memory,
    make_info,
    memory_error,
    request_init_image,
    run_batch,
    validate_request,
)
from engines.model_folder import ModelFolder, inspect_model_folder
from engines.diffusion.onnx_text import ORT_TYPES, text_conditioning
from engines.diffusion.schedulers import extra_step_kwargs, make_scheduler
from engines.diffusion.types import ImageLoadSpec, ImageModelInfo, ImageRequest, ImageResult
from engines.errors import EngineError, ErrorKind, problems_sentence

log = logging.getLogger(__name__)

# (ONNX Runtime provider, the device name Atelier reports), best first.
PROVIDERS = (
    ("CUDAExecutionProvider", "cuda"),
    ("DmlExecutionProvider", "dml"),
    ("CoreMLExecutionProvider", "coreml"),
    ("CPUExecutionProvider", "cpu"),
)
_REQUESTED = {"cuda": ("CUDAExecutionProvider",), "mps": ("CoreMLExecutionProvider",), "cpu": ("CPUExecutionProvider",)}
# The graphs each family opens at load, with the progress fraction shown while each opens.
_SESSIONS = {
    "sd": ((0.1, "text_encoder"), (0.3, "unet"), (0.85, "vae_decoder")),
    "sdxl": ((0.1, "text_encoder"), (0.2, "text_encoder_2"), (0.35, "unet"), (0.85, "vae_decoder")),
}


def choose_provider(requested: str = "auto", available: list[str] | None = None) -> tuple[str, str]:
    """The ONNX Runtime provider for ``requested`` ("auto", "cpu", "cuda", "mps") and its device name."""
    import onnxruntime

    available = list(available if available is not None else onnxruntime.get_available_providers())
    wanted = _REQUESTED.get(requested, tuple(p for p, _ in PROVIDERS))
    for provider, device in PROVIDERS:
        if provider in wanted and provider in available:
            return provider, device
    if requested in ("auto", None):
        return "CPUExecutionProvider", "cpu"
    raise EngineError(ErrorKind.UNSUPPORTED, f"The {requested} device was requested, but this ONNX Runtime offers "
                                             f"only {', '.join(available)}. Choose 'auto' or 'cpu'.")


class OnnxDiffusionEngine:
    """Stable Diffusion 1.x/2.x and SDXL through ONNX Runtime, one model at a time."""

    backend = "onnx"

    def __init__(self) -> None:
        self._spec: ImageLoadSpec | None = None
        self._folder: ModelFolder | None = None
        self._info: ImageModelInfo | None = None
        self._run: RunInfo | None = None
        self._sessions: dict = {}
        self._provider = "CPUExecutionProvider"
        self._tiny = None  # the tiny VAEs asked for so far (engines.diffusion.taesd)

    # ---- loading ---------------------------------------------------------

    def load(self, spec: ImageLoadSpec, emit: Emit, folder: ModelFolder | None = None) -> ImageModelInfo:
        """Open the ONNX sessions. ``folder`` lets the dispatcher pass an already-inspected ONNX copy."""
        problems = spec.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems, "Cannot load the model"))
        if self._info is not None and spec == self._spec and (folder is None or folder.path == self._folder.path):
            return self._info
        if spec.backend == "torch":
            raise EngineError(ErrorKind.BAD_INPUT, "The ONNX Runtime engine cannot run the PyTorch backend.")
        emit(ProgressEvent("load", "Checking the model folder…", 0.0))
        folder = folder or inspect_model_folder(spec.model_path)
        if folder.kind != "onnx":
            from engines.diffusion.auto import onnx_copy_of

            copy = onnx_copy_of(folder.path)
            if copy is None:
                raise EngineError(ErrorKind.UNSUPPORTED, f"{folder.name} is a PyTorch (diffusers) model. Convert it "
                                                         "to ONNX first, or choose the 'auto' or 'torch' backend.")
            folder = inspect_model_folder(copy)
        provider, device = choose_provider(spec.device)
        self.unload()
        import onnxruntime

        from engines.diffusion.torch_engine import quiet_progress_bars

        quiet_progress_bars()
        self._provider = provider
        sessions = {}
        for fraction, name in _SESSIONS[folder.family]:
            emit(ProgressEvent("load", f"Opening {name} with ONNX Runtime ({provider})…", fraction))
            sessions[name] = self._session(onnxruntime, folder.path / name / "model.onnx", provider)
        dtype = "fp16" if sessions["unet"].get_inputs()[0].type == "tensor(float16)" else "fp32"
        if spec.dtype not in ("auto", dtype):
            raise EngineError(ErrorKind.BAD_INPUT,
                              f"This ONNX model is stored in {dtype}, and ONNX Runtime runs it as stored; choose "
                              f"'auto' or '{dtype}', or use the PyTorch backend for {spec.dtype}.")
        self._prepare(folder, sessions)
        self._spec, self._folder = spec, folder
        self._run = RunInfo("onnx", device, dtype, folder.name, folder.family)
        self._info = make_info(folder, "onnx", device, dtype)
        emit(ProgressEvent("load", f"{folder.name} is ready (ONNX Runtime, {device}, {dtype}).", 1.0))
        return self._info

    @staticmethod
    def _session(onnxruntime, path: Path, provider: str):
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        try:
            return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise memory_error("cpu") from None
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise EngineError(ErrorKind.MODEL_FILE, f"{path} could not be opened by ONNX Runtime ({detail}). The file "
                                                    "may be damaged or incomplete; convert or copy the model again.")

    def _prepare(self, folder: ModelFolder, sessions: dict) -> None:
        """Text conditioning, scheduler config, VAE settings and the inputs the UNet graph declares."""
        from diffusers import EulerDiscreteScheduler
        from diffusers.image_processor import VaeImageProcessor

        self._text = text_conditioning(folder, sessions)
        self._scheduler_config = dict(folder.scheduler_config) or dict(EulerDiscreteScheduler().config)
        vae = {}
        config_path = folder.path / "vae_decoder" / "config.json"
        if config_path.is_file():
            import json

            vae = json.loads(config_path.read_text(encoding="utf-8"))
        self._scaling = float(vae.get("scaling_factor", 0.18215))
        self._latent_channels = int(vae.get("latent_channels", 4))
        # Some SDXL-architecture VAEs (Playground v2.5) normalise latents per channel; the SDXL pipelines
        # honour that, the SD 1.x/2.x ones do not.
        mean, std = vae.get("latents_mean"), vae.get("latents_std")
        self._latents_stats = None
        if folder.family == "sdxl" and mean is not None and std is not None:
            import torch

            self._latents_stats = (torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))
        self._image_processor = VaeImageProcessor(vae_scale_factor=folder.vae_scale_factor)
        from engines.diffusion.taesd import TinyVaes

        self._tiny = TinyVaes(self._latent_channels, folder.vae_scale_factor)
        unet_inputs = {i.name: i for i in sessions["unet"].get_inputs()}
        expected = {"sample", "timestep", *self._text.input_names}
        if set(unet_inputs) != expected:
            unknown, absent = sorted(set(unet_inputs) - expected), sorted(expected - set(unet_inputs))
            detail = "; ".join(filter(None, (f"it also takes {', '.join(unknown)}" if unknown else "",
                                             f"it lacks {', '.join(absent)}" if absent else "")))
            raise EngineError(ErrorKind.UNSUPPORTED,
                              f"The UNet in {folder.path} is not one the ONNX engine can drive as "
                              f"{'an SDXL' if folder.family == 'sdxl' else 'a Stable Diffusion'} model ({detail}). "
                              "Use the PyTorch version of the model.")
        self._unet_types = {name: ORT_TYPES.get(i.type, np.float32) for name, i in unet_inputs.items()}
        self._float = self._unet_types["sample"]
        # optimum's newer exports take one scalar timestep for the whole batch; older ones one per sample.
        self._scalar_timestep = len(unet_inputs["timestep"].shape or ()) == 0
        self._sessions = sessions

    def _vae_encoder(self):
        if "vae_encoder" not in self._sessions:
            if not self._folder.has_vae_encoder:
                raise EngineError(ErrorKind.UNSUPPORTED, f"The ONNX model {self._folder.name} has no VAE encoder "
                                                         "(vae_encoder/model.onnx), so it cannot start from an image. "
                                                         "Convert the model again with Atelier.")
            import onnxruntime

            path = self._folder.path / "vae_encoder" / "model.onnx"
            self._sessions["vae_encoder"] = self._session(onnxruntime, path, self._provider)
        return self._sessions["vae_encoder"]

    # ---- generation ------------------------------------------------------

    def generate(self, request: ImageRequest, emit: Emit, cancel: CancelFlag | None = None) -> ImageResult:
        if not self._sessions:
            raise EngineError(ErrorKind.BAD_INPUT, "No image model is loaded.")
        validate_request(request, self._folder, size_multiple=self._folder.size_multiple)
        if any(lora.weight != 0 for lora in request.loras):
            from engines.diffusion.lora import ONNX_REFUSED

            raise EngineError(ErrorKind.UNSUPPORTED, ONNX_REFUSED)
        if request.inpainting:  # a refusal that names the PyTorch backend, never a silent img2img
            from engines.diffusion.inpaint import ONNX_REFUSAL

            raise EngineError(ErrorKind.UNSUPPORTED, ONNX_REFUSAL)
        init = request_init_image(request)
        if init is not None:
            self._vae_encoder()
        guided = request.guidance > 1.0  # the diffusers pipelines skip the unconditional pass at ≤ 1
        inputs, notices = self._text(request, guided)  # once for the whole batch: every image has the same prompt
        for notice in notices:
            emit(NoticeEvent(notice))
        if request.deep_cache > 1:
            emit(NoticeEvent("Step caching needs the PyTorch backend (an ONNX UNet is one graph, with no deep "
                             "features to reuse), so every step ran in full."))
        conditioning = {name: value.astype(self._unet_types[name]) for name, value in inputs.items()}
        decoder = self._tiny.get(request.vae)  # None: the model's own VAE decoder session
        previewer = self._tiny.get(request.preview_vae) or decoder
        return run_batch(request, emit, cancel, self._run,
                         lambda seed, reporter: self._one(request, seed, init, conditioning, guided, reporter,
                                                          decoder, previewer))

    def _timestep(self, t, batch: int) -> np.ndarray:
        dtype = self._unet_types["timestep"]
        return np.array(t.item(), dtype=dtype) if self._scalar_timestep else np.full((batch,), t.item(), dtype=dtype)

    def _initial(self, request: ImageRequest, scheduler, generator, init):
        """Starting latents and the timesteps to run, exactly as the diffusers pipelines make them."""
        import torch

        scheduler.set_timesteps(request.steps)
        scale = self._folder.vae_scale_factor
        if init is None:
            if self._folder.family == "sdxl" and hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(0)  # as StableDiffusionXLPipeline does (the SD one does not)
            shape = (1, self._latent_channels, request.height // scale, request.width // scale)
            return initial_latents(generator, shape) * scheduler.init_noise_sigma, scheduler.timesteps
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        # StableDiffusionImg2ImgPipeline.get_timesteps: skip the first (1 - strength) of the schedule.
        t_start = max(request.steps - min(int(request.steps * request.strength), request.steps), 0)
        timesteps = scheduler.timesteps[t_start * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        pixels = self._image_processor.preprocess(init).numpy().astype(self._float)
        encoded = torch.from_numpy(self._vae_encoder().run(None, {"sample": pixels})[0]).float()
        if encoded.shape[1] == 2 * self._latent_channels:  # mean and log-variance: sample like the pipeline
            encoded = DiagonalGaussianDistribution(encoded).sample(generator)
        if self._latents_stats is not None:
            mean, std = self._latents_stats
            init_latents = (encoded - mean) * self._scaling / std
        else:
            init_latents = encoded * self._scaling
        noise = torch.randn(init_latents.shape, generator=generator, dtype=torch.float32)
        return scheduler.add_noise(init_latents, noise, timesteps[:1]), timesteps

    def _one(self, request: ImageRequest, seed: int, init, conditioning: dict, guided: bool,
             reporter: StepReporter, decoder=None, previewer=None):
        import torch

        if previewer is not None:
            reporter.render_preview = previewer.preview_png
        scheduler = make_scheduler(request.scheduler, self._scheduler_config)
        generator = cpu_generator(seed)
        latents, timesteps = self._initial(request, scheduler, generator, init)
        step_kwargs = extra_step_kwargs(scheduler, generator)
        unet = self._sessions["unet"]
        try:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = scheduler.scale_model_input(model_input, t)
                noise = unet.run(None, {
                    "sample": model_input.numpy().astype(self._float),
                    "timestep": self._timestep(t, model_input.shape[0]),
                    **conditioning,
                })[0]
                noise = torch.from_numpy(noise).float()
                if guided:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + request.guidance * (cond - uncond)
                output = scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)
                latents = output[0]
                reporter.step(i + 1, latents, denoised_of(output), total=len(timesteps))
            if decoder is not None:  # a tiny VAE reads the latents as the UNet holds them (its scaling is 1)
                decoded = decoder.decode(latents).numpy()
            else:
                decoded = self._sessions["vae_decoder"].run(
                    None, {"latent_sample": self._unscale(latents).numpy().astype(self._float)})[0]
        except Exception as exc:
            if is_out_of_memory(exc):
                raise memory_error(self._run.device) from None
            raise
        return self._image_processor.postprocess(torch.from_numpy(decoded).float(), output_type="pil")[0]

    def _unscale(self, latents):
        """Latents as the VAE decoder takes them: undo the scaling (and the SDXL normalisation, if any)."""
        if self._latents_stats is not None:
            mean, std = self._latents_stats
            return latents * std / self._scaling + mean
        return latents / self._scaling

    def unload(self) -> None:
        self._sessions = {}
        self._info = self._spec = self._folder = self._run = None

    @property
    def info(self) -> ImageModelInfo | None:
        return self._info
