"""`atelier image` and `atelier convert onnx` as a user runs them, on a tiny real pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_sd import tiny_sd, tiny_sd_onnx  # noqa: F401  (session fixtures)

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("diffusers")


def atelier(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_image_writes_a_png_with_its_parameters(backend, tiny_sd, tiny_sd_onnx, tmp_path):
    from engines.diffusion.png_meta import read_png_parameters

    model = tiny_sd if backend == "torch" else tiny_sd_onnx
    out = tmp_path / f"{backend}.png"
    run = atelier("image", "--model", str(model), "--prompt", "a red lighthouse", "--negative", "blurry",
                  "--steps", "3", "--width", "64", "--height", "64", "--seed", "42", "--backend", backend,
                  "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["backend"] == backend and data["images"][0]["seed"] == 42
    meta = read_png_parameters(out)
    assert "a red lighthouse" in json.dumps(meta) and "42" in json.dumps(meta)


def test_convert_onnx_writes_a_folder_the_onnx_backend_loads(tiny_sd, tmp_path):
    dst = tmp_path / "converted"
    run = atelier("convert", "onnx", str(tiny_sd), str(dst))
    assert run.returncode == 0, run.stderr
    assert (dst / "unet" / "model.onnx").exists() and (dst / "model_index.json").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "/nonexistent/folder"], "not"),
        (["--model", "{tiny}", "--width", "100"], "multiple of 8"),
        (["--model", "{tiny}", "--seed", "99999999999"], "seed"),
        (["--model", "{tiny}", "--init-image", "{missing}"], "init image"),
        (["--model", "{tiny}", "--init-image", "{notimage}"], "image"),
        (["--model", "{empty}"], "empty"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(args, words, tiny_sd, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    notimage = tmp_path / "photo.png"
    notimage.write_bytes(b"definitely not a png")
    values = dict(tiny=tiny_sd, missing=tmp_path / "nope.png", notimage=notimage, empty=empty)
    args = [a.format(**values) for a in args]
    run = atelier("image", "--prompt", "x", "--steps", "2", "--width", "64", "--height", "64", *args)
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0].lower(), run.stderr
