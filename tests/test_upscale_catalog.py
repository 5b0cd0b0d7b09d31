"""Upscalers in the catalog: the shipped Real-ESRGAN entry, its verdict, the schema's rules, and a pull that installs one.

The pull is served from 127.0.0.1 (``HF_ENDPOINT``) with a random-weight
RRDBNet in the real key layout (tests/fixtures/esrgan.py); the entry is the
shipped one with that file's SHA-256, so the download is verified as a real
one is, then identified and recorded as an upscaler the engine runs.
"""

from __future__ import annotations

import copy
import json

import pytest

from engines.library.catalog import load_catalog
from engines.workspace import open_workspace
from tests.fixtures.http_server import sha256

ENTRY_ID = "realesrgan-x4plus"


def shipped_entry() -> dict:
    from engines.library.catalog import default_catalog_path

    raw = json.loads(default_catalog_path().read_text(encoding="utf-8"))
    return next(e for e in raw["entries"] if e["id"] == ENTRY_ID)


def test_the_shipped_catalog_lists_real_esrgan_with_a_verdict():
    catalog = load_catalog()
    assert catalog.error is None
    entry = catalog.get(ENTRY_ID)
    assert (entry.kind, entry.engine, entry.format, entry.main_file.path) == (
        "upscaler", "esrgan", "safetensors", "upscaler.safetensors")
    assert (entry.upscaler.scale, entry.upscaler.blocks, entry.upscaler.features) == (4, 23, 64)
    assert entry.files[0].sha256 == "d30241986d4f29502949e1b46558a8c2a42067605a78428229f758429c94dda4"
    verdict = open_workspace().library().verdict_for_entry(entry)
    assert verdict.verdict in ("cpu_only", "gpu_full", "wont_fit")
    assert verdict.explanation.startswith("0.07 GB weights + ")
    assert " for the 4096×4096 result + " in verdict.explanation
    assert " to upscale a 1024×1024 image; " in verdict.explanation


def test_the_upscaler_speed_is_its_arithmetic_at_the_measured_rate():
    from engines.machine.upscale_fit import upscale_flops, upscale_speed

    assert round(upscale_flops(23, 64, 4) / 1024**2 / 1e6, 1) == 35.9  # MFLOP per source pixel, Real-ESRGAN x4plus
    assert round(upscale_flops(23, 64, 2) / 1024**2 / 1e6, 1) == 9.0  # x2plus: the blocks run on a quarter
    speed = upscale_speed(23, 64, 4, 60e9)
    assert (speed.unit, speed.words) == ("s/image", "about 10 min 27 s per image here")
    assert speed.basis == "38 TFLOP for a 1024×1024 image at 0.06 TFLOP/s measured here"


@pytest.mark.parametrize("change,words", [
    (lambda e: e["files"].append({"path": "extra.safetensors", "size": 1}), "one .safetensors file"),
    (lambda e: e.pop("upscaler"), "with 'upscaler'"),
    (lambda e: e.update(format="diffusers", engine="diffusers"), "an upscaler entry must be one .safetensors file"),
])
def test_an_upscaler_entry_must_be_one_safetensors_file_with_its_spec(tmp_path, change, words):
    entry = copy.deepcopy(shipped_entry())
    change(entry)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    catalog = load_catalog(path)
    assert catalog.entries == [] and words in catalog.error


@pytest.mark.slow
def test_pulling_the_catalog_upscaler_installs_it_under_its_id(tmp_path, http_server, monkeypatch):
    from tests.fixtures.esrgan import write_upscaler

    data = write_upscaler(tmp_path / "upscaler.safetensors", blocks=2).read_bytes()
    entry = copy.deepcopy(shipped_entry())
    entry["files"][0].update(size=len(data), sha256=sha256(data))
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    http_server.add("/EnclaveHost/realesrgan-x4plus-sd/resolve/main/upscaler.safetensors", data)
    library = open_workspace().library(load_catalog(path))
    job = library.pull(ENTRY_ID)
    assert job.target == "realesrgan-x4plus.safetensors"  # not the generic "upscaler.safetensors"
    from tests.fixtures.waits import wait_until

    wait_until(lambda: library.models.get(ENTRY_ID) is not None, "the downloaded upscaler to be recorded")
    model = library.models.get(ENTRY_ID)
    assert (model.kind, model.engine, model.format) == ("upscaler", "esrgan", "safetensors")
    assert model.path == str(library.paths.models / "realesrgan-x4plus.safetensors")
    library.shutdown()
