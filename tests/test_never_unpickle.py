"""Never unpickle: a pickled checkpoint (.pt, .pth, .ckpt, .bin) is refused in words at every way in.

Unpickling runs code, so no model, LoRA, VAE or upscaler file Atelier is
handed is ever unpickled. The files here are real pickles whose loading
would leave a marker file behind; each way in must refuse them with the
same sentence (or, for a pickle renamed to a safe suffix, say what it
really is), and the marker must never appear.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engines.errors import EngineError, ErrorKind
from engines.model_folder import PICKLED_MESSAGE

ROOT = Path(__file__).resolve().parents[1]
PICKLE_NAMES = ("weights.pt", "weights.pth", "model.ckpt", "MODEL.CKPT", "pytorch_model.bin")


class _Marker:
    """Unpickling this touches ``path``: proof that something ran code from a model file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def write_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": _Marker(marker)}))
    return path


def refusal(name: str) -> str:
    return f"{name} is a pickled checkpoint. {PICKLED_MESSAGE}."


@pytest.mark.parametrize("name", PICKLE_NAMES)
def test_every_engine_way_in_refuses_a_pickle_without_opening_it(name, tmp_path):
    from engines.diffusion.lora import read_header
    from engines.diffusion.upscale import read_weights
    from engines.library.importer import import_model
    from engines.model_folder import inspect_model_folder
    from engines.workspace import open_workspace

    marker = tmp_path / "code-ran"
    path = write_pickle(tmp_path / name, marker)
    ways_in = {
        "the library (import, the Models page, every resolver)": lambda: import_model(path, open_workspace().models),
        "an image model": lambda: inspect_model_folder(path),
        "a LoRA": lambda: read_header(path),
        "an upscaler": lambda: read_weights(path),
    }
    for way, load in ways_in.items():
        with pytest.raises(EngineError) as err:
            load()
        assert err.value.message == refusal(name), way
        assert err.value.kind in (ErrorKind.UNSUPPORTED, ErrorKind.BAD_INPUT, ErrorKind.MODEL_FILE), way
    assert not marker.exists()


def test_a_model_folder_whose_weights_are_only_pickles_is_refused(tmp_path):
    from engines.model_folder import inspect_model_folder
    from tests.fixtures.images_page import write_light_model_folder

    marker = tmp_path / "code-ran"
    folder = write_light_model_folder(tmp_path / "dream")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    write_pickle(folder / "unet" / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(EngineError) as err:
        inspect_model_folder(folder)
    assert err.value.message == f"unet/ holds only pickled weights (diffusion_pytorch_model.bin). {PICKLED_MESSAGE}."
    assert not marker.exists()


def test_a_pickle_renamed_to_a_safe_suffix_is_still_not_loaded(tmp_path):
    from engines.library.importer import import_model
    from engines.workspace import open_workspace

    marker = tmp_path / "code-ran"
    gguf = write_pickle(tmp_path / "sneaky.gguf", marker)
    with pytest.raises(EngineError) as err:
        import_model(gguf, open_workspace().models)
    assert "It looks like a Python pickle (PyTorch), not a GGUF model." in err.value.message
    tensors = write_pickle(tmp_path / "sneaky.safetensors", marker)
    with pytest.raises(EngineError) as err:
        import_model(tensors, open_workspace().models)
    assert err.value.message.startswith("sneaky.safetensors is not a safetensors file")
    assert not marker.exists()


@pytest.mark.parametrize("command", [["image", "--prompt", "a fox", "--model"], ["chat", "--prompt", "hi", "--model"],
                                     ["models", "import"]])
def test_the_cli_refuses_a_pickle_with_one_error_line_and_exit_2(command, tmp_path):
    marker = tmp_path / "code-ran"
    path = write_pickle(tmp_path / "model.ckpt", marker)
    run = subprocess.run([sys.executable, "-m", "desktop", *command, str(path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr == f"error: {refusal('model.ckpt')}\n"
    assert not marker.exists()


def test_no_code_loads_a_pickle():
    """No pickle.load, no weights_only=False, and a torch.load only with weights_only=True (tensors, no code)."""
    pattern = re.compile(r"\bpickle\.loads?\(|weights_only\s*=\s*False|\bjoblib\.load\(")
    offenders = []
    for folder in ("engines", "desktop"):
        for source in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
                unsafe_torch_load = re.search(r"\btorch\.load\(", line) and "weights_only=True" not in line
                if pattern.search(line) or unsafe_torch_load:
                    offenders.append(f"{source.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
