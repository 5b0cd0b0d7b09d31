"""The ESRGAN upscaler engine in this process: strict loading, tiles, scales, metadata, memory, cancel.

The networks are random-weight RRDBNets written in the real key layouts by
tests/fixtures/esrgan.py. The engine in its host, through the scheduler,
and ``atelier upscale`` are in tests/test_upscale_cli.py.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from engines.diffusion.tiles import tile_grid
from engines.errors import EngineError, ErrorKind

PARAMETERS = "a lighthouse at dusk\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 11, Size: 64x48, Model: tiny"


def png_bytes(width: int = 64, height: int = 48, mode: str = "RGB", parameters: str | None = PARAMETERS,
              seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    image = Image.fromarray(pixels, mode)
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def pixels_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png))).astype(int)


# ---- the tile grid (no torch) ------------------------------------------------


@pytest.mark.parametrize("height,width,tile,context,align", [(48, 64, 32, 10, 1), (50, 70, 16, 5, 2),
                                                             (64, 64, 64, 8, 4), (20, 100, 24, 40, 4)])
def test_tile_cores_cover_the_image_exactly_once_and_stay_on_the_grid(height, width, tile, context, align):
    grid = tile_grid(height, width, tile, context, align)
    covered = np.zeros((height, width), dtype=int)
    for piece in grid:
        covered[piece.y0:piece.y1, piece.x0:piece.x1] += 1
        edges = (piece.y0, piece.y1, piece.x0, piece.x1, piece.in_y0, piece.in_y1, piece.in_x0, piece.in_x1)
        assert all(edge % align == 0 for edge in edges)
        assert piece.in_y0 <= piece.y0 and piece.in_y1 >= piece.y1 and piece.in_x0 <= piece.x0
        assert piece.y0 - piece.in_y0 >= min(context, piece.y0)  # the context, unless clipped at the edge
        assert piece.in_x1 - piece.x1 >= min(context, width - piece.x1)
    assert (covered == 1).all()


def test_a_tile_as_large_as_the_image_is_the_whole_image():
    assert len(tile_grid(48, 64, 512, 40)) == 1


def test_a_side_off_the_unshuffle_grid_is_refused():
    with pytest.raises(ValueError, match="a 63×48 image is not a multiple of 2 on each side"):
        tile_grid(48, 63, 32, 8, 2)


# ---- the engine ------------------------------------------------------------------


def load(path, **spec):
    from engines.diffusion.upscale import UpscaleEngine
    from engines.diffusion.upscale_types import UpscaleLoadSpec

    engine = UpscaleEngine()
    events = []
    info = engine.load(UpscaleLoadSpec(str(path), **spec), events.append)
    return engine, info, events


def upscale(engine, image: bytes, **request):
    from engines.diffusion.upscale_types import UpscaleRequest

    events = []
    result = engine.generate(UpscaleRequest(image, **request), events.append)
    return result, events


@pytest.mark.slow
@pytest.mark.parametrize("scale,size", [(4, (64, 48)), (2, (63, 45))])
def test_tiled_output_equals_the_whole_image_within_rounding(tmp_path, scale, size):
    """Context at least the network's receptive radius: every output pixel sees what it sees untiled."""
    from tests.fixtures.esrgan import write_upscaler

    engine, info, _ = load(write_upscaler(tmp_path / f"x{scale}.safetensors", scale=scale))
    assert (info.scale, info.layout, info.blocks, info.features) == (scale, "basicsr", 1, 16)
    source = png_bytes(*size)
    whole, whole_events = upscale(engine, source)
    tiled, tiled_events = upscale(engine, source, tile=32)
    assert (whole.tiles, tiled.tiles, tiled.tile) == (1, 4, 32)
    assert (tiled.width, tiled.height) == (size[0] * scale, size[1] * scale) == (whole.width, whole.height)
    a, b = pixels_of(whole.png), pixels_of(tiled.png)
    assert np.abs(a - b).max() <= 1
    assert a.std() > 5  # an image, not a flat colour that would equal anything
    assert [e.message for e in tiled_events] == [f"Upscaling: tile {n} of 4" for n in range(1, 5)]
    assert [e.fraction for e in tiled_events] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.slow
