"""The PyTorch image engine on a tiny random-weight SD pipeline (64×64, 4 steps)."""

from __future__ import annotations

import pickle
import shutil
import threading

import numpy as np
import pytest

from engines.api import ProgressEvent
from engines.diffusion.png_meta import read_png_parameters
from engines.diffusion.types import ImageLoadSpec, ImageRequest, PreviewEvent, StepEvent
from engines.errors import EngineError, ErrorKind
from tests.fixtures.tiny_sd import (  # noqa: F401  (fixtures)
    EventLog,
    make_init_png,
    one_torch_thread,
    png_pixels,
    tiny_sd,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def small(**overrides) -> ImageRequest:
    values = dict(prompt="a lighthouse at dawn", width=64, height=64, steps=4, seed=1234)
    values.update(overrides)
    return ImageRequest(**values)


@pytest.fixture(scope="module")
def engine(tiny_sd):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    eng = TorchDiffusionEngine()
    eng.load(ImageLoadSpec(str(tiny_sd), backend="torch", dtype="fp32"), EventLog())
    yield eng
    eng.unload()


def test_load_reports_stages_and_info(tiny_sd):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    events = EventLog()
    info = TorchDiffusionEngine().load(ImageLoadSpec(str(tiny_sd), dtype="fp32"), events)
    stages = events.of(ProgressEvent)
    assert stages[0].fraction == 0.0 and stages[-1].fraction == 1.0
    assert all(e.stage == "load" for e in stages)
    assert (info.backend, info.device, info.dtype) == ("torch", "cpu", "fp32")
    assert info.pipeline_class == "StableDiffusionPipeline" and info.name == "tiny-sd"
    assert info.native_size == 64  # sample_size 32 × VAE scale 2
    assert "LCM" not in info.schedulers and "Euler a" in info.schedulers
    pickle.dumps(info)


def test_same_seed_gives_identical_pixels(engine):
    first = engine.generate(small(), EventLog())
    second = engine.generate(small(), EventLog())
    assert not first.cancelled and len(first.images) == 1
    image = first.images[0]
    assert (image.width, image.height, image.seed) == (64, 64, 1234)
    assert np.array_equal(png_pixels(image.png), png_pixels(second.images[0].png))
    other = engine.generate(small(seed=1235), EventLog())
    assert not np.array_equal(png_pixels(image.png), png_pixels(other.images[0].png))


def test_steps_and_previews_arrive_every_step(engine):
    events = EventLog()
    result = engine.generate(small(), events)
    steps = events.of(StepEvent)
    assert [s.step for s in steps] == [1, 2, 3, 4]
    assert all(s.total == 4 and s.image_index == 0 and s.batch_count == 1 for s in steps)
    assert steps[-1].eta_s == 0.0
    previews = events.of(PreviewEvent)
    assert [p.step for p in previews] == [1, 2, 3, 4]
    assert png_pixels(previews[0].png).shape == (32, 32, 3)  # latent resolution
    assert result.seconds > 0 and result.seconds_per_step > 0


def test_preview_interval_and_off(engine):
    events = EventLog()
    engine.generate(small(preview_every=3), events)
    assert [p.step for p in events.of(PreviewEvent)] == [3, 4]  # every 3rd, and always the last
    events = EventLog()
    engine.generate(small(preview_every=0), events)
    assert events.of(PreviewEvent) == [] and len(events.of(StepEvent)) == 4


@pytest.mark.parametrize("scheduler", ["Euler", "Euler a", "DPM++ 2M Karras", "DDIM"])
def test_every_scheduler_runs_and_is_deterministic(engine, scheduler):
    a = engine.generate(small(scheduler=scheduler), EventLog())
    b = engine.generate(small(scheduler=scheduler), EventLog())
    assert np.array_equal(png_pixels(a.images[0].png), png_pixels(b.images[0].png))
    assert f"Sampler: {scheduler}" in a.images[0].parameters


def test_lcm_sampler_runs_on_an_lcm_model_and_is_refused_otherwise(engine, tiny_sd, tmp_path):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    with pytest.raises(EngineError) as err:
        engine.generate(small(scheduler="LCM"), EventLog())
    assert err.value.kind == ErrorKind.BAD_INPUT and "LCM or Turbo" in err.value.message
    lcm_copy = tmp_path / "tiny-sd-lcm"
    shutil.copytree(tiny_sd, lcm_copy)
    lcm = TorchDiffusionEngine()
    info = lcm.load(ImageLoadSpec(str(lcm_copy), dtype="fp32"), EventLog())
    assert "LCM" in info.schedulers
    result = lcm.generate(small(scheduler="LCM", guidance=1.0), EventLog())
    assert len(result.images) == 1


def test_cancel_mid_run_returns_no_images_and_engine_still_works(engine):
    cancel = threading.Event()
    seen = []

    def emit(event):
        if isinstance(event, StepEvent):
            seen.append(event.step)
            if event.step == 2:
                cancel.set()

    result = engine.generate(small(batch_count=2), emit, cancel)
    assert result.cancelled and result.images == ()
    assert seen == [1, 2]  # stopped at once: no further step, no second image
    after = engine.generate(small(), EventLog(), threading.Event())
    assert not after.cancelled and len(after.images) == 1


def test_batch_count_gives_consecutive_seeds(engine):
    events = EventLog()
    result = engine.generate(small(seed=41, batch_count=2), events)
    assert result.seeds == (41, 42)
    assert [s.image_index for s in events.of(StepEvent)] == [0] * 4 + [1] * 4
    single = engine.generate(small(seed=42), EventLog())
    assert np.array_equal(png_pixels(result.images[1].png), png_pixels(single.images[0].png))
    assert not np.array_equal(png_pixels(result.images[0].png), png_pixels(result.images[1].png))


def test_random_seed_is_reported_and_reproduces(engine):
    result = engine.generate(small(seed=None), EventLog())
    seed = result.images[0].seed
    assert 0 <= seed < 2**32
    again = engine.generate(small(seed=seed), EventLog())
    assert np.array_equal(png_pixels(result.images[0].png), png_pixels(again.images[0].png))


def test_img2img_resizes_the_init_image_and_runs_strength_steps(engine):
    request = small(init_image=make_init_png(80, 48), strength=0.5)
    events = EventLog()
    result = engine.generate(request, events)
    assert (result.images[0].width, result.images[0].height) == (64, 64)
    assert [s.total for s in events.of(StepEvent)] == [2, 2]  # 4 steps × strength 0.5
    again = engine.generate(request, EventLog())
    assert np.array_equal(png_pixels(result.images[0].png), png_pixels(again.images[0].png))
    txt2img = engine.generate(small(), EventLog())
    assert not np.array_equal(png_pixels(result.images[0].png), png_pixels(txt2img.images[0].png))
    assert "Denoising strength: 0.5" in result.images[0].parameters


def test_bf16_matches_fp32(engine, tiny_sd):
    """bf16 weights vs fp32: measured PSNR ≈ 46 dB (mean |diff| ≈ 0.9/255) for two Euler steps on this model.

    40 dB is the usual "no visible difference" line for 8-bit images, and
    leaves room for other CPUs' bf16 kernels without hiding a real bug (a
    wrong dtype or missing cast shows up as < 20 dB). Two steps, not four:
    on a CPU without AVX-512 bf16 is emulated and each step costs seconds.
    """
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    bf16 = TorchDiffusionEngine()
    info = bf16.load(ImageLoadSpec(str(tiny_sd), dtype="bf16"), EventLog())
    assert info.dtype == "bf16"
    ours = png_pixels(bf16.generate(small(steps=2), EventLog()).images[0].png)
    reference = png_pixels(engine.generate(small(steps=2), EventLog()).images[0].png)
    mse = float(((ours - reference) ** 2).mean())
    psnr = 10 * np.log10(255**2 / mse) if mse else 99.0
    assert psnr > 40.0 and np.abs(ours - reference).mean() < 2.0
    bf16.unload()


def test_result_metadata_and_pickling(engine):
    result = engine.generate(small(negative_prompt="blurry"), EventLog())
    meta = read_png_parameters(result.images[0].png)
    assert meta["seed"] == 1234 and meta["negative_prompt"] == "blurry" and meta["model"] == "tiny-sd"
    assert meta["atelier"]["backend"] == "torch" and meta["atelier"]["dtype"] == "fp32"
    assert result.images[0].parameters == meta["parameters"]
    assert pickle.loads(pickle.dumps(result)) == result


def test_dispatcher_runs_torch_for_a_diffusers_folder(tiny_sd):
    from engines.diffusion.engine import DiffusionEngine

    engine = DiffusionEngine()
    info = engine.load(ImageLoadSpec(str(tiny_sd)), EventLog())
    assert engine.backend == "torch" and info.backend == "torch"
    assert len(engine.generate(small(), EventLog()).images) == 1
    engine.unload()
    with pytest.raises(EngineError, match="No image model is loaded"):
        engine.generate(small(), EventLog())


def test_generate_before_load_and_precision_errors(tiny_sd):
    from engines.diffusion.torch_engine import TorchDiffusionEngine, resolve_device, resolve_dtype

    with pytest.raises(EngineError, match="No image model is loaded"):
        TorchDiffusionEngine().generate(small(), EventLog())
    with pytest.raises(EngineError) as err:
        resolve_dtype("cpu", "fp16")
    assert err.value.kind == ErrorKind.UNSUPPORTED and err.value.message == (
        "fp16 runs only on a GPU; on the CPU choose bf16 (fast on recent CPUs) or fp32.")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(EngineError) as err:
            resolve_device("cuda")
        assert err.value.message == (f"A CUDA GPU was requested, but this PyTorch ({torch.__version__}) cannot use "
                                     "one here. Choose 'auto' or 'cpu'.")
    assert resolve_dtype("cuda", "auto") == "fp16"
