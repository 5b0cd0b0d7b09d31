"""Prompts → the diffusers pipeline's ``prompt_embeds`` arguments, with A1111's weighting and long prompts.

The PyTorch engine encodes the prompt itself, with the pipeline's own
tokenizers and text encoders, through the conditioning shared with the
ONNX engine (:mod:`engines.diffusion.prompt_conditioning`), and hands the
pipeline the embeddings (``prompt_embeds``, ``negative_prompt_embeds`` and,
for SDXL, the pooled ones). The pipeline then skips its own
``encode_prompt``, which would truncate at 77 tokens and read ``(word:1.3)``
as text. Everything else the pipeline does (guidance, LoRA layers in the
text encoders, the SDXL size ids) is unchanged.
"""

from __future__ import annotations

import numpy as np

from engines.diffusion.prompt_conditioning import ClipSide, PromptEmbeds, sd_embeds, sdxl_embeds


def _side(tokenizer, text_encoder, penultimate: bool, pooled: bool) -> ClipSide:
    """A pipeline's CLIP module as an Encoder: ids → [hidden state (last or penultimate), pooled?]."""
    import torch

    use_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))
    end = tokenizer.eos_token_id

    def encode(ids: np.ndarray) -> list[np.ndarray]:
        tokens = torch.from_numpy(ids).to(text_encoder.device)
        mask = None
        if use_mask:  # as the tokenizer's own mask: the start, the tokens and the first end token
            first_end = int(np.argmax(ids[0] == end)) if (ids[0] == end).any() else ids.shape[1] - 1
            mask = (torch.arange(ids.shape[1]) <= first_end).long().unsqueeze(0).to(text_encoder.device)
        with torch.inference_mode():
            output = text_encoder(tokens, attention_mask=mask, output_hidden_states=penultimate)
        hidden = output.hidden_states[-2] if penultimate else output[0]
        outputs = [hidden.float().cpu().numpy()]
        if pooled:
            outputs.append(output[0].float().cpu().numpy())  # CLIPTextModelWithProjection: text_embeds
        return outputs

    return ClipSide(tokenizer, encode)


class PipelineText:
    """The loaded pipeline's prompt encoding; built once per model, since the empty prompt is cached."""

    def __init__(self, pipe, family: str) -> None:
        self._pipe = pipe
        self._family = family
        if family == "sdxl":
            self._first = _side(pipe.tokenizer, pipe.text_encoder, penultimate=True, pooled=False)
            self._second = _side(pipe.tokenizer_2, pipe.text_encoder_2, penultimate=True, pooled=True)
            self._force_zeros = bool(pipe.config.force_zeros_for_empty_prompt)
        else:
            self._first = _side(pipe.tokenizer, pipe.text_encoder, penultimate=False, pooled=False)

    def embeds(self, prompt: str, negative: str, guided: bool) -> PromptEmbeds:
        if self._family == "sdxl":
            return sdxl_embeds(prompt, negative, guided, self._first, self._second, self._force_zeros)
        return sd_embeds(prompt, negative, guided, self._first)

    def pipeline_kwargs(self, embeds: PromptEmbeds) -> dict:
        """The pipeline call's prompt arguments, on the UNet's device and in its precision."""
        import torch

        unet = self._pipe.unet
        tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(unet.device, unet.dtype)  # noqa: E731
        kwargs = {"prompt_embeds": tensor(embeds.prompt)}
        if embeds.negative is not None:
            kwargs["negative_prompt_embeds"] = tensor(embeds.negative)
        if embeds.pooled is not None:
            kwargs["pooled_prompt_embeds"] = tensor(embeds.pooled)
            if embeds.negative_pooled is not None:
                kwargs["negative_pooled_prompt_embeds"] = tensor(embeds.negative_pooled)
        return kwargs