def test_the_original_esrgan_key_layout_gives_the_same_image(tmp_path):
    from tests.fixtures.esrgan import write_upscaler

    new, _, _ = load(write_upscaler(tmp_path / "new.safetensors", blocks=2))
    old, info, _ = load(write_upscaler(tmp_path / "old.safetensors", blocks=2, layout="esrgan"))
    assert (info.layout, info.scale, info.blocks) == ("esrgan", 4, 2)
    source = png_bytes()
    assert (pixels_of(upscale(new, source)[0].png) == pixels_of(upscale(old, source)[0].png)).all()


def _write_state(path, state):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("change,message", [
    ("missing", "bad.safetensors is not a complete ESRGAN (RRDBNet) upscaler: it lacks body.0.rdb2.conv3.weight. "
                "The file may be damaged or of another architecture."),
    ("extra", "bad.safetensors is not a complete ESRGAN (RRDBNet) upscaler: it has unexpected tensors: "
              "body.0.rdb1.conv6.weight. The file may be damaged or of another architecture."),
    ("shape", "bad.safetensors is not a complete ESRGAN (RRDBNet) upscaler: it has wrongly shaped conv_hr.weight. "
              "The file may be damaged or of another architecture."),
])
def test_loading_is_strict(tmp_path, change, message):
    import torch

    from tests.fixtures.esrgan import basicsr_state

    state = basicsr_state()
    if change == "missing":
        del state["body.0.rdb2.conv3.weight"]
    elif change == "extra":
        state["body.0.rdb1.conv6.weight"] = torch.zeros(1)
    else:
        state["conv_hr.weight"] = torch.zeros(16, 16, 1, 1)
    with pytest.raises(EngineError) as caught:
        load(_write_state(tmp_path / "bad.safetensors", state))
    assert (caught.value.kind, caught.value.message) == (ErrorKind.MODEL_FILE, message)


@pytest.mark.slow
def test_a_file_that_is_not_an_esrgan_is_refused_by_name(tmp_path):
    import torch

    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}
    with pytest.raises(EngineError) as caught:
        load(_write_state(tmp_path / "style.safetensors", lora))
    assert caught.value.kind == ErrorKind.UNSUPPORTED
    assert caught.value.message == ("style.safetensors is not an ESRGAN-family upscaler: Atelier runs Real-ESRGAN, "
                                    "ESRGAN and other RRDBNet models (.safetensors) only.")


@pytest.mark.slow
def test_pickles_and_damaged_files_are_refused_without_being_opened(tmp_path):
    pickled = tmp_path / "RealESRGAN_x4plus.pth"
    pickled.write_bytes(b"\x80\x04not to be unpickled")
    with pytest.raises(EngineError) as caught:
        load(pickled)
    assert caught.value.kind == ErrorKind.UNSUPPORTED
    assert caught.value.message == ("RealESRGAN_x4plus.pth is a pickled checkpoint. Atelier never loads pickled "
                                    "weights (.bin/.ckpt) because they can run code; use a .safetensors version.")
    damaged = tmp_path / "cut.safetensors"
    damaged.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"conv_first.weight\"")
    with pytest.raises(EngineError) as caught:
        load(damaged)
    assert caught.value.kind == ErrorKind.MODEL_FILE
    assert caught.value.message.startswith("cut.safetensors could not be read as a .safetensors file (")
    assert caught.value.message.endswith("). The file may be damaged or incomplete.")


@pytest.mark.slow
@pytest.mark.parametrize("model_scale,asked,passes", [(4, 2, 1), (2, 4, 2), (4, 3, 1)])
def test_other_scales_run_the_model_as_often_as_needed_then_shrink(tmp_path, model_scale, asked, passes):
    from tests.fixtures.esrgan import write_upscaler

    engine, _, _ = load(write_upscaler(tmp_path / "m.safetensors", scale=model_scale))
    result, events = upscale(engine, png_bytes(40, 32), scale=asked)
    assert (result.width, result.height, result.scale, result.passes) == (40 * asked, 32 * asked, asked, passes)
    assert Image.open(io.BytesIO(result.png)).size == (40 * asked, 32 * asked)
    if passes == 2:
        assert events[-1].message == "Upscaling: pass 2 of 2, tile 1 of 1"


