"""Faster multi-step images for a slight loss of quality: reuse the UNet's deep features across steps (DeepCache).

Neighbouring denoising steps change the UNet's deep, low-resolution
features very little; most of the change is in the shallow, full-resolution
path. DeepCache (Ma et al., CVPR 2024) therefore runs the whole UNet only
every ``interval`` steps and keeps the feature that enters its last up
block (everything deeper, already upsampled). The steps in between run
only the shallow ends, which is a small part of the work:

    conv_in → first down block ─── skip connections ───┐
                                                       ↓
              cached deep feature  →  last up block → conv_out

The time embedding, the prompt and SDXL's added conditions are computed
for every step as usual, so the shallow path sees the right timestep; only
the deep feature is a few steps old. ``interval=1`` is the full UNet;
requests allow at most 5, beyond which the reused features are too stale.

:class:`DeepCache` wraps one UNet for one image and is undone when the
image is finished, so the pipeline is unchanged for the next request.
"""

from __future__ import annotations

class DeepCache:
    """Within ``with DeepCache(unet, interval):`` the UNet runs in full only every ``interval`` calls."""

    def __init__(self, unet, interval: int) -> None:
        self._unet = unet
        self._interval = interval
        self._calls = 0
        self._deep = None  # the input of the last up block at the last full call
        self._hook = None
        self._original = None
        self.full_calls = 0
        self.shallow_calls = 0

    def __enter__(self) -> DeepCache:
        if self._interval <= 1:
            return self
        last = self._unet.up_blocks[-1]

        def keep(module, args, kwargs):
            self._deep = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        self._hook = last.register_forward_pre_hook(keep, with_kwargs=True)
        self._original = self._unet.forward
        self._unet.forward = self._forward
        return self

    def __exit__(self, *exc) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._original is not None:
            del self._unet.forward  # the instance attribute: the class's forward again
            self._original = None
        self._deep = None

    def _forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs):
        reuse = (self._calls % self._interval != 0 and self._deep is not None
                 and self._deep.shape[0] == sample.shape[0])
        self._calls += 1
        if not reuse:
            self.full_calls += 1
            return self._original(sample, timestep, encoder_hidden_states, *args, **kwargs)
        self.shallow_calls += 1
        return self._shallow(sample, timestep, encoder_hidden_states, **kwargs)

    def _shallow(self, sample, timestep, encoder_hidden_states, timestep_cond=None, attention_mask=None,
                 cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=True, **_ignored):
        """UNet2DConditionModel.forward's first and last blocks only, around the cached deep feature."""
        unet = self._unet
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
        aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states,
                                 added_cond_kwargs=added_cond_kwargs or {})
        emb = emb + aug if aug is not None else emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        encoder_hidden_states = unet.process_encoder_hidden_states(
            encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
        hidden = unet.conv_in(sample)
        first, last = unet.down_blocks[0], unet.up_blocks[-1]
        attention = dict(encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
                         cross_attention_kwargs=cross_attention_kwargs)
        if getattr(first, "has_cross_attention", False):
            _, res = first(hidden_states=hidden, temb=emb, **attention)
        else:
            _, res = first(hidden_states=hidden, temb=emb)
        skips = ((hidden,) + tuple(res))[:len(last.resnets)]  # what the last up block takes in the full UNet
        if getattr(last, "has_cross_attention", False):
            out = last(hidden_states=self._deep, temb=emb, res_hidden_states_tuple=skips, upsample_size=None,
                       **attention)
        else:
            out = last(hidden_states=self._deep, temb=emb, res_hidden_states_tuple=skips, upsample_size=None)
        if unet.conv_norm_out is not None:
            out = unet.conv_act(unet.conv_norm_out(out))
        out = unet.conv_out(out)
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)
