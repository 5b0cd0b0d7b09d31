"""``atelier image --vae tiny|full|PATH``: the choice resolved before any engine starts, and an image made with it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.errors import EngineError
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)
from tests.fixtures.tiny_sdxl import tiny_sdxl  # noqa: F401  (session fixture)
from tests.fixtures.tiny_taesd import tiny_taesd  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]


def atelier(*args):
    return subprocess.run([sys.executable, "-m", "desktop", "image", "--prompt", "a red lighthouse", "--steps", "2",
                           "--width", "64", "--height", "64", "--seed", "7", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def install(models, model_id: str, path: Path):
    from engines.library.installed import InstalledModel

    models.add(InstalledModel(id=model_id, name=model_id.upper(), path=str(path), size_bytes=1, engine="",
                              format="diffusers", source="folder", added_at=time.time(), kind="vae"))


def test_tiny_resolves_to_the_installed_tiny_vae_of_the_models_family(tiny_sd, tiny_sdxl, tiny_taesd, tmp_path):
    from engines.images.vae_choice import resolve_vae
    from engines.library.installed import InstalledModels

    models, models_dir = InstalledModels(tmp_path / "models.json"), tmp_path / "models"
    assert resolve_vae("full", tiny_sd, models, models_dir) == "full"
    with pytest.raises(EngineError) as caught:
        resolve_vae("tiny", tiny_sdxl, models, models_dir)
    assert caught.value.message == (
        "No tiny VAE for SDXL models is installed. Get it with 'atelier models pull taesdxl' (madebyollin/taesdxl, "
        "10 MB), or give --vae the path of an AutoencoderTiny folder.")
    install(models, "taesd", tiny_taesd)
    assert resolve_vae("tiny", tiny_sd, models, models_dir) == str(tiny_taesd)
    with pytest.raises(EngineError):  # TAESD is not TAESDXL: the SDXL model still has none
        resolve_vae("tiny", tiny_sdxl, models, models_dir)
    assert resolve_vae(str(tiny_taesd), tiny_sdxl, models) == str(tiny_taesd.resolve())  # a path is the user's call


def test_tiny_also_finds_a_copy_in_the_models_folder_under_its_id(tiny_sdxl, tiny_taesd, tmp_path):
    import shutil

    from engines.images.vae_choice import resolve_vae
    from engines.library.installed import InstalledModels

    models, models_dir = InstalledModels(tmp_path / "models.json"), tmp_path / "models"
    shutil.copytree(tiny_taesd, models_dir / "taesdxl")  # where a download under that id lands
    assert resolve_vae("tiny", tiny_sdxl, models, models_dir) == str(models_dir / "taesdxl")
    (models_dir / "taesdxl" / "diffusion_pytorch_model.safetensors").unlink()  # unusable: not taken
    with pytest.raises(EngineError):
        resolve_vae("tiny", tiny_sdxl, models, models_dir)


@pytest.mark.slow
@pytest.mark.parametrize(("vae", "message"), [
    ("tiny", "No tiny VAE for SD 1.x/2.x models is installed. Get it with 'atelier models pull taesd' "
             "(madebyollin/taesd, 10 MB), or give --vae the path of an AutoencoderTiny folder."),
    ("{missing}", "The tiny VAE {missing} does not exist. --vae takes 'tiny', 'full' or the path of a tiny VAE "
                  "folder (TAESD, TAESDXL)."),
    ("{full_vae}", "{full_vae} is not a tiny VAE: its config.json describes AutoencoderKL, not an AutoencoderTiny "
                   "(TAESD, TAESDXL). --vae takes 'tiny', 'full' or the path of a tiny VAE folder (TAESD, TAESDXL)."),
])
def test_a_vae_that_cannot_be_used_exits_2_with_one_error_line_before_any_engine_starts(
        vae, message, tiny_sd, tmp_path, atelier_home):
    values = dict(missing=tmp_path / "nowhere", full_vae=tiny_sd / "vae")
    run = atelier("--model", str(tiny_sd), "--vae", vae.format(**values), "--out", str(tmp_path / "x.png"))
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == ["error: " + message.format(**values)]
    assert not (atelier_home / "logs" / "engine-host-cli-image.log").exists()
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_an_image_made_with_the_tiny_vae_records_it(tiny_sd, tiny_taesd, tmp_path):
    from engines.diffusion.png_meta import read_png_parameters

    out = tmp_path / "tiny.png"
    run = atelier("--model", str(tiny_sd), "--vae", str(tiny_taesd), "--backend", "torch", "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["images"][0]["seed"] == 7
    meta = read_png_parameters(out)
    assert meta["atelier"]["request"]["vae"] == str(tiny_taesd.resolve())