@pytest.mark.slow
def test_the_result_keeps_the_parameters_and_records_the_step(tmp_path):
    from engines.diffusion.png_meta import encode_png, read_png_parameters, request_from_metadata
    from engines.diffusion.types import ImageRequest
    from tests.fixtures.esrgan import write_upscaler

    request = ImageRequest(prompt="a lighthouse, at dusk", width=64, height=48, steps=4, seed=11)
    made = Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    source = encode_png(made, request, {"seed": 11, "model": "tiny", "backend": "torch"})
    engine, _, _ = load(write_upscaler(tmp_path / "RealESRGAN_x4plus.safetensors"))
    result, _ = upscale(engine, source, scale=2)
    before, after = read_png_parameters(source), read_png_parameters(result.png)
    assert after["parameters"] == before["parameters"] == result.parameters
    assert request_from_metadata(after) == request_from_metadata(before)
    text = Image.open(io.BytesIO(result.png)).text
    assert text["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: RealESRGAN_x4plus"
    assert after["atelier"]["postprocessing"] == [{
        "step": "upscale", "scale": 2, "upscaler": "RealESRGAN_x4plus", "architecture": "RRDBNet", "model_scale": 4,
        "passes": 1, "source_width": 64, "source_height": 48, "width": 128, "height": 96, "tile": result.tile}]
    again, _ = upscale(engine, result.png, scale=2)  # a second upscale adds its step after the first
    steps = json.loads(Image.open(io.BytesIO(again.png)).text["atelier"])["postprocessing"]
    assert [(s["source_width"], s["width"]) for s in steps] == [(64, 128), (128, 256)]


@pytest.mark.slow
def test_transparency_is_kept(tmp_path):
    from tests.fixtures.esrgan import write_upscaler

    engine, _, _ = load(write_upscaler(tmp_path / "x4.safetensors"))
    result, _ = upscale(engine, png_bytes(mode="RGBA", parameters=None))
    image = Image.open(io.BytesIO(result.png))
    assert (image.mode, image.size) == ("RGBA", (256, 192))
    assert image.text["postprocessing"] == "Postprocess upscale by: 4, Postprocess upscaler: x4"
    assert "parameters" not in image.text and result.parameters is None


@pytest.mark.slow
def test_an_image_too_large_for_the_free_memory_is_refused_with_the_arithmetic(tmp_path, monkeypatch):
    from engines.diffusion import upscale as module
    from tests.fixtures.esrgan import write_upscaler

    engine, _, _ = load(write_upscaler(tmp_path / "x4.safetensors"))
    monkeypatch.setattr(module, "_free_memory", lambda: (1_000_000_000, 8_000_000_000))
    with pytest.raises(EngineError) as caught:
        upscale(engine, png_bytes(), tile=32)
    assert caught.value.kind == ErrorKind.BAD_INPUT
    message = caught.value.message
    assert message.startswith("Upscaling 64×48 by 4 needs more memory than is free: ")
    assert " weights + " in message and "for a 32-pixel tile + " in message and " for the 256×192 result + " in message
    assert message.endswith("; you have 1.0 GB free memory. Use a smaller scale or a smaller image, or close "
                            "other programs.")


@pytest.mark.slow
def test_a_result_beyond_what_viewers_open_is_refused_before_it_runs(tmp_path):
    from tests.fixtures.esrgan import write_upscaler

    engine, _, _ = load(write_upscaler(tmp_path / "x4.safetensors"))
    flat = io.BytesIO()
    Image.new("RGB", (4200, 4200), (90, 120, 150)).save(flat, "PNG")  # 17.6 megapixels in a few kilobytes
    with pytest.raises(EngineError) as caught:
        upscale(engine, flat.getvalue())
    assert (caught.value.kind, caught.value.message) == (
        ErrorKind.BAD_INPUT, "Upscaling 4200×4200 by 4 would make a 16800×16800 image (282 megapixels); Atelier makes "
                             "at most 268 megapixels. Use a smaller scale or a smaller image.")


@pytest.mark.slow
def test_cancel_stops_within_a_tile_and_returns_no_image(tmp_path):
    from engines.diffusion.upscale_types import UpscaleRequest
    from tests.fixtures.esrgan import write_upscaler

    engine, _, _ = load(write_upscaler(tmp_path / "x4.safetensors", blocks=2))
    cancel = threading.Event()
    seen = []

    def emit(event):
        seen.append(event.message)
        cancel.set()  # after the first tile: the second stops at its first block

    with pytest.raises(EngineError) as caught:
        engine.generate(UpscaleRequest(png_bytes(), tile=32), emit, cancel)
    assert (caught.value.kind, caught.value.message) == (ErrorKind.CANCELLED, "Upscaling was stopped.")
    assert seen == ["Upscaling: tile 1 of 4"]
    result, _ = upscale(engine, png_bytes(), tile=32)  # the engine stays usable
    assert result.tiles == 4
