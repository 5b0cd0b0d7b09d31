"""The PyTorch image engine: diffusers pipelines, kept warm between runs.

It uses the diffusers pipelines themselves (from ``model_index.json``)
rather than a hand-written loop, so every fix upstream lands here too. What
Atelier adds: a precision and device policy that suits the machine,
device-independent seeds, step/preview events, an immediate cancel, and
errors a user can act on instead of tracebacks.

Precision policy (``dtype="auto"``): fp16 on a GPU; on a CPU, bf16 weights
when the CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16:
``CpuInfo.native_bf16`` in :mod:`engines.machine.hardware`), fp32 otherwise. On the CPU the
UNet also gets :mod:`engines.diffusion.cpu_speedups` (weights pre-packed for
oneDNN, sliced attention in bf16). bf16 weights beat autocast, which keeps
fp32 weights and re-casts them on every call. The figures are in the README
(``benchmarks/bench_diffusion.py``); on the tiny test model bf16 stays
within a PSNR of 40 dB of fp32 (see the tests).
"""

from __future__ import annotations

import gc
import inspect
import logging

from engines.api import CancelFlag, Emit, NoticeEvent, ProgressEvent
from engines.diffusion.common import (
    Cancelled,
    DenoisedTap,
    RunInfo,
    StepReporter,
    cpu_generator,
    initial_latents,
    is_out_of_memory,
    make_info,
    memory_error,
    request_init_image,
    run_batch,
    validate_request,
)
from engines.model_folder import ModelFolder, inspect_model_folder
from engines.diffusion.schedulers import make_scheduler
from engines.diffusion.types import ImageLoadSpec, ImageModelInfo, ImageRequest, ImageResult
from engines.errors import EngineError, ErrorKind, problems_sentence

log = logging.getLogger(__name__)

# family → (text-to-image class, image-to-image class, inpainting class)
_PIPELINES = {
    "sd": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
    "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"),
}
IMG2IMG, INPAINT = 1, 2  # indexes into a family's _PIPELINES entry
_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_device(requested: str) -> str:
    """CUDA if available, else Apple's MPS, else the CPU; an explicit choice must be available."""
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested in ("auto", None):
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise EngineError(ErrorKind.UNSUPPORTED, f"A CUDA GPU was requested, but this PyTorch ({torch.__version__}) "
                                                 "cannot use one here. Choose 'auto' or 'cpu'.")
    if requested == "mps" and not mps:
        raise EngineError(ErrorKind.UNSUPPORTED, "Apple's Metal (MPS) was requested, but it is not available here. "
                                                 "Choose 'auto' or 'cpu'.")
    return requested


def resolve_dtype(device: str, requested: str) -> str:
    """The precision to run in: fp16 on GPUs, bf16 on CPUs that compute it natively, else fp32."""
    if requested in ("auto", None):
        if device != "cpu":
            return "fp16"
        from engines.machine.hardware import probe_cpu

        return "bf16" if probe_cpu().native_bf16 else "fp32"
    if requested == "fp16" and device == "cpu":
        raise EngineError(ErrorKind.UNSUPPORTED, "fp16 runs only on a GPU; on the CPU choose bf16 (fast on recent "
                                                 "CPUs) or fp32.")
    return requested


