"""The ONNX Runtime image engine: Stable Diffusion 1.x/2.x from an ONNX folder.

diffusers' ``OnnxStableDiffusionPipeline`` is deprecated (removed in
0.43), breaks with the Euler scheduler on numpy inputs and assumes a VAE
that scales by 8, so the denoising loop is written here. It mirrors the
diffusers PyTorch pipelines step for step: the same diffusers scheduler
(on torch tensors), the same seeded CPU ``torch.Generator`` consumed in the
same order (initial noise; for img2img the VAE sample, then the noise), the
same classifier-free guidance and the same image pre- and post-processing.
That is why one seed gives the same image on both backends.

ONNX Runtime picks the best execution provider it has: CUDA, DirectML
(Windows GPUs), CoreML (Apple), else the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.api import CancelFlag, Emit, ProgressEvent
from engines.diffusion.common import (
    RunInfo,
    StepReporter,
    cpu_generator,
    decode_init_image,
    denoised_of,
    initial_latents,
    is_out_of_memory,
    make_info,
    memory_error,
    run_batch,
    validate_request,
)
from engines.diffusion.model_folder import ModelFolder, inspect_model_folder
from engines.diffusion.schedulers import extra_step_kwargs, make_scheduler
from engines.diffusion.types import ImageLoadSpec, ImageModelInfo, ImageRequest, ImageResult
from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)

# (ONNX Runtime provider, the device name Atelier reports), best first.
PROVIDERS = (
    ("CUDAExecutionProvider", "cuda"),
    ("DmlExecutionProvider", "dml"),
    ("CoreMLExecutionProvider", "coreml"),
    ("CPUExecutionProvider", "cpu"),
)
_REQUESTED = {"cuda": ("CUDAExecutionProvider",), "mps": ("CoreMLExecutionProvider",), "cpu": ("CPUExecutionProvider",)}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}


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
    """Stable Diffusion 1.x/2.x through ONNX Runtime, one model at a time."""

    backend = "onnx"

    def __init__(self) -> None:
        self._spec: ImageLoadSpec | None = None
        self._folder: ModelFolder | None = None
        self._info: ImageModelInfo | None = None
        self._run: RunInfo | None = None
        self._sessions: dict = {}
        self._provider = "CPUExecutionProvider"

    # ---- loading ---------------------------------------------------------

    def load(self, spec: ImageLoadSpec, emit: Emit, folder: ModelFolder | None = None) -> ImageModelInfo:
        """Open the ONNX sessions. ``folder`` lets the dispatcher pass an already-inspected ONNX copy."""
        problems = spec.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, "Cannot load the model: " + "; ".join(problems) + ".")
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
        for fraction, name in ((0.1, "text_encoder"), (0.3, "unet"), (0.85, "vae_decoder")):
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
        """Tokenizer, scheduler config, VAE settings and the input types the graphs declare."""
        from diffusers import EulerDiscreteScheduler
        from diffusers.image_processor import VaeImageProcessor
        from transformers import CLIPTokenizer

        try:
            self._tokenizer = CLIPTokenizer.from_pretrained(str(folder.path / "tokenizer"), model_max_length=77)
        except Exception as exc:
            raise EngineError(ErrorKind.MODEL_FILE, f"The tokenizer in {folder.path / 'tokenizer'} could not be "
                                                    f"read ({exc}).")
        self._scheduler_config = dict(folder.scheduler_config) or dict(EulerDiscreteScheduler().config)
        vae = {}
        config_path = folder.path / "vae_decoder" / "config.json"
        if config_path.is_file():
            import json

            vae = json.loads(config_path.read_text(encoding="utf-8"))
        self._scaling = float(vae.get("scaling_factor", 0.18215))
        self._latent_channels = int(vae.get("latent_channels", 4))
        self._image_processor = VaeImageProcessor(vae_scale_factor=folder.vae_scale_factor)
        text_input = sessions["text_encoder"].get_inputs()[0]
        self._ids_name, self._ids_dtype = text_input.name, _ORT_TYPES.get(text_input.type, np.int64)
        unet_inputs = {i.name: i.type for i in sessions["unet"].get_inputs()}
        self._float = _ORT_TYPES.get(unet_inputs.get("sample", "tensor(float)"), np.float32)
        self._timestep_dtype = _ORT_TYPES.get(unet_inputs.get("timestep", "tensor(float)"), np.float32)
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
        init = decode_init_image(request.init_image, request.width, request.height) if request.init_image else None
        if init is not None:
            self._vae_encoder()
        return run_batch(request, emit, cancel, self._run,
                         lambda seed, reporter: self._one(request, seed, init, reporter))

    def _encode_text(self, text: str) -> np.ndarray:
        ids = self._tokenizer([text], padding="max_length", max_length=self._tokenizer.model_max_length,
                              truncation=True, return_tensors="np").input_ids
        return self._sessions["text_encoder"].run(None, {self._ids_name: ids.astype(self._ids_dtype)})[0]

    def _initial(self, request: ImageRequest, scheduler, generator, init):
        """Starting latents and the timesteps to run, exactly as the diffusers pipelines make them."""
        import torch

        scheduler.set_timesteps(request.steps)
        scale = self._folder.vae_scale_factor
        if init is None:
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
        init_latents = encoded * self._scaling
        noise = torch.randn(init_latents.shape, generator=generator, dtype=torch.float32)
        return scheduler.add_noise(init_latents, noise, timesteps[:1]), timesteps

    def _one(self, request: ImageRequest, seed: int, init, reporter: StepReporter):
        import torch

        scheduler = make_scheduler(request.scheduler, self._scheduler_config)
        generator = cpu_generator(seed)
        guided = request.guidance > 1.0  # the diffusers pipelines skip the unconditional pass at ≤ 1
        embeds = self._encode_text(request.prompt)
        if guided:
            embeds = np.concatenate([self._encode_text(request.negative_prompt), embeds])
        latents, timesteps = self._initial(request, scheduler, generator, init)
        step_kwargs = extra_step_kwargs(scheduler, generator)
        unet = self._sessions["unet"]
        try:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = scheduler.scale_model_input(model_input, t)
                noise = unet.run(None, {
                    "sample": model_input.numpy().astype(self._float),
                    "timestep": np.full((model_input.shape[0],), t.item(), dtype=self._timestep_dtype),
                    "encoder_hidden_states": embeds.astype(self._float),
                })[0]
                noise = torch.from_numpy(noise).float()
                if guided:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + request.guidance * (cond - uncond)
                output = scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)
                latents = output[0]
                reporter.step(i + 1, latents, denoised_of(output), total=len(timesteps))
            decoded = self._sessions["vae_decoder"].run(
                None, {"latent_sample": (latents / self._scaling).numpy().astype(self._float)})[0]
        except Exception as exc:
            if is_out_of_memory(exc):
                raise memory_error(self._run.device) from None
            raise
        return self._image_processor.postprocess(torch.from_numpy(decoded).float(), output_type="pil")[0]

    def unload(self) -> None:
        self._sessions = {}
        self._info = self._spec = self._folder = self._run = None

    @property
    def info(self) -> ImageModelInfo | None:
        return self._info
