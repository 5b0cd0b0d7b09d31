"""Step caching (DeepCache): the shallow path is exact around a fresh deep feature, and the engine uses it.

On the tiny random pipeline the quality loss itself means nothing (its
"images" are noise); the benchmark measures it on the SD 1.5 architecture.
What is checked here is that the shallow path is the UNet's own arithmetic
(run around the deep feature of the same step it gives the full UNet's
output), that the full UNet runs exactly every N steps, and that the
pipeline is left as it was.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.api import NoticeEvent
from engines.diffusion.types import ImageLoadSpec, ImageRequest
from tests.fixtures.tiny_sd import (  # noqa: F401  (fixtures)
    EventLog,
    one_torch_thread,
    png_pixels,
    tiny_sd,
    tiny_sd_onnx,
)
from tests.fixtures.tiny_sdxl import tiny_sdxl  # noqa: F401  (session fixture)

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

BASE = dict(prompt="a red lighthouse", width=64, height=64, steps=7, seed=3, guidance=5.0)


def load(folder):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(folder), backend="torch", dtype="fp32"), EventLog())
    return engine


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_shallow_path_around_this_steps_deep_feature_is_the_full_unet(family, tiny_sd, tiny_sdxl):
    import torch

    from engines.diffusion.deep_cache import DeepCache

    engine = load(tiny_sd if family == "sd" else tiny_sdxl)
    unet = engine.pipeline.unet
    torch.manual_seed(0)
    sample = torch.randn(2, 4, 16, 16)
    width = unet.config.cross_attention_dim
    hidden = torch.randn(2, 77, width)
    extra = {}
    if family == "sdxl":
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 40), "time_ids": torch.randn(2, 6)}
    with torch.inference_mode(), DeepCache(unet, 2) as cache:
        full = unet(sample, 500, encoder_hidden_states=hidden, return_dict=False, **extra)[0]
        shallow = cache._shallow(sample, 500, hidden, return_dict=False, **extra)[0]
        later = unet(sample, 400, encoder_hidden_states=hidden, return_dict=False, **extra)[0]  # reuses
    assert cache.full_calls == 1 and cache.shallow_calls == 1
    torch.testing.assert_close(shallow, full, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(later, full)  # another timestep, through the shallow path
    assert "forward" not in vars(unet)  # the class's forward again


@pytest.mark.slow
def test_the_engine_runs_the_full_unet_every_n_steps_and_leaves_the_pipeline_as_it_was(tiny_sd):
    engine = load(tiny_sd)
    deep = engine.pipeline.unet.down_blocks[1]  # below the shallow path: runs only in full steps
    calls = []
    hook = deep.register_forward_hook(lambda *a: calls.append(1))
    try:
        cached = png_pixels(engine.generate(ImageRequest(**BASE, deep_cache=3), EventLog()).images[0].png)
        assert len(calls) == 3  # steps 1, 4 and 7 of 7 (guided: both halves in one call)
        calls.clear()
        full = png_pixels(engine.generate(ImageRequest(**BASE), EventLog()).images[0].png)
        assert len(calls) == 7
    finally:
        hook.remove()
    assert "forward" not in vars(engine.pipeline.unet)
    assert np.abs(cached - full).mean() > 0.5  # the steps in between really reused old features
    again = png_pixels(engine.generate(ImageRequest(**BASE, deep_cache=3), EventLog()).images[0].png)
    assert np.array_equal(again, cached)  # deterministic: the cache starts empty for every image


def test_step_caching_is_checked_and_the_onnx_engine_says_it_cannot(tiny_sd_onnx):
    assert ImageRequest(**BASE, deep_cache=6).validate() == [
        "step caching must reuse features for 0 to 5 steps (got 6)"]
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    engine = OnnxDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd_onnx)), EventLog())
    events = EventLog()
    result = engine.generate(ImageRequest(**{**BASE, "steps": 2}, deep_cache=2), events)
    assert len(result.images) == 1
    assert [e.message for e in events.of(NoticeEvent)] == [
        "Step caching needs the PyTorch backend (an ONNX UNet is one graph, with no deep features to reuse), so "
        "every step ran in full."]
