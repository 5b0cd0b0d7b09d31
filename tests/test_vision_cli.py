"""Vision outside the engine: the projector probe, pairing a model with its projector, and 'atelier chat --image'.

The CLI runs are the real console script on the tiny Gemma 3 VLM (see
tests/fixtures/tiny_vlm.py), copied with its projector into a folder of
its own as a download leaves them.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engines.library.probes import identify
from engines.library.probes.projector import find_projector
from tests.fixtures import stripped_models as stripped
from tests.fixtures.bad_images import header_only_png, real_png
from tests.fixtures.cli_runner import atelier_script, cli_env
from tests.fixtures.tiny_vlm import tiny_vlm  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]


def atelier(*args):
    return subprocess.run([atelier_script(), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=cli_env())


@pytest.fixture
def vlm_folder(tiny_vlm, tmp_path):  # noqa: F811
    """The model and its projector in one folder, named as on the Hub."""
    folder = tmp_path / "tiny-vlm"
    folder.mkdir()
    model = shutil.copy(tiny_vlm.model, folder / "tiny-vlm-f32.gguf")
    shutil.copy(tiny_vlm.projector, folder / "mmproj-tiny-vlm-f32.gguf")
    return Path(model)


def test_a_projector_is_recognised_as_one(tmp_path):
    found = identify(stripped.write_gguf(tmp_path / "mmproj-f16.gguf", "clip", name="mmproj", tokens=(),
                                         tensors=("v.patch_embd.weight",),
                                         kv={"clip.projector_type": "gemma3", "clip.vision.projection_dim": 2560}))
    assert (found.kind, found.format, found.engine, found.architecture) == ("projector", "gguf", None, "gemma3")
    assert found.details == {"projection_dim": 2560} and not found.runnable
    assert found.description == ("vision projector (mmproj, gemma3): the image half of a multimodal model, "
                                 "used beside its model")


def test_a_model_is_paired_with_the_projector_of_its_width(tmp_path):
    model = stripped.write_gguf(tmp_path / "gemma-3-4b-it-Q4_K_M.gguf", "gemma3", kv={"gemma3.embedding_length": 2560})
    assert find_projector(model) is None  # a text model: nothing beside it
    def projector(name, width):
        return stripped.write_gguf(tmp_path / name, "clip", name="mmproj", tokens=(), tensors=("v.patch_embd.weight",),
                                   kv={"clip.vision.projection_dim": width, "clip.has_vision_encoder": True})

    projector("mmproj-gemma-3-12b-f16.gguf", 3840)  # another model's: never chosen
    assert find_projector(model) is None
    four_b = projector("mmproj-gemma-3-4b-f16.gguf", 2560)
    projector("mmproj-other-model-f16.gguf", 2560)  # fits too, but its name is further from the model's
    assert find_projector(model) == four_b
    (tmp_path / "mmproj-broken.gguf").write_bytes(b"GGUF\x03\x00")  # damaged: skipped, not a crash
    assert find_projector(model) == four_b


@pytest.mark.slow
def test_chat_with_an_image_reaches_the_model(vlm_folder, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(real_png(64, 48, (10, 200, 30)))
    run = atelier("chat", "--model", str(vlm_folder), "--image", str(photo), "--prompt", "describe", "--json",
                  "--max-tokens", "4", "--seed", "1", "--ctx", "512")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["image_tokens"] == 16
    assert data["projector"] == str(vlm_folder.parent / "mmproj-tiny-vlm-f32.gguf")


@pytest.mark.slow
def test_chat_image_errors_are_one_line_and_exit_2(vlm_folder, tiny_vlm, tmp_path):  # noqa: F811
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(30000, 30000))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    lonely = tmp_path / "lonely" / "text-only.gguf"
    lonely.parent.mkdir()
    shutil.copy(tiny_vlm.model, lonely)
    photo = tmp_path / "photo.png"
    photo.write_bytes(real_png())
    cases = [
        (["--model", str(vlm_folder), "--image", str(bomb)],
         f"error: The image {bomb} has far more than 64 megapixels; scale it down first."),
        (["--model", str(vlm_folder), "--image", str(fifo)], f"error: The image {fifo} is a FIFO (named pipe), not an image file."),
        (["--model", str(vlm_folder), "--image", str(tmp_path / "none.png")],
         f"error: The image {tmp_path / 'none.png'} does not exist."),
        (["--model", str(lonely), "--image", str(photo)],
         f"error: text-only.gguf cannot see images: no vision projector (an mmproj .gguf file made for it) is beside "
         f"it in {lonely.parent}. Use a vision model, or leave out --image."),
        (["--model", str(vlm_folder), "--image", str(photo), "--raw"],
         "error: --image needs the chat template: it cannot be used with --raw"),
    ]
    for args, message in cases:
        run = atelier("chat", *args, "--prompt", "what is this", "--max-tokens", "2")
        assert (run.returncode, run.stderr.strip()) == (2, message), args
        assert run.stdout == ""
    run = atelier("chat", "--model", str(vlm_folder), "--image", str(broken), "--prompt", "x")
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: The image {broken} could not be read (")
    assert run.stderr.strip().endswith("Use a PNG, JPEG or WebP file.")


def test_adding_a_projector_on_its_own_says_what_to_do(tmp_path):
    from engines.errors import EngineError
    from engines.library.importer import import_model
    from engines.workspace import open_workspace

    path = stripped.write_gguf(tmp_path / "mmproj-model-f16.gguf", "clip", name="mmproj", tokens=(),
                               tensors=("v.patch_embd.weight",), kv={"clip.projector_type": "gemma3"})
    with pytest.raises(EngineError) as refused:
        import_model(path, open_workspace().models)
    assert refused.value.message == (
        "mmproj-model-f16.gguf is a vision projector (mmproj, gemma3): the image half of a multimodal model, used "
        "beside its model. Keep it in the same folder as its model and add the model: chats with it can then read "
        "images.")
