"""``/v1/embeddings`` on the real all-MiniLM-L6-v2 (llama.cpp's embedding mode) and
``/v1/images/generations`` on a tiny diffusion pipeline, through the official ``openai`` client."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import openai
import pytest

from tests.fixtures.api_server import start_server
from tests.fixtures.minilm import MINILM_DIMENSIONS, minilm_gguf  # noqa: F401  (session fixture)
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow  # real engines end to end
SENTENCES = ["The cat sits on the mat.", "A feline rests on a rug.", "Quarterly tax filing deadlines are in April."]


@pytest.fixture(scope="module")
def api(tmp_path_factory, minilm_gguf):  # noqa: F811
    home = tmp_path_factory.mktemp("api-embed")
    running = start_server(home, {"minilm": minilm_gguf, "tiny": write_tiny_llama_gguf(home / "tiny-llama.gguf")})
    yield running
    running.stop()


def test_embeddings_are_unit_vectors_that_put_like_with_like(api):
    response = api.openai().embeddings.create(model=api.ids["minilm"], input=SENTENCES)  # the client asks for base64
    vectors = np.array([item.embedding for item in response.data])
    assert [item.index for item in response.data] == [0, 1, 2]
    assert vectors.shape == (3, MINILM_DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.4  # the cat and the feline
    assert similarity[0, 2] < 0.2 and similarity[1, 2] < 0.2  # against taxes
    assert response.model == api.ids["minilm"]
    assert response.usage.prompt_tokens == response.usage.total_tokens > 3 * 5


def test_float_and_base64_encodings_carry_the_same_vector(api):
    with api.http() as client:
        floats = client.post("/v1/embeddings", json={"model": api.ids["minilm"], "input": SENTENCES[0]}).json()
        packed = client.post("/v1/embeddings", json={"model": api.ids["minilm"], "input": SENTENCES[0],
                                                     "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats["data"][0]["embedding"], atol=1e-6)


def test_embedding_requests_that_cannot_be_served_say_why(api):
    client = api.openai()
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model=api.ids["minilm"], input=[[1, 2, 3]])
    assert tokens.value.body["message"] == "Invalid value for 'input': Value error, input must be text; token arrays are not supported."
    with pytest.raises(openai.BadRequestError) as dimensions:
        client.embeddings.create(model=api.ids["minilm"], input="hi", dimensions=128)
    assert dimensions.value.body["message"] == (f"{api.ids['minilm']} makes 384-dimensional embeddings; it cannot "
                                                "shorten them to 128.")
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model=api.ids["minilm"], messages=[{"role": "user", "content": "hi"}])
    assert chat.value.body["message"] == f"'{api.ids['minilm']}' is an embedding model, but this needs a chat model."
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model=api.ids["minilm"], input=["fine", "  "])
    assert empty.value.body["message"] == "Every text to embed must be non-empty."
    assert api.is_up()


def test_models_lists_the_embedding_model_as_such(api):
    kinds = {model.id: model.model_extra["kind"] for model in api.openai().models.list()}
    assert kinds[api.ids["minilm"]] == "embedding"
    assert kinds[api.ids["tiny"]] == "chat"


def test_images_come_back_as_pngs_that_carry_their_parameters(tmp_path, tiny_sd):  # noqa: F811
    from PIL import Image

    api = start_server(tmp_path, {"sd": tiny_sd})
    try:
        response = api.openai().images.generate(model=api.ids["sd"], prompt="a lighthouse at dusk", n=2, size="64x64",
                                                extra_body={"steps": 2, "seed": 42, "guidance_scale": 5.0,
                                                            "negative_prompt": "fog"})
        with pytest.raises(openai.BadRequestError) as url:
            api.openai().images.generate(model=api.ids["sd"], prompt="x", response_format="url")
        with pytest.raises(openai.BadRequestError) as size:
            api.openai().images.generate(model=api.ids["sd"], prompt="x", size="100x64")
        with pytest.raises(openai.BadRequestError) as chat_model:
            api.openai().chat.completions.create(model=api.ids["sd"], messages=[{"role": "user", "content": "hi"}])
    finally:
        api.stop()
    assert len(response.data) == 2
    seeds = [item.model_extra["seed"] for item in response.data]
    assert seeds == [42, 43]
    for item, seed in zip(response.data, seeds):
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.format == "PNG" and image.size == (64, 64)
        assert "a lighthouse at dusk" in image.info["parameters"]
        assert "Negative prompt: fog" in image.info["parameters"]
        assert f"Seed: {seed}" in image.info["parameters"]
        assert "Steps: 2" in image.info["parameters"]
    assert url.value.body["message"] == "Only response_format 'b64_json' is served: Atelier keeps no public image URLs."
    assert size.value.body["message"] == "Width must be a multiple of 8 (got 100; try 96)."
    assert chat_model.value.body["message"] == f"'{api.ids['sd']}' is an image model, but this needs a chat model."
