"""`atelier image --init-image FILE --mask FILE --outpaint ...` as a user runs it, on the tiny real pipeline.

One run inpaints and outpaints at once and is read back three ways: the
pixels (the unmasked original is kept byte for byte), the A1111
``parameters`` and the Content Credentials (c2pa-python's own Reader: an
edit of the init image, linked as its parent). Bad input gets one
``error:`` line and exit code 2 before any engine starts.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_sd import png_pixels, tiny_sd  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("diffusers")


def atelier(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def files(tmp_path):
    from PIL import Image

    init, mask, blank = tmp_path / "photo.png", tmp_path / "mask.png", tmp_path / "blank.png"
    pixels = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(init)
    painted = Image.new("L", (64, 64), 0)
    painted.paste(255, (8, 8, 24, 56))
    painted.save(mask)
    Image.new("L", (64, 64), 0).save(blank)
    return init, mask, blank


@pytest.mark.slow
def test_inpaint_and_outpaint_keep_the_original_and_credit_it_as_the_parent(tiny_sd, files, tmp_path,
                                                                             atelier_home):
    from engines.diffusion.png_meta import read_png_parameters
    from tests.test_cli_image_credentials import manifest_of

    init, mask, _ = files
    out = tmp_path / "edited.png"
    run = atelier("image", "--model", str(tiny_sd), "--prompt", "a lighthouse", "--steps", "2", "--width", "64",
                  "--height", "64", "--seed", "5", "--init-image", str(init), "--mask", str(mask),
                  "--outpaint", "right=16, top=8", "--strength", "0.9", "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    [image] = json.loads(run.stdout)["images"]
    assert (image["width"], image["height"]) == (80, 72) and image["credentials"] is True

    result, original = png_pixels(out.read_bytes()), png_pixels(init.read_bytes())
    kept = np.ones((64, 64), dtype=bool)
    kept[8:56, 8:24] = False
    assert np.array_equal(result[8:, :64][kept], original[kept])
    assert np.abs(result[8:, :64][~kept] - original[~kept]).mean() > 5

    parameters = read_png_parameters(out)["parameters"]
    assert parameters.splitlines()[-1] == (
        f"Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 80x72, Model: {tiny_sd.name}, "
        "Denoising strength: 0.9, Mask blur: 4, Inpaint area: Whole picture, Outpaint: right=16 top=8")

    manifest = manifest_of(out)
    [ingredient] = manifest["ingredients"]
    assert ingredient["relationship"] == "parentOf"
    assert ingredient["description"] == f"sha256 {hashlib.sha256(init.read_bytes()).hexdigest()}"
    actions = [a for assertion in manifest["assertions"] if assertion["label"].startswith("c2pa.actions")
               for a in assertion["data"]["actions"]]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]
    assert actions[1]["digitalSourceType"] == (
        "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia")
    assert actions[1]["description"] == ("Inpainted the masked area and outpainted 16 px right, 8 px top "
                                         "(strength 0.9), 2 steps")


@pytest.mark.parametrize("extra, message", [
    (["--mask", "{blank}"],
     "error: the mask is blank (all black): there is nothing to repaint. Paint the area to repaint in white"),
    (["--outpaint", "left=100"], "error: outpaint left must be a multiple of 8 pixels, 0 or more (got 100; try 96)"),
    (["--outpaint", "sideways=8"], "error: --outpaint sideways=8: write SIDE=PIXELS for left, right, top or bottom, "
                                   "separated by commas (e.g. --outpaint left=128,right=128)"),
])
def test_bad_masks_and_margins_exit_2_with_one_error_line(extra, message, tiny_sd, files, atelier_home):
    init, _, blank = files
    extra = [arg.replace("{blank}", str(blank)) for arg in extra]
    run = atelier("image", "--model", str(tiny_sd), "--prompt", "a lighthouse", "--steps", "2", "--width", "64",
                  "--height", "64", "--init-image", str(init), *extra)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [message]
