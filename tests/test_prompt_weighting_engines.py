"""Prompt weighting and long prompts on both image engines, on the tiny SD and SDXL pipelines.

The weighted embedding is checked against the pipeline's own plain one:
a weight of 1.0 gives it bit for bit, a weight of 1.3 scales the word's
positions as A1111 specifies; a prompt over 75 tokens reaches the UNet as
2×77 positions, on both backends; and both backends give the same image for
the same weighted prompt and seed.
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
from tests.fixtures.tiny_sdxl import tiny_sdxl, tiny_sdxl_onnx  # noqa: F401  (session fixtures)

pytest.importorskip("onnxruntime")
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

# The tiny models' tokenizer makes one token per byte, so this is 100 tokens: two chunks.
LONG_PROMPT = "a (red:1.3) lighthouse [at] dawn, " + "x" * 66
WEIGHTED = dict(prompt=LONG_PROMPT, negative_prompt="(fog:0.8)", width=64, height=64, steps=3, seed=5)


def engines_for(torch_folder, onnx_folder):
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    torch_engine, onnx_engine = TorchDiffusionEngine(), OnnxDiffusionEngine()
    torch_engine.load(ImageLoadSpec(str(torch_folder), dtype="fp32"), EventLog())
    onnx_engine.load(ImageLoadSpec(str(onnx_folder)), EventLog())
    return torch_engine, onnx_engine


@pytest.fixture(scope="module")
def sd_engines(tiny_sd, tiny_sd_onnx):
    torch_engine, onnx_engine = engines_for(tiny_sd, tiny_sd_onnx)
    yield torch_engine, onnx_engine
    torch_engine.unload()
    onnx_engine.unload()


@pytest.fixture(scope="module")
def sdxl_engines(tiny_sdxl, tiny_sdxl_onnx):
    torch_engine, onnx_engine = engines_for(tiny_sdxl, tiny_sdxl_onnx)
    yield torch_engine, onnx_engine
    torch_engine.unload()
    onnx_engine.unload()


def pipeline_plain_embeds(pipe, prompt: str, negative: str):
    """What the diffusers pipeline itself makes of a prompt (its own encode_prompt)."""
    import torch

    with torch.inference_mode():
        if hasattr(pipe, "text_encoder_2"):
            return pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1,
                                      do_classifier_free_guidance=True, negative_prompt=negative or None)
        return pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative or None)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_unweighted_and_weight_one_prompts_equal_the_pipelines_own_embedding(family, sd_engines, sdxl_engines):
    engine = (sd_engines if family == "sd" else sdxl_engines)[0]
    plain = pipeline_plain_embeds(engine.pipeline, "a red lighthouse", "fog")
    for prompt in ("a red lighthouse", "a (red:1.0) lighthouse", "(a red lighthouse:1)"):
        ours = engine._text.embeds(prompt, "fog", guided=True)
        assert np.array_equal(ours.prompt, plain[0].numpy()), prompt
        assert np.array_equal(ours.negative, plain[1].numpy())
        if family == "sdxl":  # and the pooled projections (plain: prompt, negative, pooled, negative pooled)
            assert np.array_equal(ours.pooled, plain[2].numpy())
            assert np.array_equal(ours.negative_pooled, plain[3].numpy())


def test_an_empty_sdxl_negative_prompt_is_all_zeros_as_in_the_pipeline(sdxl_engines):
    ours = sdxl_engines[0]._text.embeds("a red lighthouse", "", guided=True)
    plain = pipeline_plain_embeds(sdxl_engines[0].pipeline, "a red lighthouse", "")
    assert not ours.negative.any() and np.array_equal(ours.negative, plain[1].numpy())


def expected_weighting(plain: np.ndarray, first: int, count: int, restore_mean: bool) -> np.ndarray:
    weights = np.ones((1, 77, 1), dtype=np.float32)
    weights[0, first:first + count] = 1.3
    scaled = plain * weights
    return scaled * (plain.mean() / scaled.mean()) if restore_mean else scaled


def red_positions(tokenizer) -> tuple[int, int]:
    """Where 'red' sits in 'a (red:1.3) lighthouse': after <start> and 'a'; one token per byte here."""
    return (1 + len(tokenizer("a", add_special_tokens=False).input_ids),
            len(tokenizer("red", add_special_tokens=False).input_ids))


def test_a_weight_scales_the_words_positions_and_restores_each_encoders_mean(sdxl_engines):
    # SDXL's penultimate layers have a clear mean (about ±0.02 here), so A1111's mean restoration applies,
    # to each encoder's half on its own.
    engine = sdxl_engines[0]
    plain = engine._text.embeds("a red lighthouse", "", guided=False).prompt
    weighted = engine._text.embeds("a (red:1.3) lighthouse", "", guided=False).prompt
    first, count = red_positions(engine.pipeline.tokenizer)
    for half in (slice(0, 32), slice(32, 80)):
        assert abs(plain[..., half].mean()) > 0.01
        expected = expected_weighting(plain[..., half], first, count, restore_mean=True)
        np.testing.assert_allclose(weighted[..., half], expected, rtol=1e-5, atol=1e-6)
        assert weighted[..., half].mean() == pytest.approx(plain[..., half].mean(), rel=1e-4)
    assert not np.allclose(weighted, plain)


def test_a_weight_on_a_zero_mean_encoder_only_scales_the_words_positions(sd_engines):
    # The tiny SD's last layer norm has no bias: its mean is ~1e-9, rounding noise, so restoring it would
    # multiply by noise (and the two backends would disagree). The scaled states are kept as they are.
    engine = sd_engines[0]
    plain = engine._text.embeds("a red lighthouse", "", guided=False).prompt
    assert abs(plain.mean()) < 1e-6
    weighted = engine._text.embeds("a (red:1.3) lighthouse", "", guided=False).prompt
    first, count = red_positions(engine.pipeline.tokenizer)
    np.testing.assert_allclose(weighted, expected_weighting(plain, first, count, restore_mean=False),
                               rtol=1e-6, atol=1e-7)
    assert not np.allclose(weighted, plain)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_a_prompt_over_75_tokens_reaches_the_unet_as_two_chunks_on_both_backends(family, sd_engines, sdxl_engines):
    torch_engine, onnx_engine = sd_engines if family == "sd" else sdxl_engines
    seen = []
    hook = torch_engine.pipeline.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["encoder_hidden_states"].shape)), with_kwargs=True)
    try:
        torch_engine.generate(ImageRequest(**WEIGHTED), EventLog())
    finally:
        hook.remove()
    width = 32 if family == "sd" else 32 + 48
    assert seen == [(2, 154, width)] * 3  # negative and prompt, 2×77 positions, every step

    unet = onnx_engine._sessions["unet"]
    onnx_seen = []

    class Recording:
        def __getattr__(self, name):
            return getattr(unet, name)

        def run(self, names, feed):
            onnx_seen.append(feed["encoder_hidden_states"].shape)
            return unet.run(names, feed)

    onnx_engine._sessions["unet"] = Recording()
    try:
        onnx_engine.generate(ImageRequest(**WEIGHTED), EventLog())
    finally:
        onnx_engine._sessions["unet"] = unet
    assert onnx_seen == [(2, 154, width)] * 3


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_both_backends_give_the_same_image_for_a_weighted_long_prompt(family, sd_engines, sdxl_engines):
    torch_engine, onnx_engine = sd_engines if family == "sd" else sdxl_engines
    request = ImageRequest(**WEIGHTED)
    reference = png_pixels(torch_engine.generate(request, EventLog()).images[0].png)
    ours = png_pixels(onnx_engine.generate(request, EventLog()).images[0].png)
    assert np.abs(ours - reference).mean() < 0.5 and np.abs(ours - reference).max() <= 4
    plain = png_pixels(torch_engine.generate(ImageRequest(**{**WEIGHTED, "prompt": "a red lighthouse"}),
                                             EventLog()).images[0].png)
    assert np.abs(plain - reference).mean() > 1.0  # the weighted long prompt made another picture


@pytest.mark.parametrize("backend", [0, 1])
def test_an_unbalanced_prompt_is_read_literally_with_a_notice(backend, sd_engines):
    engine = sd_engines[backend]
    events = EventLog()
    result = engine.generate(ImageRequest(prompt="a (red lighthouse", width=64, height=64, steps=2, seed=3), events)
    assert [e.message for e in events.of(NoticeEvent)] == [
        "The prompt's brackets do not balance (the '(' at character 3 is never closed), so it was read literally, "
        "without weights. Close each '(' and '[', or write \\( and \\) for literal ones."]
    assert len(result.images) == 1
    text = sd_engines[0]._text
    literal = text.embeds("a (red lighthouse", "", guided=False).prompt
    plain = pipeline_plain_embeds(sd_engines[0].pipeline, "a (red lighthouse", "")[0].numpy()
    assert np.array_equal(literal, plain)  # exactly what the pipeline makes of the text as written


@pytest.mark.slow
def test_the_command_line_says_an_unbalanced_prompt_was_read_literally(tiny_sd, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "literal.png"
    run = subprocess.run([sys.executable, "-m", "desktop", "image", "--model", str(tiny_sd), "--prompt",
                          "a (red lighthouse", "--steps", "2", "--width", "64", "--height", "64", "--seed", "1",
                          "--out", str(out)], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip().splitlines() == [
        "warning: The prompt's brackets do not balance (the '(' at character 3 is never closed), so it was read "
        "literally, without weights. Close each '(' and '[', or write \\( and \\) for literal ones."]
    assert out.is_file()
