"""TAESD and TAESDXL in the library: catalog entries with verdicts, recognised folders, and what '--vae tiny' finds."""

from __future__ import annotations

import json
import shutil

import pytest

from engines.errors import EngineError
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)
from tests.fixtures.tiny_taesd import tiny_taesd  # noqa: F401  (session fixture)


def test_the_catalog_lists_taesd_and_taesdxl_for_their_families():
    from engines.library.catalog import default_catalog_path, load_catalog

    catalog = load_catalog(default_catalog_path())
    assert catalog.error is None
    entries = {e.id: e for e in catalog.entries if e.kind == "vae"}
    assert sorted(entries) == ["taesd", "taesdxl"]
    assert (entries["taesd"].repo, entries["taesd"].tiny_vae_for) == ("madebyollin/taesd", "sd")
    assert (entries["taesdxl"].repo, entries["taesdxl"].tiny_vae_for) == ("madebyollin/taesdxl", "sdxl")
    for entry in entries.values():
        assert sorted(f.path for f in entry.files) == ["config.json", "diffusion_pytorch_model.safetensors"]
        assert entry.url("diffusion_pytorch_model.safetensors").endswith(
            f"/{entry.repo}/resolve/main/diffusion_pytorch_model.safetensors")


def test_a_tiny_vae_entry_must_be_a_safetensors_folder_with_its_family():
    from pydantic import ValidationError

    from engines.library.catalog import CatalogEntry, default_catalog_path

    raw = next(e for e in json.loads(default_catalog_path().read_text(encoding="utf-8"))["entries"]
               if e["id"] == "taesd")
    CatalogEntry(**raw)
    for broken in ({**raw, "tiny_vae_for": None},
                   {**raw, "files": [{"path": "config.json", "size": 659},
                                     {"path": "diffusion_pytorch_model.bin", "size": 9790000}]}):
        with pytest.raises(ValidationError, match="a tiny VAE entry must be a diffusers folder of config.json and "
                                                  "diffusion_pytorch_model.safetensors"):
            CatalogEntry(**broken)


def test_the_verdict_says_it_runs_on_the_cpu_beside_an_image_model(tmp_path):
    from engines.library.service import ModelLibrary
    from engines.workspace import open_workspace

    library = ModelLibrary(open_workspace().paths, open_workspace().settings, open_workspace().models)
    entry = library.catalog.get("taesd")
    verdict = library.verdict_for_entry(entry)
    assert verdict.fits and verdict.label == "CPU only"
    assert verdict.explanation == ("A tiny VAE: 9.8 MB weights + 134 MB for its widest layer at 512² = 144 MB beside "
                                   "the image model it previews and decodes for (atelier image --vae tiny).")


def test_a_tiny_vae_folder_is_recognised_and_a_pickled_one_is_refused_with_the_reason(tiny_taesd, tmp_path):
    from engines.library.importer import check_recordable
    from engines.library.probes import identify

    probed = identify(tiny_taesd)
    assert (probed.kind, probed.format, probed.engine) == ("vae", "diffusers", "diffusers")
    assert probed.description == "tiny VAE (TAESD layout) for fast previews and decodes"
    pickled = tmp_path / "pickled-taesd"
    pickled.mkdir()
    shutil.copy(tiny_taesd / "config.json", pickled / "config.json")
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"never opened")
    with pytest.raises(EngineError) as caught:
        check_recordable(identify(pickled))
    assert caught.value.message == (
        f"The tiny VAE {pickled} has no diffusion_pytorch_model.safetensors. Atelier loads safetensors weights "
        "only, never pickled .bin or .pth files.")


def test_a_download_recorded_under_its_catalog_id_is_what_tiny_finds(tiny_sd, tiny_taesd, tmp_path):
    from engines.images.vae_choice import resolve_vae
    from engines.library.service import ModelLibrary
    from engines.workspace import open_workspace

    workspace = open_workspace()
    library = ModelLibrary(workspace.paths, workspace.settings, workspace.models)
    folder = workspace.paths.models / "downloaded-taesd"
    shutil.copytree(tiny_taesd, folder)
    record = library.register_path(folder, "download", "taesd", "TAESD (tiny VAE for SD 1.x/2.x)")
    assert (record.id, record.kind, record.engine) == ("taesd", "vae", "diffusers")
    assert record not in workspace.models.runnable("image")  # never offered as an image model
    assert resolve_vae("tiny", tiny_sd, workspace.models, workspace.paths.models) == str(folder)
