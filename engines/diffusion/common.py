"""What the PyTorch and ONNX Runtime engines share.

Both engines must behave identically from the outside: the same request
validation, seeds, initial noise, step/preview/image-done/cancel events,
init-image handling, PNG metadata and result. Keeping that here means a fix to one
is a fix to both, and it is what makes the same seed give the same image on
either backend: the initial latents always come from a seeded *CPU*
``torch.Generator`` in fp32, whatever device or dtype runs the model.
"""

from __future__ import annotations

import functools
import secrets
import statistics
import time
from dataclasses import dataclass

from engines.api import CancelFlag, Emit
from engines.diffusion.init_image import check_init_image, decode_upright
from engines.model_folder import ModelFolder
from engines.diffusion.png_meta import encode_png, format_parameters
from engines.diffusion.preview import preview_png
from engines.diffusion.schedulers import scheduler_problems, usable_schedulers
from engines.diffusion.types import (
    MAX_SEED,
    SCHEDULER_NAMES,
    GeneratedImage,
    ImageDoneEvent,
    ImageModelInfo,
    ImageRequest,
    ImageResult,
    PreviewEvent,
    StepEvent,
)
from engines.errors import EngineError, ErrorKind, problems_sentence


class Cancelled(Exception):
    """Raised from the step callback to stop a run at once; caught by the engine, never leaves it.

    Raising stops the diffusers pipeline immediately and leaves it usable;
    ``pipe._interrupt`` would still decode and return an image, which a
    cancelled run must never pass off as finished.
    """


def validate_request(request: ImageRequest, folder: ModelFolder, size_multiple: int | None = None) -> None:
    """Raise one BAD_INPUT error listing every problem with ``request`` for this model."""
    problems = request.validate()
    if request.scheduler in SCHEDULER_NAMES:  # an unknown name is already reported
        problems += scheduler_problems(request.scheduler, folder.distilled, folder.name)
    if size_multiple and size_multiple > 8:
        for label, value in (("width", request.width), ("height", request.height)):
            if isinstance(value, int) and value % 8 == 0 and value % size_multiple:
                nearest = max(1, round(value / size_multiple)) * size_multiple
                problems.append(f"with the ONNX version of this model, {label} must be a multiple of "
                                f"{size_multiple} (got {value}; try {nearest})")
    if problems:
        raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems, "Cannot make this image"))


def make_seeds(request: ImageRequest) -> list[int]:
    """Seeds for the batch: seed, seed+1, ... (wrapping at 2**32); a random base when seed is None."""
    base = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    return [(base + i) % (MAX_SEED + 1) for i in range(request.batch_count)]


def cpu_generator(seed: int):
    import torch

    return torch.Generator(device="cpu").manual_seed(seed)


def initial_latents(generator, shape: tuple[int, ...]):
    """Unit Gaussian noise drawn on the CPU in fp32, so the image never depends on device or dtype."""
    import torch

    return torch.randn(shape, generator=generator, dtype=torch.float32)