def quiet_progress_bars() -> None:
    """Turn off diffusers' and transformers' tqdm bars: the host logs stderr, and bars only clutter it."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def load_pipeline(folder: ModelFolder, weights_dtype):
    """The text-to-image pipeline of a diffusers folder, without the safety checker; errors in words."""
    import diffusers

    cls = getattr(diffusers, _PIPELINES[folder.family][0])
    # ``dtype`` is diffusers 0.42's name for the older ``torch_dtype`` (which now warns).
    kwargs = {"local_files_only": True, "use_safetensors": True, "dtype": weights_dtype}
    if folder.variant:
        kwargs["variant"] = folder.variant
    if "safety_checker" in folder.components:
        # Real SD 1.5 folders ship a 1.2 GB NSFW classifier; Atelier is a local tool and skips it.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if "feature_extractor" in folder.components:
        kwargs["feature_extractor"] = None  # only the safety checker uses it
    quiet_progress_bars()
    try:
        return cls.from_pretrained(str(folder.path), **kwargs)
    except EngineError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise memory_error("cpu") from None
        log.warning("loading %s failed", folder.path, exc_info=True)
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EngineError(ErrorKind.MODEL_FILE, f"The model in {folder.path} could not be loaded: {detail}. "
                                                "The files may be damaged or incomplete; copy the model again.")


def no_vae_upcast(pipe) -> None:
    """Keep a bf16 VAE whose layers :mod:`cpu_speedups` packed in bf16 when SDXL img2img encodes.

    ``StableDiffusionXLImg2ImgPipeline`` moves the VAE to fp32 around the
    encoder whenever its config says ``force_upcast`` (SDXL's does, against
    fp16 overflow). A packed layer keeps its weight outside ``parameters()``,
    so ``.to()`` casts only its bias, and oneDNN then fails on fp32
    activations against the bf16 weight ("could not create a primitive
    descriptor for the inner product"). bf16 has fp32's exponent range, so
    the upcast protects nothing there and is switched off.
    """
    vae = getattr(pipe, "vae", None)
    if vae is not None and getattr(vae.config, "force_upcast", False):
        vae.register_to_config(force_upcast=False)


class TorchDiffusionEngine:
    """Stable Diffusion 1.x/2.x and SDXL through diffusers, one model at a time."""

    backend = "torch"

    def __init__(self) -> None:
        self._spec: ImageLoadSpec | None = None
        self._folder: ModelFolder | None = None
        self._info: ImageModelInfo | None = None
        self._run: RunInfo | None = None
        self._txt2img = None
        self._variants: dict = {}  # IMG2IMG / INPAINT pipelines, built on first use from the loaded components
        self._text = None
        self._tiny = None  # the tiny VAEs asked for so far (engines.diffusion.taesd)
        self._scheduler_config: dict = {}
        self._loras: tuple = ()  # the LoRAs fused into the loaded weights (engines.diffusion.lora)

    # ---- loading ---------------------------------------------------------

    def load(self, spec: ImageLoadSpec, emit: Emit, loras: tuple = ()) -> ImageModelInfo:
        """Load ``spec``'s pipeline with ``loras`` fused into its weights (see :mod:`engines.diffusion.lora`)."""
        problems = spec.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems, "Cannot load the model"))
        if self._info is not None and spec == self._spec and loras == self._loras:
            return self._info  # already warm
        if spec.backend == "onnx":
            raise EngineError(ErrorKind.BAD_INPUT, "The PyTorch engine cannot run the ONNX backend.")
        emit(ProgressEvent("load", "Checking the model folder…", 0.0))
        folder = inspect_model_folder(spec.model_path)
        if folder.kind != "diffusers":
            raise EngineError(ErrorKind.UNSUPPORTED, f"{folder.path} is an ONNX model; it runs with ONNX Runtime, "
                                                     "not PyTorch. Choose the 'auto' or 'onnx' backend.")
        device = resolve_device(spec.device)
        dtype = resolve_dtype(device, spec.dtype)
        self.unload()
        emit(ProgressEvent("load", "Starting PyTorch…", 0.05))
        import torch

        weights_dtype = getattr(torch, _TORCH_DTYPES[dtype])
        emit(ProgressEvent("load", f"Loading {folder.name} ({folder.pipeline_class}) weights…", 0.1))
        pipe = load_pipeline(folder, weights_dtype)
        emit(ProgressEvent("load", f"Moving the model to {device}…", 0.8))
        try:
            pipe.to(device)
            if loras:  # fused before the CPU speed-ups pack the weights, so LoRA layers are packed too
                from engines.diffusion.lora import apply_loras

                apply_loras(pipe, loras, folder.family, folder.name, emit)
            if device == "cpu" and spec.cpu_speedups:
                from engines.diffusion.cpu_speedups import speed_up_for_cpu

                emit(ProgressEvent("load", "Preparing the weights for this CPU…", 0.85))
                try:
                    speed_up_for_cpu(pipe, dtype)
                except RuntimeError as exc:  # an unusual oneDNN build: layers swapped so far are complete
                    if is_out_of_memory(exc):
                        raise
                    log.warning("CPU speed-ups stopped part-way; the remaining layers run as diffusers ships them",
                                exc_info=True)
                if dtype == "bf16":
                    no_vae_upcast(pipe)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise memory_error(device) from None
            raise
        pipe.set_progress_bar_config(disable=True)
        self._txt2img = pipe
        from engines.diffusion.torch_text import PipelineText

        self._text = PipelineText(pipe, folder.family)
        from engines.diffusion.taesd import TinyVaes

        self._tiny = TinyVaes(int(pipe.vae.config.latent_channels), folder.vae_scale_factor)
        self._variants = {}  # built on first use: they share every component, so they cost nothing to keep
        self._scheduler_config = dict(pipe.scheduler.config)
        self._spec, self._folder, self._loras = spec, folder, loras
        self._run = RunInfo("torch", device, dtype, folder.name, folder.family)
        self._info = make_info(folder, "torch", device, dtype)
        emit(ProgressEvent("load", f"{folder.name} is ready ({device}, {dtype}).", 1.0))
        return self._info

    def _variant_pipe(self, which: int):
        """The image-to-image or inpainting pipeline over the loaded components (no second load)."""
        if which not in self._variants:
            import diffusers

            cls = getattr(diffusers, _PIPELINES[self._folder.family][which])
            accepted = set(inspect.signature(cls.__init__).parameters)
            parts = {k: v for k, v in self._txt2img.components.items() if k in accepted}
            if "requires_safety_checker" in accepted:
                parts["requires_safety_checker"] = False
            if "force_zeros_for_empty_prompt" in accepted:  # SDXL: a config value, not a component
                parts["force_zeros_for_empty_prompt"] = self._txt2img.config.force_zeros_for_empty_prompt
            pipe = cls(**parts)
            pipe.set_progress_bar_config(disable=True)
            self._variants[which] = pipe
        return self._variants[which]

    @property
    def _inpainting_model(self) -> bool:
        """A dedicated inpainting model: its UNet also takes the mask and the masked image (9 channels, not 4)."""
        return getattr(self._txt2img.unet.config, "in_channels", 4) == 9

    def _check_inpaint(self, request: ImageRequest) -> None:
        """Refuse what this model cannot do with this request, and an outpaint too large for memory."""
        if self._inpainting_model and not request.inpainting:
            raise EngineError(ErrorKind.BAD_INPUT, f"{self._folder.name} is an inpainting model: it repaints the "
                                                   "masked part of an init image. Give it an init image and a mask "
                                                   "(or outpaint margins), or choose an ordinary model.")
        if any(request.outpaint) and self._run.device == "cpu":
            from engines.diffusion.inpaint import memory_problem

            problem = memory_problem(str(self._folder.path), *request.output_size)
            if problem:
                raise EngineError(ErrorKind.BAD_INPUT, problem[0].upper() + problem[1:] + ".")

    # ---- generation ------------------------------------------------------

    def generate(self, request: ImageRequest, emit: Emit, cancel: CancelFlag | None = None) -> ImageResult:
        if self._txt2img is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No image model is loaded.")
        validate_request(request, self._folder)
        self._check_inpaint(request)
        self._use_loras(request, emit)
        if request.inpainting:
            from engines.diffusion.inpaint import prepare

            init = prepare(request)  # the (outpainted) canvas and its mask; pasted back after decoding
        else:
            init = request_init_image(request)
        # The prompt is encoded once for the batch, weighted and in 77-token chunks (engines.diffusion.torch_text).
        embeds = self._text.embeds(request.prompt, request.negative_prompt, guided=request.guidance > 1.0)
        for notice in embeds.notices:
            emit(NoticeEvent(notice))
        prompt_kwargs = self._text.pipeline_kwargs(embeds)
        decoder = self._tiny.get(request.vae)  # None: the model's own VAE
        previewer = self._tiny.get(request.preview_vae) or decoder
        return run_batch(request, emit, cancel, self._run,
                         lambda seed, reporter: self._one(request, seed, init, prompt_kwargs, reporter,
                                                          decoder, previewer))

    def _use_loras(self, request: ImageRequest, emit: Emit) -> None:
        """Load the pipeline again with the request's LoRAs when they differ from the fused ones.

        The files are checked first, so a LoRA that is refused costs no
        reload; one that fails while it is applied leaves the base model
        loaded again, ready for the next request.
        """
        from engines.diffusion.lora import active, check_lora

        loras = active(request.loras)
        if loras == self._loras:
            return
        width = getattr(self._txt2img.unet.config, "cross_attention_dim", None)
        for lora in loras:
            check_lora(lora, self._folder.family, width if isinstance(width, int) else None, self._folder.name)
        spec = self._spec
        try:
            self.load(spec, emit, loras)
        except EngineError:
            if loras and self._info is None:
                self.load(spec, emit, ())
            raise

    def _one(self, request: ImageRequest, seed: int, init, prompt_kwargs: dict, reporter: StepReporter,
             decoder=None, previewer=None):
        import torch

        inpaint = init if request.inpainting else None
        pipe = (self._variant_pipe(INPAINT) if inpaint is not None else self._variant_pipe(IMG2IMG) if init is not None
                else self._txt2img)
        if previewer is not None:
            reporter.render_preview = previewer.preview_png
        pipe.scheduler = make_scheduler(request.scheduler, self._scheduler_config)
        tap = DenoisedTap(pipe.scheduler)
        generator = cpu_generator(seed)

        def on_step_end(p, i, t, tensors):
            reporter.step(i + 1, tensors["latents"], tap.x0, total=p.num_timesteps)
            return tensors

        kwargs = dict(
            **prompt_kwargs,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            generator=generator,
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
            output_type="latent" if decoder is not None else "pil",  # the tiny VAE decodes the latents below
        )
        if inpaint is not None:
            kwargs.update(image=inpaint.canvas, mask_image=inpaint.mask, width=inpaint.width, height=inpaint.height,
                          strength=request.strength)
        elif init is not None:
            kwargs.update(image=init, strength=request.strength)
        else:
            scale = self._folder.vae_scale_factor
            shape = (1, pipe.unet.config.in_channels, request.height // scale, request.width // scale)
            latents = initial_latents(generator, shape).to(self._run.device, pipe.unet.dtype)
            kwargs.update(width=request.width, height=request.height, latents=latents)
        try:
            from engines.diffusion.deep_cache import DeepCache

            with torch.inference_mode(), DeepCache(pipe.unet, request.deep_cache):
                images = pipe(**kwargs).images
                if decoder is None:
                    image = images[0]
                else:
                    image = pipe.image_processor.postprocess(decoder.decode(images), output_type="pil")[0]
            if inpaint is not None:
                from engines.diffusion.inpaint import paste_back  # the unmasked pixels stay the user's own

                image = paste_back(image, inpaint)
            return image
        except Cancelled:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise memory_error(self._run.device) from None
            raise

    def unload(self) -> None:
        """Drop the pipelines. The engine host ends the process to return all memory; this frees most."""
        device = self._run.device if self._run else "cpu"
        self._txt2img = self._text = self._tiny = None
        self._variants = {}
        self._info = self._spec = self._folder = self._run = None
        self._loras = ()
        gc.collect()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()

    @property
    def info(self) -> ImageModelInfo | None:
        return self._info

    @property
    def pipeline(self):
        """The loaded text-to-image diffusers pipeline (for benchmarks and tools), or None."""
        return self._txt2img
