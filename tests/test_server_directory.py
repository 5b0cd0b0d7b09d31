"""Which models the server offers and how it loads them: the saved load settings, ``--ctx``, kinds, remotes.

The scheduler keys a loaded model by (engine, spec), so the spec built for
a preload and for every request must be the same object value: these
tests pin what goes into it. No engine runs here.
"""

from __future__ import annotations

import pytest

from engines.api import TextLoadSpec
from engines.diffusion.types import ImageLoadSpec
from engines.library.importer import import_model
from engines.server import ModelDirectory
from engines.server.errors import ApiError
from engines.settings import LoadPrefs
from engines.workspace import open_workspace
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)


@pytest.fixture
def workspace(tmp_path):
    workspace = open_workspace()
    import_model(write_tiny_llama_gguf(tmp_path / "tiny-llama.gguf"), workspace.models)
    return workspace


def test_a_chat_model_loads_with_its_saved_settings_and_ctx_overrides_the_context(workspace):
    workspace.settings.load_prefs["local/tiny-llama"] = LoadPrefs(context_length=1024, threads=1, cache_type="q8_0")
    saved = ModelDirectory(workspace.models, workspace.settings).find("local/tiny-llama", "chat")
    assert saved.engine == "llama_cpp"
    assert saved.spec == TextLoadSpec(workspace.models.get("local/tiny-llama").path, context_length=1024, threads=1,
                                      cache_type="q8_0")
    overridden = ModelDirectory(workspace.models, workspace.settings, context_length=300).find("tiny", "chat")
    assert overridden.spec.context_length == 300 and overridden.spec.cache_type == "q8_0"
    again = ModelDirectory(workspace.models, workspace.settings, context_length=300).find("local/tiny-llama", "chat")
    assert again.spec == overridden.spec  # one spec per model: the scheduler reuses the loaded one


@pytest.mark.slow  # builds the tiny diffusion pipeline with torch
def test_models_of_every_served_kind_are_listed_and_loaded_their_way(workspace, tiny_sd):  # noqa: F811
    import_model(tiny_sd, workspace.models)
    directory = ModelDirectory(workspace.models, workspace.settings)
    kinds = {model.id: model.kind for model in directory.listed()}
    assert kinds == {"demo/gemma-3-270m-q4_k_m": "chat", "local/tiny-llama": "chat", "local/tiny-sd": "image"}
    image = directory.find("local/tiny-sd", "image")
    assert (image.engine, image.spec) == ("diffusers", ImageLoadSpec(workspace.models.get("local/tiny-sd").path))


def test_a_model_whose_file_is_gone_is_not_listed(workspace, tmp_path):
    (tmp_path / "tiny-llama.gguf").unlink()
    ids = [model.id for model in ModelDirectory(workspace.models, workspace.settings).listed()]
    assert ids == ["demo/gemma-3-270m-q4_k_m"]  # the demo is written on first use, so it always counts


def test_a_model_of_another_kind_is_400_and_an_unknown_one_404(workspace):
    directory = ModelDirectory(workspace.models, workspace.settings)
    with pytest.raises(ApiError) as other_kind:
        directory.find("local/tiny-llama", "image")
    assert (other_kind.value.status, other_kind.value.param) == (400, "model")
    assert other_kind.value.message == "'local/tiny-llama' is a chat model, but this needs an image model."
    with pytest.raises(ApiError) as unknown:
        directory.find("tiny-lama", "chat")
    assert (unknown.value.status, unknown.value.code) == (404, "model_not_found")
    assert unknown.value.message == "No installed model is called 'tiny-lama'. Did you mean local/tiny-llama?"


def test_remote_models_are_served_as_name_slash_model(workspace):
    from engines.remote import RemoteServer, RemoteServers

    remotes = RemoteServers.beside(workspace.models.file)
    remotes.add(RemoteServer("box", "http://127.0.0.1:9/v1", models=("Qwen/Qwen2.5-7B-Instruct",)))
    directory = ModelDirectory(workspace.models, workspace.settings, remotes=remotes)
    listed = {model.id: model for model in directory.listed()}
    assert listed["box/Qwen/Qwen2.5-7B-Instruct"].owned_by == "remote:box"
    found = directory.find("box/Qwen/Qwen2.5-7B-Instruct", "chat")
    assert found.engine == "remote"
    assert found.spec.model == "Qwen/Qwen2.5-7B-Instruct"