def decode_init_image(data: bytes, width: int, height: int):
    """The img2img source as an RGB PIL image of exactly width×height, or a clear BAD_INPUT error.

    The header is checked first (:func:`check_init_image`: format, bytes and
    pixel count), so a decompression bomb is refused before it is decoded.
    """
    from PIL import Image

    check_init_image(data)
    image = decode_upright(data, "init image", "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def request_init_image(request: ImageRequest):
    """The request's init image decoded at its size, or None for text-to-image.

    ``None`` alone means txt2img: an empty ``init_image`` is refused by
    validation, never taken for "no init image".
    """
    if request.init_image is None:
        return None
    return decode_init_image(request.init_image, request.width, request.height)


def denoised_of(step_output):
    """The scheduler's clean-image (x0) prediction from a ``step()`` result, if it gives one."""
    if isinstance(step_output, tuple):
        return step_output[1] if len(step_output) > 1 else None
    for name in ("pred_original_sample", "denoised"):
        value = getattr(step_output, name, None)
        if value is not None:
            return value
    return None


class DenoisedTap:
    """Keeps the x0 prediction of each ``scheduler.step`` for previews.

    The diffusers pipelines only hand the callback the noisy latents; the
    scheduler computes x0 anyway, so its ``step`` is wrapped on this one
    instance. ``functools.wraps`` keeps the signature visible, which matters:
    the pipelines inspect it to decide whether to pass ``generator``.
    """

    def __init__(self, scheduler) -> None:
        self.x0 = None
        original = scheduler.step

        @functools.wraps(original)
        def step(*args, **kwargs):
            output = original(*args, **kwargs)
            self.x0 = denoised_of(output)
            return output

        scheduler.step = step


class StepReporter:
    """Step and preview events, ETA, step timing and the cancel check, for both engines."""

    def __init__(self, request: ImageRequest, emit: Emit, cancel: CancelFlag | None, family: str) -> None:
        self.request = request
        self.emit = emit
        self.cancel = cancel
        self.family = family
        # latents → preview PNG; an engine with a tiny VAE swaps in its real decode (engines.diffusion.taesd)
        self.render_preview = lambda latents: preview_png(latents, family)
        self.total = request.denoising_steps
        self.index = 0
        self._last = time.perf_counter()
        self._first_steps: list[float] = []  # the first step of an image also pays for text encoding
        self._steps: list[float] = []

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def begin_image(self, index: int) -> None:
        self.check_cancel()
        self.index = index
        self._last = time.perf_counter()

    def step(self, step: int, latents, denoised=None, total: int | None = None) -> None:
        """Report step ``step`` (1-based) of the current image; raises :class:`Cancelled` if asked to stop."""
        now = time.perf_counter()
        (self._steps if step > 1 else self._first_steps).append(now - self._last)
        self._last = now
        self.total = total or self.total
        remaining = (self.total - step) + (self.request.batch_count - self.index - 1) * self.total
        self.emit(StepEvent(step, self.total, self.index, self.request.batch_count,
                            round(remaining * self.seconds_per_step, 2)))
        every = self.request.preview_every
        if every and (step % every == 0 or step == self.total):
            self.emit(PreviewEvent(step, self.render_preview(denoised if denoised is not None else latents),
                                   self.index))
        self.check_cancel()

    @property
    def seconds_per_step(self) -> float:
        """Median steady-state step time; the first steps only when nothing else was timed."""
        timed = self._steps or self._first_steps
        return statistics.median(timed) if timed else 0.0


@dataclass(frozen=True)
class RunInfo:
    """How the loaded model runs, stamped on every image and result."""

    backend: str
    device: str
    dtype: str
    model_name: str
    family: str


def make_info(folder: ModelFolder, backend: str, device: str, dtype: str) -> ImageModelInfo:
    return ImageModelInfo(
        path=str(folder.path),
        name=folder.name,
        pipeline_class=folder.pipeline_class,
        backend=backend,
        device=device,
        dtype=dtype,
        native_size=folder.native_size,
        schedulers=usable_schedulers(folder.distilled),
    )


def make_image(pil_image, request: ImageRequest, seed: int, run: RunInfo) -> GeneratedImage:
    extra = {"seed": seed, "model": run.model_name, "backend": run.backend, "device": run.device,
             "dtype": run.dtype}
    return GeneratedImage(
        png=encode_png(pil_image, request, extra),
        seed=seed,
        width=pil_image.width,
        height=pil_image.height,
        parameters=format_parameters(request, extra),
    )


def make_result(images: list[GeneratedImage], request: ImageRequest, run: RunInfo, started: float,
                reporter: StepReporter, cancelled: bool) -> ImageResult:
    return ImageResult(
        images=tuple(images),
        request=request,
        backend=run.backend,
        device=run.device,
        dtype=run.dtype,
        model_name=run.model_name,
        seconds=round(time.perf_counter() - started, 4),
        seconds_per_step=round(reporter.seconds_per_step, 5),
        cancelled=cancelled,
    )


def run_batch(request: ImageRequest, emit: Emit, cancel: CancelFlag | None, run: RunInfo, make_one) -> ImageResult:
    """Make ``batch_count`` images with consecutive seeds; ``make_one(seed, reporter)`` returns a PIL image.

    Each image is emitted as an :class:`ImageDoneEvent` the moment it is
    finished, so the front ends save it before the next one starts. A cancel
    (raised from a step) drops only the image in progress: the result keeps
    the ones finished before it, with ``cancelled`` set.
    """
    started = time.perf_counter()
    reporter = StepReporter(request, emit, cancel, run.family)
    images = []
    try:
        for index, seed in enumerate(make_seeds(request)):
            reporter.begin_image(index)
            image = make_image(make_one(seed, reporter), request, seed, run)
            images.append(image)
            emit(ImageDoneEvent(image, index, request.batch_count))
    except Cancelled:
        return make_result(images, request, run, started, reporter, cancelled=True)
    return make_result(images, request, run, started, reporter, cancelled=False)


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text
    )


def memory_error(device: str) -> EngineError:
    where = "GPU memory" if device not in ("cpu",) else "memory"
    return EngineError(ErrorKind.MEMORY, f"The image did not fit in {where}. Try a smaller size or close other "
                                         "programs.")
