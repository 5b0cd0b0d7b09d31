"""``atelier image --lora FILE_OR_ID:WEIGHT`` as a user runs it, on the tiny pipeline with LoRAs made by peft."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the command runs the real tiny pipeline


def atelier(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def image(model, out, *extra):
    return atelier("image", "--model", str(model), "--prompt", "a lighthouse", "--steps", "2", "--width", "64",
                   "--height", "64", "--seed", "5", "--out", str(out), "--no-credentials", *extra)


def test_two_loras_with_their_weights_are_applied_and_recorded(tiny_sd, tmp_path):  # noqa: F811
    from engines.diffusion.png_meta import read_png_parameters, request_from_metadata
    from tests.fixtures.tiny_lora import write_kohya_lora, write_peft_lora

    ink = write_peft_lora(tiny_sd, tmp_path / "ink.safetensors")
    glow = write_kohya_lora(tiny_sd, tmp_path / "glow.safetensors", seed=1)
    imported = atelier("models", "import", str(glow))  # an installed LoRA is named by its id
    assert imported.stdout == "Added glow (LoRA) as 'local/glow.safetensors'.\n", imported.stderr
    run = image(tiny_sd, tmp_path / "with.png", "--lora", f"{ink}:0.8", "--lora", "local/glow.safetensors")
    assert run.returncode == 0, run.stderr
    base = image(tiny_sd, tmp_path / "base.png")
    assert base.returncode == 0, base.stderr
    meta = read_png_parameters(tmp_path / "with.png")
    assert meta["parameters"].splitlines()[0] == "a lighthouse <lora:ink:0.8> <lora:glow:1>"
    assert [(Path(lora.path).name, lora.weight) for lora in request_from_metadata(meta).loras] == [
        ("ink.safetensors", 0.8), ("glow.safetensors", 1.0)]
    from PIL import Image

    assert Image.open(tmp_path / "with.png").tobytes() != Image.open(tmp_path / "base.png").tobytes()


@pytest.mark.parametrize("lora,message", [
    ("{tmp}/style.pt:1", "style.pt is a pickled checkpoint. Atelier never loads pickled weights (.bin/.ckpt) because "
                         "they can run code; use a .safetensors version."),
    ("{tmp}/ink.safetensors:strong", "--lora {tmp}/ink.safetensors:strong: the weight after the last ':' must be a "
                                     "number (e.g. --lora style.safetensors:0.8)"),
    ("{tmp}/ink.safetensors:11", "the weight of the LoRA 'ink' must be between -10 and 10 (got 11.0)"),
    ("{tmp}/x4.safetensors", "{tmp}/x4.safetensors is an upscaler, but this needs a LoRA."),
    ("{tmp}/xl-style.safetensors:0.5", "xl-style.safetensors is a LoRA for SDXL, but tiny-sd is an SD model with "
                                       "32-wide text embeddings: a LoRA works only with the model family it was "
                                       "trained for."),
])
def test_bad_loras_exit_2_with_one_error_line(tiny_sd, tmp_path, lora, message):  # noqa: F811
    from tests.fixtures.esrgan import write_upscaler
    from tests.fixtures.stripped_models import write_kohya_lora
    from tests.fixtures.tiny_lora import write_peft_lora

    (tmp_path / "style.pt").write_bytes(b"\x80\x04not to be unpickled")
    write_upscaler(tmp_path / "x4.safetensors")
    write_kohya_lora(tmp_path / "xl-style.safetensors", "sdxl")
    if "ink" in lora:
        write_peft_lora(tiny_sd, tmp_path / "ink.safetensors")
    run = image(tiny_sd, tmp_path / "out.png", "--lora", lora.format(tmp=tmp_path))
    assert (run.returncode, run.stderr.strip().splitlines()) == (2, [f"error: {message.format(tmp=tmp_path)}"])
    assert not (tmp_path / "out.png").exists()
