"""FLOPs of one denoising step, counted once per run with PyTorch's own counter, on no real memory.

The UNet is built from the model folder's ``unet/config.json`` on the meta
device (shapes only: no weights are read, no arithmetic is done, so the
SD 1.5 count takes a second, not a step's time) and run once under
``torch.utils.flop_counter.FlopCounterMode`` with the step's inputs: a
batch of 2 with guidance (the negative prompt runs too), else 1, latents
at an eighth of the image's side, and 77 text tokens.

Attention is counted too. PyTorch's counter has no formula for the CPU
flash-attention kernel (``_scaled_dot_product_flash_attention_for_cpu``)
and silently skips it, which is why figures counted on a real CPU run
(the README's 1.35 TFLOP per guided SD 1.5 step) leave attention out. Here
that kernel gets the counter's own SDPA formula (on the meta device PyTorch
takes the math path, whose matrix products are counted anyway): 1.61 TFLOP
per guided SD 1.5 step at 512², 0.25 of it attention, so 1.35 without. The
attention's share is reported apart so both ways of counting compare. The
scheduler's update is a few element-wise operations and is not counted.
"""

from __future__ import annotations

from pathlib import Path

TEXT_TOKENS = 77
_ATTENTION_OPS = ("bmm", "baddbmm")  # the math path of scaled_dot_product_attention; fused kernels contain "attention"


def unet_step_flops(folder: Path, size: int, guided: bool) -> dict[str, float]:
    """{"total", "attention"}: FLOPs of one UNet call for a ``size``² image of the diffusers folder ``folder``."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop

    config = UNet2DConditionModel.load_config(str(Path(folder) / "unet"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config).eval()
    cross = config["cross_attention_dim"]
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    batch, side = (2 if guided else 1), size // 8
    latents = torch.zeros(batch, config["in_channels"], side, side, device="meta")
    text = torch.zeros(batch, TEXT_TOKENS, cross, device="meta")
    aten = torch.ops.aten
    counter = FlopCounterMode(display=False,
                              custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop})
    with counter, torch.inference_mode():
        unet(latents, 999, encoder_hidden_states=text)
    by_op = counter.get_flop_counts().get("Global", {})
    attention = sum(count for op, count in by_op.items()
                    if "attention" in str(op) or str(op).rsplit(".", 1)[-1] in _ATTENTION_OPS)
    return {"total": float(counter.get_total_flops()), "attention": float(attention)}
