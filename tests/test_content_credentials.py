"""Content Credentials: what Atelier signs into a PNG, read back by c2pa-python's own Reader.

Real keys (made with ``cryptography``), a real c2pa signer and reader, real
PNGs with the A1111 ``parameters`` chunk; no network (the c2pa context
turns remote manifests and OCSP off).
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

c2pa = pytest.importorskip("c2pa")

from engines.diffusion.png_meta import encode_png, read_png_parameters  # noqa: E402
from engines.diffusion.types import ImageRequest  # noqa: E402
from engines.images.credentials import (  # noqa: E402
    GENERATED,
    CredentialsSigner,
    Provenance,
    c2pa_context,
)
from engines.images.credentials_read import INVALID, NONE, UNTRUSTED, read_credentials  # noqa: E402
from engines.images.signing_identity import identity_file  # noqa: E402


def generated_png(prompt: str = "a lighthouse at dawn", seed: int = 7) -> bytes:
    request = ImageRequest(prompt, width=32, height=32, steps=3, seed=seed)
    return encode_png(Image.new("RGB", (32, 32), (200, 40, 40)), request, {"seed": seed, "model": "tiny-sd"})


def source_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 200)).save(out, "PNG")
    return out.getvalue()


def manifest_of(png: bytes) -> tuple[dict, dict, str]:
    """(active manifest, whole report, validation state), as c2pa-python's Reader reads them."""
    with c2pa.Reader("image/png", io.BytesIO(png), context=c2pa_context()) as reader:
        report = json.loads(reader.json())
        state = reader.get_validation_state()
    return report["manifests"][report["active_manifest"]], report, state


def actions_of(manifest: dict) -> list[dict]:
    return [action for assertion in manifest["assertions"] if assertion["label"].startswith("c2pa.actions")
            for action in assertion["data"]["actions"]]


