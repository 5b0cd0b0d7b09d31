"""Prompts → the UNet's text inputs on ONNX Runtime, for SD 1.x/2.x and SDXL.

The UNet of SD 1.x/2.x takes one tensor from the prompt: the CLIP text
encoder's last hidden state (``encoder_hidden_states``). SDXL's takes
three: the penultimate hidden states of its two text encoders side by side
(``encoder_hidden_states``), the second encoder's pooled projection
(``text_embeds``) and six numbers saying what size the picture is and where
it was cropped (``time_ids``). Each class here turns a request into exactly
the inputs its UNet needs, the unconditional half first when
classifier-free guidance is on, so that
:mod:`engines.diffusion.onnx_engine` runs one denoising loop for both.

The maths is diffusers' (0.42) ``encode_prompt`` and ``_get_add_time_ids``,
with A1111's prompt weighting and 77-token chunks, written once for both
backends in :mod:`engines.diffusion.prompt_conditioning`: that is what
makes one seed give the same image on both. Encoder outputs are found by
the names optimum gives them (``last_hidden_state``, ``hidden_states.N``,
``text_embeds``), which Atelier's converter uses too, so optimum's exports
run as well as Atelier's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from engines.diffusion.prompt_conditioning import ClipSide, PromptEmbeds, sd_embeds, sdxl_embeds
from engines.diffusion.types import ImageRequest
from engines.errors import EngineError, ErrorKind

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32}
_HIDDEN_STATE = re.compile(r"hidden_states\.(\d+)")


def load_tokenizer(folder: Path):
    """The CLIP tokenizer in ``folder``, always with CLIP's 77-token window."""
    from transformers import CLIPTokenizer

    try:
        # transformers 5 ignores vocab/merges passed to the constructor; from_pretrained reads them.
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    except Exception as exc:
        raise EngineError(ErrorKind.MODEL_FILE, f"The tokenizer in {folder} could not be read ({exc}).")


class TextEncoder:
    """A tokenizer and its ONNX text encoder: 77 token ids → the encoder outputs asked for, by name."""

    def __init__(self, tokenizer, session, where: str) -> None:
        self.tokenizer = tokenizer
        self.session = session
        self.where = where  # "text_encoder_2/model.onnx", for messages
        ids = session.get_inputs()[0]
        self._ids_name, self._ids_type = ids.name, ORT_TYPES.get(ids.type, np.int64)
        self.outputs = [output.name for output in session.get_outputs()]

    def side(self, names: list[str]) -> ClipSide:
        """This encoder as the shared conditioning code takes it: ids (1 × 77) → the outputs ``names``."""
        def encode(ids: np.ndarray) -> list[np.ndarray]:
            results = self.session.run(names, {self._ids_name: ids.astype(self._ids_type)})
            return [np.asarray(result, dtype=np.float32) for result in results]

        return ClipSide(self.tokenizer, encode)

    def last_hidden_state(self) -> str:
        return "last_hidden_state" if "last_hidden_state" in self.outputs else self.outputs[0]

    def penultimate_hidden_state(self) -> str:
        """The output SDXL conditions on: ``hidden_states[-2]``, before the final layer norm."""
        layers = sorted(int(m.group(1)) for m in map(_HIDDEN_STATE.fullmatch, self.outputs) if m)
        if len(layers) < 2:
            raise EngineError(ErrorKind.MODEL_FILE,
                              f"{self.where} does not output its hidden states (hidden_states.0, …), which an "
                              "SDXL model is conditioned on. Convert the model again with Atelier "
                              "(atelier convert onnx).")
        return f"hidden_states.{layers[-2]}"


def _unet_inputs(embeds: PromptEmbeds, guided: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The UNet's batch: the negative half first when guided, as the pipelines order it."""
    if not guided:
        return embeds.prompt, embeds.pooled
    pooled = None if embeds.pooled is None else np.concatenate([embeds.negative_pooled, embeds.pooled])
    return np.concatenate([embeds.negative, embeds.prompt]), pooled


class SdText:
    """SD 1.x/2.x: the text encoder's last hidden state."""

    input_names = ("encoder_hidden_states",)

    def __init__(self, encoder: TextEncoder) -> None:
        self._side = encoder.side([encoder.last_hidden_state()])

    def __call__(self, request: ImageRequest, guided: bool) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
        """The UNet's text inputs, and the notices about the prompt (unbalanced brackets)."""
        embeds = sd_embeds(request.prompt, request.negative_prompt, guided, self._side)
        hidden, _ = _unet_inputs(embeds, guided)
        return {"encoder_hidden_states": hidden}, embeds.notices


def add_time_ids(width: int, height: int) -> np.ndarray:
    """SDXL's size conditioning: original size, crop top-left, target size, each as (height, width).

    Atelier asks for the picture at the size it generates, uncropped, which
    is what the diffusers pipelines assume when not told otherwise:
    original = target = (height, width), crop = (0, 0).
    """
    return np.array([[height, width, 0, 0, height, width]], dtype=np.float32)


class SdxlText:
    """SDXL: both encoders' penultimate hidden states side by side, the pooled projection and the size ids."""

    input_names = ("encoder_hidden_states", "text_embeds", "time_ids")

    def __init__(self, first: TextEncoder, second: TextEncoder, force_zeros_for_empty_prompt: bool) -> None:
        if "text_embeds" not in second.outputs:
            raise EngineError(ErrorKind.MODEL_FILE,
                              f"{second.where} does not output text_embeds (the pooled prompt an SDXL UNet needs). "
                              "Convert the model again with Atelier (atelier convert onnx).")
        self._first = first.side([first.penultimate_hidden_state()])
        self._second = second.side([second.penultimate_hidden_state(), "text_embeds"])
        self._force_zeros = force_zeros_for_empty_prompt

    def __call__(self, request: ImageRequest, guided: bool) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
        embeds = sdxl_embeds(request.prompt, request.negative_prompt, guided, self._first, self._second,
                             self._force_zeros)
        hidden, pooled = _unet_inputs(embeds, guided)
        time_ids = add_time_ids(request.width, request.height)
        if guided:
            time_ids = np.concatenate([time_ids, time_ids])
        return {"encoder_hidden_states": hidden, "text_embeds": pooled, "time_ids": time_ids}, embeds.notices


def text_conditioning(folder, sessions: dict) -> SdText | SdxlText:
    """The conditioning for an inspected ONNX ``folder`` whose text-encoder sessions are open."""
    first = TextEncoder(load_tokenizer(folder.path / "tokenizer"), sessions["text_encoder"], "text_encoder/model.onnx")
    if folder.family != "sdxl":
        return SdText(first)
    second = TextEncoder(load_tokenizer(folder.path / "tokenizer_2"), sessions["text_encoder_2"],
                         "text_encoder_2/model.onnx")
    return SdxlText(first, second, bool(folder.components.get("force_zeros_for_empty_prompt", True)))
