"""PNG metadata: AUTOMATIC1111's ``parameters`` text plus Atelier's JSON, written and read back."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import pytest
from PIL import Image

from engines.diffusion.png_meta import (
    encode_png,
    format_parameters,
    parse_parameters,
    read_png_parameters,
    request_from_metadata,
)
from engines.diffusion.types import ImageRequest
from engines.errors import EngineError, ErrorKind

EXTRA = {"seed": 123, "model": "sd-v1-5", "backend": "onnx", "device": "cpu", "dtype": "fp32"}


def image() -> Image.Image:
    return Image.new("RGB", (16, 8), (200, 40, 10))


def test_a1111_text_format():
    request = ImageRequest("a cat", negative_prompt="blurry", steps=20, scheduler="Euler a", guidance=7.0, seed=123)
    assert format_parameters(request, EXTRA) == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model: sd-v1-5"
    )
    assert "Negative prompt" not in format_parameters(dataclasses.replace(request, negative_prompt=""), EXTRA)


def test_round_trip_with_awkward_text():
    request = ImageRequest("line one,\nline two: with colon", negative_prompt="ugly, \"bad\"", width=640, height=384,
                           steps=25, guidance=6.5, scheduler="DPM++ 2M Karras", seed=None)
    extra = dict(EXTRA, seed=4_000_000_000, model="my, model: v2")
    png = encode_png(image(), request, extra)
    meta = read_png_parameters(png)
    assert meta["prompt"] == request.prompt and meta["negative_prompt"] == request.negative_prompt
    assert (meta["steps"], meta["sampler"], meta["cfg_scale"]) == (25, "DPM++ 2M Karras", 6.5)
    assert meta["seed"] == 4_000_000_000
    assert (meta["width"], meta["height"], meta["model"]) == (640, 384, "my, model: v2")
    assert meta["parameters"] == format_parameters(request, extra)
    record = meta["atelier"]
    assert record["request"]["prompt"] == request.prompt and record["request"]["seed"] is None
    assert record["seed"] == 4_000_000_000 and record["backend"] == "onnx" and record["dtype"] == "fp32"
    assert record["request"]["init_image_sha256"] is None and "init_image" not in record["request"]
    again = request_from_metadata(meta)
    assert again == dataclasses.replace(request, seed=4_000_000_000)
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.size == (16, 8) and decoded.getpixel((0, 0)) == (200, 40, 10)


def test_init_image_is_replaced_by_its_hash(tmp_path):
    init = b"\x89PNG fake init image bytes"
    request = ImageRequest("a cat", init_image=init, strength=0.6, seed=5)
    path = tmp_path / "out.png"
    path.write_bytes(encode_png(image(), request, EXTRA))
    meta = read_png_parameters(path)
    assert meta["atelier"]["request"]["init_image_sha256"] == hashlib.sha256(init).hexdigest()
    assert meta["denoising_strength"] == 0.6
    assert request_from_metadata(meta).init_image is None  # never embedded: it comes back as txt2img


def test_a1111_file_from_elsewhere():
    text = ("masterpiece, a castle\nNegative prompt: lowres\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 5.5, "
            "Seed: 42, Size: 768x512, Model hash: abc123, Model: dreamy, Clip skip: 2")
    meta = parse_parameters(text)
    assert meta["prompt"] == "masterpiece, a castle" and meta["negative_prompt"] == "lowres"
    assert (meta["seed"], meta["width"], meta["height"], meta["model"]) == (42, 768, 512, "dreamy")
    assert meta["settings"]["Clip skip"] == "2"
    request = request_from_metadata(meta)
    assert (request.steps, request.guidance, request.scheduler, request.seed) == (30, 5.5, "DPM++ 2M Karras", 42)
    assert parse_parameters("just a prompt")["prompt"] == "just a prompt"


def test_png_without_metadata_and_bad_files(tmp_path):
    plain = io.BytesIO()
    image().save(plain, format="PNG")
    meta = read_png_parameters(plain.getvalue())
    assert meta == {"parameters": None, "atelier": None}
    with pytest.raises(EngineError, match="no generation parameters"):
        request_from_metadata(meta)
    jpeg = io.BytesIO()
    image().save(jpeg, format="JPEG")
    with pytest.raises(EngineError, match="not a PNG"):
        read_png_parameters(jpeg.getvalue())
    with pytest.raises(EngineError) as err:
        read_png_parameters(b"garbage")
    assert err.value.kind == ErrorKind.BAD_INPUT