def test_a_text_to_image_png_says_a_generative_model_made_it(tmp_path):
    png = generated_png()
    signed = CredentialsSigner(tmp_path).sign(png, Provenance("tiny-sd", description="Text to image, 3 steps"))
    assert signed.signed and signed.notices == ()
    manifest, report, state = manifest_of(signed.png)
    [created] = actions_of(manifest)
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == GENERATED
    assert created["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert created["softwareAgent"] == {"name": "tiny-sd"}
    assert created["description"] == "Text to image, 3 steps"
    assert manifest["claim_generator_info"][0]["name"] == "Atelier"
    assert manifest.get("ingredients", []) == []
    assert manifest["signature_info"]["issuer"] == "Atelier"
    # Self-signed: intact, but no trust list knows the key, and that is the only status.
    assert [s["code"] for s in report["validation_status"]] == ["signingCredential.untrusted"]
    assert state == "Valid"
    # The A1111 parameters stay, and the image still opens.
    meta = read_png_parameters(signed.png)
    assert meta["prompt"] == "a lighthouse at dawn" and meta["seed"] == 7
    assert Image.open(io.BytesIO(signed.png)).size == (32, 32)


def test_an_image_to_image_png_links_its_source_as_an_ingredient(tmp_path):
    import hashlib

    source = source_png()
    request = ImageRequest("a lighthouse", width=32, height=32, steps=4, seed=1, init_image=source, strength=0.5)
    signed = CredentialsSigner(tmp_path).sign(generated_png(), Provenance.of_request(request, "tiny-sd"))
    manifest, _report, _state = manifest_of(signed.png)
    [ingredient] = manifest["ingredients"]
    assert ingredient["relationship"] == "inputTo"
    assert ingredient["format"] == "image/png"
    assert ingredient["description"] == f"sha256 {hashlib.sha256(source).hexdigest()}"
    assert "thumbnail" not in ingredient  # never a copy of the (maybe private) source photo
    [created] = actions_of(manifest)
    assert created["action"] == "c2pa.created" and created["softwareAgent"] == {"name": "tiny-sd"}
    assert created["description"] == "Image to image (strength 0.5), 4 steps"
    assert created["parameters"]["ingredients"][0]["url"].endswith("c2pa.ingredient.v3")


def test_the_loras_of_a_request_are_named(tmp_path):
    from engines.diffusion.types import LoraSpec

    request = ImageRequest("a lighthouse", width=64, height=64, steps=4, seed=1,
                           loras=(LoraSpec("/loras/ink.safetensors", 0.8), LoraSpec("/loras/x.safetensors", 1.0, "film")))
    provenance = Provenance.of_request(request, "tiny-sd")
    assert provenance.description == "Text to image, 4 steps, with LoRA ink (0.8), film (1)"
    [created] = actions_of(manifest_of(CredentialsSigner(tmp_path).sign(generated_png(), provenance).png)[0])
    assert created["description"] == "Text to image, 4 steps, with LoRA ink (0.8), film (1)"


def test_a_one_step_image_says_one_step():
    """A Turbo image has one step; its credentials (and every line that shows a request) say "1 step"."""
    request = ImageRequest("a lighthouse", width=64, height=64, steps=1, guidance=0.0, seed=1)
    assert Provenance.of_request(request, "sd-turbo").description == "Text to image, 1 step"


def test_an_edit_says_what_was_done_to_the_original(tmp_path):
    signed = CredentialsSigner(tmp_path).sign(
        generated_png(), Provenance("RealESRGAN x4", source=source_png(), edit="Upscaled 4× with RealESRGAN x4"))
    manifest, _report, _state = manifest_of(signed.png)
    assert [a["action"] for a in actions_of(manifest)] == ["c2pa.opened", "c2pa.edited"]
    edited = actions_of(manifest)[1]
    assert edited["digitalSourceType"].endswith("/compositeWithTrainedAlgorithmicMedia")
    assert edited["description"] == "Upscaled 4× with RealESRGAN x4"
    assert manifest["ingredients"][0]["relationship"] == "parentOf"


def test_the_key_is_made_once_private_to_the_user_and_reused(tmp_path):
    signer = CredentialsSigner(tmp_path)
    first = manifest_of(signer.sign(generated_png(), Provenance("m")).png)[0]["signature_info"]
    path = identity_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    again = manifest_of(CredentialsSigner(tmp_path).sign(generated_png(), Provenance("m")).png)[0]["signature_info"]
    assert path.read_bytes() == before
    assert again["common_name"] == first["common_name"]
    assert first["common_name"].startswith("Atelier on this computer (")


def test_a_damaged_key_is_set_aside_and_replaced_with_a_sentence(tmp_path):
    path = identity_file(tmp_path)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    signed = CredentialsSigner(tmp_path).sign(generated_png(), Provenance("m"))
    assert signed.signed
    [notice] = signed.notices
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("content-credentials.unreadable-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\nbm90")
    assert notice.startswith(f"The Content Credentials key ({path}) could not be used: ")
    assert notice.endswith(f"it was set aside as {aside[0].name}, and a new key was made. "
                           "Images signed before keep their credentials.")
    assert manifest_of(signed.png)[2] == "Valid"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CredentialsSigner(tmp_path).sign(generated_png(), Provenance("m")).notices == ()  # once, not each time


def test_a_config_folder_that_cannot_be_written_keeps_the_image_unsigned(tmp_path):
    blocker = tmp_path / "config"
    blocker.write_text("a file where the config folder should be")
    png = generated_png()
    signed = CredentialsSigner(blocker).sign(png, Provenance("m"))
    assert not signed.signed and signed.png == png
    [notice] = signed.notices
    assert notice.startswith(f"the Content Credentials key in {blocker} cannot be made (")
    assert notice.endswith("); the images are saved without credentials")


def test_reading_back_in_words(tmp_path):
    path = tmp_path / "signed.png"
    path.write_bytes(CredentialsSigner(tmp_path).sign(generated_png(), Provenance("tiny-sd")).png)
    found = read_credentials(path)
    assert found.state == UNTRUSTED
    assert found.claims == ("Made by a generative AI model (tiny-sd)",)
    assert found.issuer == "Atelier" and found.signer.startswith("Atelier on this computer (")
    assert found.summary() == (f"Made by a generative AI model (tiny-sd) · signed by {found.signer} · "
                               "valid, self-signed (untrusted)")
    assert "signingCredential.untrusted" in found.verdict

    import hashlib

    source = source_png()
    derived = tmp_path / "derived.png"
    derived.write_bytes(CredentialsSigner(tmp_path).sign(generated_png(), Provenance("tiny-sd", source=source)).png)
    short = hashlib.sha256(source).hexdigest()[:12]
    assert read_credentials(derived).claims == ("Made by a generative AI model (tiny-sd)",
                                                f"Made from a source image: the init image (sha256 {short}…)")

    plain = tmp_path / "plain.png"
    plain.write_bytes(generated_png())
    assert read_credentials(plain).state == NONE
    assert read_credentials(plain).summary() == "This image carries no Content Credentials."


def test_a_changed_prompt_after_signing_shows_as_not_valid(tmp_path):
    png = CredentialsSigner(tmp_path).sign(generated_png("a lighthouse at dawn"), Provenance("tiny-sd")).png
    tampered = png.replace(b"a lighthouse at dawn", b"a lighthouse at dusk")
    assert tampered != png
    path = tmp_path / "tampered.png"
    path.write_bytes(tampered)
    found = read_credentials(path)
    assert found.state == INVALID
    assert found.summary().endswith(" · NOT valid")
    assert any(f.startswith("assertion.dataHash.mismatch") for f in found.failures), found.failures


def test_a_fifo_in_place_of_an_image_is_refused_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    found = read_credentials(fifo)
    assert found.state == "unreadable"
    assert found.summary().startswith("The credentials could not be read: ")
    assert "FIFO" in found.problem


def test_the_private_image_engine_never_needs_c2pa():
    """Signing happens in the front end: the engine's modules do not import c2pa (the import contract too)."""
    root = Path(__file__).resolve().parents[1] / "engines" / "diffusion"
    users = [p.name for p in root.rglob("*.py") if "c2pa" in p.read_text(encoding="utf-8")]
    assert users == []


def test_starting_the_gui_loads_neither_c2pa_nor_cryptography():
    """Their native libraries load when an image is signed or its credentials read, not when the window opens."""
    import subprocess
    import sys

    code = ("import sys, desktop.main_window, desktop.app; "
            "print(sorted(m for m in ('c2pa', 'cryptography') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
