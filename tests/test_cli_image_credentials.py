"""`atelier image` signs every PNG with Content Credentials, end to end on a tiny real pipeline.

The command runs as a user runs it (a subprocess, the real engine host
through the scheduler); c2pa-python's own Reader reads what it wrote.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("diffusers")
c2pa = pytest.importorskip("c2pa")
pytestmark = pytest.mark.slow  # every test runs the command on the real tiny pipeline


def atelier(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def manifest_of(path: Path) -> dict | None:
    from engines.images.credentials import c2pa_context

    reader = c2pa.Reader.try_create("image/png", io.BytesIO(path.read_bytes()), context=c2pa_context())
    if reader is None:
        return None
    with reader:
        report = json.loads(reader.json())
    return report["manifests"][report["active_manifest"]]


def created_action(manifest: dict) -> dict:
    [action] = [a for assertion in manifest["assertions"] if assertion["label"].startswith("c2pa.actions")
                for a in assertion["data"]["actions"]]
    return action


def test_text_to_image_is_signed_and_no_credentials_turns_it_off(tiny_sd, tmp_path, atelier_home):
    from engines.diffusion.png_meta import read_png_parameters
    from engines.images.gallery import Gallery

    signed, plain = tmp_path / "signed.png", tmp_path / "plain.png"
    common = ["image", "--model", str(tiny_sd), "--prompt", "a red lighthouse", "--negative", "blurry", "--steps", "2",
              "--width", "64", "--height", "64", "--seed", "42", "--backend", "torch", "--json"]
    key = atelier_home / "config" / "content-credentials.pem"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("a damaged key")  # replaced with a warning, never a crash
    run = atelier(*common, "--out", str(signed))
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: The Content Credentials key ({key}) could not be used: it holds no PEM keys or certificates; "
        "it was set aside as content-credentials.unreadable-")
    data = json.loads(run.stdout)
    assert data["credentials"] is True and data["images"][0]["credentials"] is True
    manifest = manifest_of(signed)
    action = created_action(manifest)
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert action["softwareAgent"] == {"name": data["model"]} and data["model"] == tiny_sd.name
    assert manifest.get("ingredients", []) == []
    assert read_png_parameters(signed)["prompt"] == "a red lighthouse"  # the A1111 chunk stays
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600

    run = atelier(*common, "--out", str(plain), "--no-credentials")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["credentials"] is False and data["images"][0]["credentials"] is False
    assert manifest_of(plain) is None
    assert read_png_parameters(plain)["prompt"] == "a red lighthouse"
    # The PyTorch backend's PNG and JSON as tests/test_cli_image.py checks ONNX Runtime's (one run for both checks).
    assert data["backend"] == "torch" and data["images"][0]["seed"] == 42
    meta = read_png_parameters(plain)
    assert "a red lighthouse" in json.dumps(meta) and "42" in json.dumps(meta)

    # Both images are in the gallery with the model's folder, so "use these settings again" restores it.
    gallery = Gallery(atelier_home / "data" / "atelier.sqlite3", atelier_home / "data" / "images")
    entries = gallery.list()
    gallery.close()
    assert len(entries) == 2
    assert {e.request["model_path"] for e in entries} == {str(tiny_sd)}


def test_image_to_image_links_the_init_image_as_an_ingredient(tiny_sd, tmp_path):
    import hashlib

    from PIL import Image

    init = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (30, 90, 200)).save(init)
    out = tmp_path / "from-photo.png"
    run = atelier("image", "--model", str(tiny_sd), "--prompt", "a lighthouse", "--steps", "2", "--width", "64",
                  "--height", "64", "--seed", "5", "--init-image", str(init), "--strength", "0.5", "--out", str(out))
    assert run.returncode == 0, run.stderr
    manifest = manifest_of(out)
    [ingredient] = manifest["ingredients"]
    assert ingredient["relationship"] == "inputTo"
    assert ingredient["description"] == f"sha256 {hashlib.sha256(init.read_bytes()).hexdigest()}"
    action = created_action(manifest)
    assert action["action"] == "c2pa.created" and action["description"].startswith("Image to image (strength 0.5)")
