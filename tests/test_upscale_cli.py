"""The upscaler in its engine host through the one scheduler, and ``atelier upscale`` end to end.

Random-weight RRDBNets in the real key layout (tests/fixtures/esrgan.py);
the engine's own behaviour (tiles, scales, strict keys) is in
tests/test_upscale.py.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from engines.api import FinishedEvent, ProgressEvent
from engines.errors import EngineError, ErrorKind
from tests.fixtures.cli_runner import error_lines, run_atelier
from tests.test_upscale import PARAMETERS, png_bytes

pytestmark = pytest.mark.slow  # every test here starts an engine host or the atelier command


def _scheduler(tmp_path):
    from engines.scheduler import Scheduler

    return Scheduler(tmp_path / "logs", idle_unload_s=None)


def test_the_scheduler_runs_the_upscaler_in_its_own_host(tmp_path):
    import os

    from engines.diffusion.upscale_types import UpscaleLoadSpec, UpscaleRequest
    from tests.fixtures.esrgan import write_upscaler

    scheduler = _scheduler(tmp_path)
    try:
        host = scheduler.host_for("test")
        info = host.load("esrgan", UpscaleLoadSpec(str(write_upscaler(tmp_path / "x4.safetensors"))))
        assert (info.architecture, info.scale, info.layout, info.device) == ("RRDBNet", 4, "basicsr", "cpu")
        assert host.pid not in (None, os.getpid())
        events = list(host.generate(UpscaleRequest(png_bytes(), tile=32)))
        assert [e.message for e in events if isinstance(e, ProgressEvent)] == [
            f"Upscaling: tile {n} of 4" for n in range(1, 5)]
        result = events[-1].result
        assert isinstance(events[-1], FinishedEvent)
        assert (result.width, result.height, result.tiles, result.parameters) == (256, 192, 4, PARAMETERS)
        assert Image.open(io.BytesIO(result.png)).size == (256, 192)
        assert (tmp_path / "logs" / "engine-host-upscale.log").is_file()
    finally:
        scheduler.shutdown()


def test_cancel_mid_upscale_stops_the_engine_and_keeps_it_loaded(tmp_path):
    from engines.diffusion.upscale_types import UpscaleLoadSpec, UpscaleRequest
    from engines.scheduler.work import Work
    from tests.fixtures.esrgan import write_upscaler

    spec = UpscaleLoadSpec(str(write_upscaler(tmp_path / "x4.safetensors", blocks=2, feat=32)))
    scheduler = _scheduler(tmp_path)
    try:
        ticket = scheduler.submit(Work("esrgan", spec, UpscaleRequest(png_bytes(256, 256), tile=32)), "test")
        tiles = []
        with pytest.raises(EngineError) as caught:
            for event in ticket.events():
                if isinstance(event, ProgressEvent) and event.stage == "upscale":
                    tiles.append(event.message)
                    ticket.cancel()
        assert (caught.value.kind, caught.value.message) == (ErrorKind.CANCELLED, "Upscaling was stopped.")
        assert tiles[0] == "Upscaling: tile 1 of 64" and len(tiles) < 64
        again = scheduler.submit(Work("esrgan", spec, UpscaleRequest(png_bytes(), tile=32)), "test").wait()
        assert (again.width, again.tiles) == (256, 4)
        assert [m.state for m in scheduler.snapshot().loaded] == ["idle"]
    finally:
        scheduler.shutdown()


# ---- atelier upscale --------------------------------------------------------------------


def test_atelier_upscale_end_to_end_with_the_installed_upscaler(tmp_path):
    from tests.fixtures.esrgan import write_upscaler

    model = write_upscaler(tmp_path / "models" / "RealESRGAN_x4plus.safetensors")
    imported = run_atelier("models", "import", str(model), "--json")
    assert imported.returncode == 0, error_lines(imported)
    record = json.loads(imported.stdout)
    assert (record["kind"], record["engine"]) == ("upscaler", "esrgan")
    source = tmp_path / "lighthouse.png"
    source.write_bytes(png_bytes())
    run = run_atelier("upscale", str(source), "--json")
    assert run.returncode == 0, error_lines(run)
    out = json.loads(run.stdout)
    assert out["path"] == str(tmp_path / "lighthouse-x4.png")
    assert (out["width"], out["height"], out["scale"], out["model"], out["passes"]) == (256, 192, 4, record["id"], 1)
    assert out["credentials"] is True
    image = Image.open(out["path"])
    assert image.size == (256, 192)
    assert image.text["parameters"] == PARAMETERS
    assert image.text["postprocessing"] == "Postprocess upscale by: 4, Postprocess upscaler: RealESRGAN_x4plus"
    from engines.images.credentials_read import read_credentials  # c2pa-python's own Reader

    claims = read_credentials(out["path"]).claims
    assert "Edited with a generative AI model (RealESRGAN_x4plus): Upscaled 4× with RealESRGAN_x4plus" in claims
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert f"Edited from the original image (sha256 {digest[:12]}…)" in claims  # the source, linked as the parent
    again = run_atelier("upscale", str(source), "--scale", "2", "--no-credentials")
    assert again.returncode == 0, error_lines(again)
    assert again.stdout.decode() == f"{tmp_path / 'lighthouse-x2.png'}  (64×48 → 128×96, RealESRGAN_x4plus)\n"
    third = run_atelier("upscale", str(source), "--scale", "2", "--no-credentials")
    assert third.stdout.decode().startswith(f"{tmp_path / 'lighthouse-x2-2.png'}  (")  # never over a file
    assert Image.open(tmp_path / "lighthouse-x2.png").size == (128, 96)


def test_atelier_upscale_with_a_model_file_and_out(tmp_path):
    from tests.fixtures.esrgan import write_upscaler

    model = write_upscaler(tmp_path / "x2.safetensors", scale=2, layout="basicsr")
    source = tmp_path / "in.png"
    source.write_bytes(png_bytes(33, 20, parameters=None))
    out = tmp_path / "deep" / "big.png"
    run = run_atelier("upscale", str(source), "--model", str(model), "--out", str(out), "--tile", "32", "--json")
    assert run.returncode == 0, error_lines(run)
    assert json.loads(run.stdout)["tiles"] == 2
    assert Image.open(out).size == (66, 40)


@pytest.mark.parametrize("case,message", [
    ("missing", "The image to upscale {tmp}/nope.png does not exist."),
    ("lora", "{tmp}/style.safetensors is a LoRA, but this needs an upscaler."),
    ("pickle", "RealESRGAN_x4plus.pth is a pickled checkpoint. Atelier never loads pickled weights "
               "(.bin/.ckpt) because they can run code; use a .safetensors version."),
    ("scale", "argument --scale: invalid choice: 5 (choose from 2, 3, 4, 8) (see 'atelier upscale --help')"),
    ("none", "no upscaler is installed: pass --model with an ESRGAN .safetensors file, or add one with 'atelier "
             "models import FILE' (see 'atelier models list --catalog' for Real-ESRGAN)"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, case, message):
    from tests.fixtures.stripped_models import write_kohya_lora

    source = tmp_path / "in.png"
    source.write_bytes(png_bytes())
    args = {
        "missing": [str(tmp_path / "nope.png"), "--model", "x"],
        "lora": [str(source), "--model", str(write_kohya_lora(tmp_path / "style.safetensors", "sd1"))],
        "pickle": [str(source), "--model", str(tmp_path / "RealESRGAN_x4plus.pth")],
        "scale": [str(source), "--scale", "5"],
        "none": [str(source)],
    }[case]
    (tmp_path / "RealESRGAN_x4plus.pth").write_bytes(b"\x80\x04not to be unpickled")
    run = run_atelier("upscale", *args)
    assert (run.returncode, error_lines(run)) == (2, [f"error: {message.format(tmp=tmp_path)}"])
    assert list(tmp_path.glob("in-x*.png")) == []
