"""Inpainting and outpainting: the mask checks, the canvas, the paste-back, and both kinds of model end to end.

The engine tests run the real PyTorch engine on the tiny random-weight
pipelines: a dedicated inpainting model (a 9-channel UNet, built by
``tiny_sd_inpaint``) and the ordinary tiny model (masked img2img). The
images are noise; what is checked is what a user relies on: the pixels
outside the mask are the init image's own, byte for byte, the masked part
changed, and the PNG and the result say what was done.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from engines.diffusion.inpaint import (
    BLANK_MASK,
    FULL_MASK,
    ONNX_REFUSAL,
    InpaintInputs,
    mask_problems,
    memory_problem,
    paste_back,
    prepare,
)
from engines.diffusion.types import ImageRequest
from engines.errors import EngineError, ErrorKind
from tests.fixtures.tiny_sd import (  # noqa: F401  (session fixtures)
    EventLog,
    make_init_png,
    one_torch_thread,
    png_pixels,
    tiny_sd,
    tiny_sd_inpaint,
    tiny_sd_onnx,
)


def mask_png(width: int = 64, height: int = 64, box=(16, 16, 48, 48), fill: int = 0) -> bytes:
    from PIL import Image

    mask = Image.new("L", (width, height), fill)
    if box:
        mask.paste(255, box)
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def request(**changes) -> ImageRequest:
    values = dict(prompt="a lighthouse", width=64, height=64, steps=3, seed=7, preview_every=0,
                  init_image=make_init_png(64, 64), mask=mask_png())
    values.update(changes)
    return ImageRequest(**values)


# ---- bad input: the sentences every front end shows ------------------------------------


@pytest.mark.parametrize("changes, problem", [
    (dict(mask=mask_png(box=None)), BLANK_MASK),
    (dict(mask=mask_png(fill=255)), FULL_MASK),
    (dict(mask=mask_png(32, 64)),
     "the mask is 32×64 pixels but the init image is 64×64; a mask must be the same size as the image it masks"),
    (dict(init_image=None), "a mask needs an init image to paint on (--init-image, or a starting image)"),
    (dict(init_image=None, mask=None, outpaint=(64, 0, 0, 0)),
     "outpainting needs an init image to paint on (--init-image, or a starting image)"),
    (dict(mask=b""), "the mask is empty (0 bytes)"),
    (dict(mask=b"not an image at all"), "The mask could not be read (UnidentifiedImageError: "),
    (dict(mask=None, outpaint=(12, 0, 0, 0)), "outpaint left must be a multiple of 8 pixels, 0 or more (got 12; try 16)"),
    (dict(mask=None, outpaint=(0, 0, -8, 0)), "outpaint top must be a multiple of 8 pixels, 0 or more (got -8; try 0)"),
    (dict(mask=None, outpaint=(0, 2000, 0, 0)),
     "with outpainting the image would be 2064×64 pixels; at most 2048 pixels a side"),
])
def test_bad_masks_and_margins_are_refused_in_words(changes, problem):
    problems = request(**changes).validate()
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_blank_mask_is_fine_when_outpainting_and_the_mask_size_is_the_init_images_own():
    assert request(mask=mask_png(box=None), outpaint=(0, 0, 8, 8)).validate() == []
    # The init image is 80×48 and scaled to 64×64 like any init image: the mask must match the file, not the request.
    init = make_init_png(80, 48)
    assert mask_problems(init, mask_png(80, 48)) == []
    assert request(init_image=init, mask=mask_png(80, 48)).validate() == []


def test_an_outpaint_too_large_for_memory_is_refused_with_the_arithmetic(tiny_sd):
    from engines.machine.hardware import probe

    assert memory_problem(str(tiny_sd), 1024, 1024, available=64 * 1024**3, report=probe()) is None
    problem = memory_problem(str(tiny_sd), 2048, 1536, available=100 * 1024**2, report=probe())
    assert problem.startswith("the outpainted image would be 2048×1536 pixels, which needs about ")
    assert " weights + " in problem and " activations + " in problem
    assert problem.endswith(" is free; outpaint fewer pixels or make the image smaller")


# ---- the canvas and the paste-back ------------------------------------------------------


def test_outpainting_extends_the_edges_and_masks_the_new_margins():
    inputs = prepare(request(mask=None, outpaint=(16, 0, 8, 24)))
    assert (inputs.width, inputs.height) == (80, 96)
    canvas, mask = np.asarray(inputs.canvas), np.asarray(inputs.mask)
    original = png_pixels(make_init_png(64, 64)).astype(np.uint8)
    assert np.array_equal(canvas[8:72, 16:80], original)
    assert np.array_equal(canvas[8:72, 0], original[:, 0])  # the left edge repeated outwards
    assert np.array_equal(canvas[0, 16:], original[0])
    assert (mask[8:72, 16:80] == 0).all()
    assert (mask[:8] == 255).all() and (mask[72:] == 255).all() and (mask[:, :16] == 255).all()


def test_paste_back_keeps_every_pixel_outside_the_mask_and_feathers_inside_it():
    from PIL import Image

    inputs = prepare(request())
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    out = np.asarray(paste_back(noise, inputs)).astype(int)
    original, generated = np.asarray(inputs.canvas).astype(int), np.asarray(noise).astype(int)
    outside = np.asarray(inputs.mask) == 0
    assert np.array_equal(out[outside], original[outside])
    assert np.array_equal(out[20:44, 20:44], generated[20:44, 20:44])  # 4 px in from the edge: all generated
    edge = out[16, 30] - original[16, 30], generated[16, 30] - original[16, 30]
    assert np.allclose(edge[0], edge[1] / 4, atol=1)  # the mask's edge takes a quarter of the new image
    hard = np.asarray(paste_back(noise, InpaintInputs(inputs.canvas, inputs.mask, 64, 64), feather=0)).astype(int)
    assert np.array_equal(hard[~outside], generated[~outside])


# ---- end to end on the real engine ------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tiny_sd, tiny_sd_inpaint, one_torch_thread):
    from engines.diffusion.torch_engine import TorchDiffusionEngine
    from engines.diffusion.types import ImageLoadSpec

    loaded = {}
    for name, folder in (("inpaint", tiny_sd_inpaint), ("ordinary", tiny_sd)):
        engine = TorchDiffusionEngine()
        engine.load(ImageLoadSpec(str(folder), backend="torch", dtype="fp32"), EventLog())
        loaded[name] = engine
    yield loaded
    for engine in loaded.values():
        engine.unload()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["inpaint", "ordinary"])
def test_inpainting_repaints_the_mask_and_keeps_every_other_pixel(model, engines):
    from engines.diffusion.png_meta import read_png_parameters

    job = request(strength=1.0 if model == "inpaint" else 0.8)
    result = engines[model].generate(job, EventLog())
    [image] = result.images
    out, original = png_pixels(image.png), png_pixels(job.init_image)
    outside = np.ones((64, 64), dtype=bool)
    outside[16:48, 16:48] = False
    assert (image.width, image.height) == (64, 64)
    assert np.array_equal(out[outside], original[outside])
    assert np.abs(out[~outside] - original[~outside]).mean() > 5  # the masked square was repainted
    if model == "inpaint":
        assert engines[model].pipeline.unet.config.in_channels == 9
    meta = read_png_parameters(image.png)
    assert meta["parameters"].endswith(", Denoising strength: " + ("1" if model == "inpaint" else "0.8")
                                       + ", Mask blur: 4, Inpaint area: Whole picture")
    record = meta["atelier"]["request"]
    assert len(record["mask_sha256"]) == 64 and "mask" not in record


@pytest.mark.slow
def test_outpainting_adds_the_margins_and_keeps_the_original_in_place(engines):
    from engines.diffusion.png_meta import read_png_parameters

    job = request(mask=None, outpaint=(16, 8, 0, 24), strength=1.0)
    [image] = engines["inpaint"].generate(job, EventLog()).images
    out, original = png_pixels(image.png), png_pixels(job.init_image)
    assert (image.width, image.height) == (88, 88) and out.shape == (88, 88, 3)
    assert np.array_equal(out[0:64, 16:80], original)
    assert np.abs(out[64:, :] - original[-1:, :].mean()).mean() > 5  # the new bottom margin was painted
    parameters = read_png_parameters(image.png)["parameters"]
    assert "Size: 88x88" in parameters and parameters.endswith("Outpaint: left=16 right=8 bottom=24")


@pytest.mark.slow
def test_an_inpainting_model_refuses_text_to_image_in_words(engines):
    with pytest.raises(EngineError) as err:
        engines["inpaint"].generate(ImageRequest("a lighthouse", width=64, height=64, steps=2), EventLog())
    assert err.value.kind == ErrorKind.BAD_INPUT
    assert err.value.message == ("tiny-sd-inpaint is an inpainting model: it repaints the masked part of an init "
                                 "image. Give it an init image and a mask (or outpaint margins), or choose an "
                                 "ordinary model.")


@pytest.mark.slow
def test_the_onnx_backend_refuses_inpainting_naming_the_pytorch_backend(tiny_sd_onnx, one_torch_thread):
    pytest.importorskip("onnxruntime")
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine
    from engines.diffusion.types import ImageLoadSpec

    engine = OnnxDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd_onnx), backend="onnx"), EventLog())
    try:
        with pytest.raises(EngineError) as err:
            engine.generate(request(), EventLog())
    finally:
        engine.unload()
    assert err.value.kind == ErrorKind.UNSUPPORTED and err.value.message == ONNX_REFUSAL
