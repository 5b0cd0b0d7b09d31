"""Make a diffusers UNet run faster on the CPU, without changing what it computes.

Profiling one SD 1.5 UNet step (512×512, guidance, so a batch of 2) on the
2-core AMD EPYC here (AVX-512 BF16) showed where PyTorch's eager CPU path
loses time, and this module removes the two biggest losses:

* **Weights re-laid-out on every call.** oneDNN wants convolution and
  matrix weights in a blocked layout; eager PyTorch reorders the plain
  weight into it on every call. For the UNet's small, wide layers that
  reorder costs more than the arithmetic: a 2560→1280 3×3 convolution on
  an 8×8 map took 65 ms in bf16, 9.3 ms with a pre-packed weight.
  :func:`pack_weights` swaps each ``nn.Conv2d`` and ``nn.Linear`` for a
  module that packs its weight once, at load time, with oneDNN's own
  packing ops (the ones ``torch.compile``'s freezing pass uses) and keeps
  only the packed copy, so memory does not grow. The results are
  bit-identical to the plain modules in bf16.
* **Self-attention over 4,096 tokens in bf16.** PyTorch's CPU
  flash-attention kernel managed about 140 GFLOP/s on the UNet's 40-wide
  heads; a plain loop over heads and 512-query slices (two oneDNN matrix
  products and a softmax that stays in cache) took half the time.
  :class:`SlicedAttnProcessor` uses it for long bf16 sequences and falls
  back to ``scaled_dot_product_attention`` everywhere else.

Together with bf16 weights (instead of autocast, which re-casts weights on
every call) a step went from about 4.9 s to about 3 s in bf16, and from
about 10.4 s to 7.3 s in fp32, where only the packing applies. Measured by
``benchmarks/bench_diffusion.py``; ``torch.compile`` would need a C++
compiler on the user's machine and minutes of compiling, so it is not used.
"""

from __future__ import annotations

import logging
import platform
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# Query rows per slice: 512 × 4,096 bf16 scores are 4 MiB, which stays in L2/L3. Measured 128…1024: 512 best.
QUERY_SLICE = 512
# Below this many keys (cross-attention over 77 text tokens) the flash kernel is as fast or faster.
MIN_KEYS_FOR_SLICING = 1024


def onednn_packing_available() -> bool:
    """Whether to pack: an x86-64 CPU (where it was measured) and a PyTorch build with oneDNN's packing ops.

    ARM builds route oneDNN through other kernels (ACL), where neither the
    packing nor its gain was checked, so they keep the stock modules.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and mkldnn is not None
                and hasattr(mkldnn, "_reorder_convolution_weight") and hasattr(mkldnn, "_linear_pointwise"))


_BF16_PACKING: bool | None = None


def onednn_packing_available_for(dtype: str) -> bool:
    """:func:`onednn_packing_available`, and for bf16 a CPU whose oneDNN can pack bf16 weights.

    oneDNN packs bf16 convolution weights only with AVX-512 (BW, VL, DQ),
    AVX-NE-CONVERT or AMX; on an AVX2-only CPU the reorder raises. Asked once,
    by packing a tiny weight, rather than from CPU flags, so the answer is
    the library's own.
    """
    global _BF16_PACKING
    if not onednn_packing_available():
        return False
    if dtype != "bf16":
        return True
    if _BF16_PACKING is None:
        try:
            weight = torch.zeros(8, 8, 3, 3, dtype=torch.bfloat16)
            torch.ops.mkldnn._reorder_convolution_weight(weight, [1, 1], [1, 1], [1, 1], 1, [1, 8, 8, 8])
            _BF16_PACKING = True
        except RuntimeError as exc:
            log.info("bf16 weights are not packed on this CPU: %s", exc)
            _BF16_PACKING = False
    return _BF16_PACKING


# The input shape oneDNN is told when packing a convolution's weight. It only guides the choice of blocked
# layout, and other shapes still compute correctly: packed for 64×64 or 1×1, an 8×8, 32×32 or 64×64 step ran
# at the same speed (within 3%), so the weights are packed once, at load time, for any resolution.
_PACKING_HINT_SIZE = 64


def _as_weight_dtype(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """The input in the packed weight's dtype.

    ``module.to(dtype)`` casts parameters but cannot re-pack a oneDNN weight,
    so a pipeline that up-casts a packed model (SDXL's VAE does, around its
    encoder) would hand fp32 inputs to bf16 weights, which oneDNN refuses.
    The layer then computes in the dtype it was packed in.
    """
    return x if x.dtype == packed.dtype else x.to(packed.dtype)


class PackedConv2d(nn.Module):
    """``nn.Conv2d`` for inference with its weight packed for oneDNN once, when it is built."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.bias = conv.bias
        hint = [1, conv.in_channels, _PACKING_HINT_SIZE, _PACKING_HINT_SIZE]
        with torch.no_grad():
            self.packed_weight = torch.ops.mkldnn._reorder_convolution_weight(
                conv.weight.detach(), self.padding, self.stride, self.dilation, self.groups, hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_weight_dtype(x, self.packed_weight)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed_weight, self.bias, self.padding, self.stride, self.dilation, self.groups, "none", [], "")


class PackedLinear(nn.Module):
    """``nn.Linear`` for inference with its weight packed for oneDNN once, when it is built."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bias = linear.bias
        with torch.no_grad():
            # The row count is a hint too; the UNet's rows per call range from 77 to 8,192.
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 4096)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_weight_dtype(x, self.packed_weight)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


class PackedGEGLU(nn.Module):
    """diffusers' ``GEGLU`` (``value * gelu(gate)`` from one projection) as two packed oneDNN products.

    The stock module computes both halves in one matrix, then copies the
    gate half out, applies GELU and multiplies: three passes over a
    (tokens × 2,560) tensor. Here the gate's product carries the GELU and
    the value's product multiplies by the gate as it is written. At 4,096
    tokens (the UNet's top level) that took 40 ms instead of 103 ms in bf16;
    the results differ only by bf16 rounding (one unit in the last place).
    """

    def __init__(self, geglu: nn.Module) -> None:
        super().__init__()
        weight, bias = geglu.proj.weight.detach(), geglu.proj.bias
        half = weight.shape[0] // 2
        with torch.no_grad():
            self.value_weight = torch.ops.mkldnn._reorder_linear_weight(weight[:half].contiguous(), 4096)
            self.gate_weight = torch.ops.mkldnn._reorder_linear_weight(weight[half:].contiguous(), 4096)
        self.value_bias = None if bias is None else nn.Parameter(bias.detach()[:half].clone(), requires_grad=False)
        self.gate_bias = None if bias is None else nn.Parameter(bias.detach()[half:].clone(), requires_grad=False)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        hidden_states = _as_weight_dtype(hidden_states, self.gate_weight)
        gate = torch.ops.mkldnn._linear_pointwise(hidden_states, self.gate_weight, self.gate_bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(hidden_states, gate, self.value_weight, self.value_bias, "mul")


def _is_stock_geglu(module: nn.Module) -> bool:
    cls = type(module)
    return (cls.__name__ == "GEGLU" and cls.__module__ == "diffusers.models.activations"
            and type(getattr(module, "proj", None)) is nn.Linear)


def release_file_pages(module: nn.Module) -> None:
    """Copy the parameters and buffers that packing left in place (biases, norms: a few MB) into plain memory.

    diffusers loads fp32 weights as views of the memory-mapped safetensors
    file. Once the big weights are packed, these small tensors are all that
    keeps the mapping (gigabytes of file pages in the resident set) alive.
    """
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.data = tensor.data.clone()


def _packed_replacement(child: nn.Module):
    """The packed module's class for ``child``, or None when it stays as it is."""
    if _is_stock_geglu(child):
        return PackedGEGLU
    if type(child) is nn.Conv2d and child.padding_mode == "zeros":
        return PackedConv2d
    if type(child) is nn.Linear:
        return PackedLinear
    return None


def _swaps(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module, type]]:
    """(parent, attribute, layer, packed class) for every layer under ``module`` that gets packed."""
    found = []
    for name, child in module.named_children():
        replacement = _packed_replacement(child)
        if replacement is not None:
            found.append((module, name, child, replacement))
        else:
            found.extend(_swaps(child))
    return found


def pack_weights(module: nn.Module, workers: int | None = None) -> int:
    """Replace the plain convolutions and linear layers under ``module`` with packed ones; returns how many.

    Only exact ``nn.Conv2d`` (zero padding) and ``nn.Linear`` are swapped: a
    subclass (LoRA layers, quantized layers) keeps its own forward. Each
    plain weight is dropped as soon as its packed copy exists, so memory
    holds one copy of the weights, not two. oneDNN's reorder runs on one
    core and releases the GIL, so the layers are packed on a thread per
    core: SD 1.5's UNet in bf16 took 4.7–5.0 s on one thread, 3.2–3.3 s on
    the two here.
    """
    swaps = _swaps(module)
    workers = workers or min(len(swaps), torch.get_num_threads()) or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pack") as pool:
        packed = list(pool.map(lambda swap: swap[3](swap[2]), swaps))
    for (parent, name, _child, _cls), replacement in zip(swaps, packed, strict=True):
        setattr(parent, name, replacement)
    return len(swaps)


def sliced_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d)·V over (batch, heads, tokens, dim), one head and one slice of queries at a time."""
    batch, heads, tokens, dim = query.shape
    if key.shape[2] < MIN_KEYS_FOR_SLICING or query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, key, value)
    q = (query * dim**-0.5).reshape(batch * heads, tokens, dim)
    k = key.reshape(batch * heads, -1, dim)
    v = value.reshape(batch * heads, -1, dim)
    out = torch.empty((batch * heads, tokens, dim), dtype=query.dtype, device=query.device)
    for h in range(batch * heads):
        k_t, v_h = k[h].t(), v[h]
        for start in range(0, tokens, QUERY_SLICE):
            scores = torch.mm(q[h, start:start + QUERY_SLICE], k_t)
            torch.softmax(scores, dim=-1, out=scores)
            torch.mm(scores, v_h, out=out[h, start:start + QUERY_SLICE])
    return out.view(batch, heads, tokens, dim)


def _processor_base():
    from diffusers.models.attention_processor import AttnProcessor2_0

    return AttnProcessor2_0


class SlicedAttnProcessor(_processor_base()):
    """diffusers' ``AttnProcessor2_0`` with :func:`sliced_attention` in place of the fused kernel.

    The body follows ``AttnProcessor2_0.__call__`` (diffusers 0.42, Apache-2.0) step for step; a call it
    does not cover (an attention mask, a spatial norm) goes to the original unchanged.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None or attn.spatial_norm is not None or args or kwargs:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = sliced_attention(query, key, value)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def use_sliced_attention(model: nn.Module) -> int:
    """Give every attention layer that uses the stock processor the sliced one; returns how many."""
    AttnProcessor2_0 = _processor_base()
    processors = getattr(model, "attn_processors", None)
    if not processors:
        return 0
    sliced = SlicedAttnProcessor()
    replaced = {name: sliced if type(proc) is AttnProcessor2_0 else proc for name, proc in processors.items()}
    count = sum(1 for proc in replaced.values() if proc is sliced)
    model.set_attn_processor(replaced)  # (empties the dict it is given)
    return count


def speed_up_for_cpu(pipe, dtype: str) -> dict[str, int]:
    """Apply the speed-ups that pay off for ``dtype`` to the pipeline's UNet and VAE, in place.

    Packing pays off in fp32 and bf16; sliced attention only in bf16 (in
    fp32 it measured the same as the flash kernel). In the VAE, whose
    convolutions are large, packing changed nothing, but sliced attention
    took a 512×512 bf16 decode from 5.2 to 3.9 s. The text encoder runs
    once per image on 77 tokens and is left as it is.
    """
    done = {"packed_layers": 0, "sliced_attention_layers": 0}
    for name in ("unet", "vae"):
        model = getattr(pipe, name, None)
        if model is None:
            continue
        if dtype == "bf16":
            done["sliced_attention_layers"] += use_sliced_attention(model)
        if onednn_packing_available_for(dtype):
            done["packed_layers"] += pack_weights(model)  # convolutions then hand on channels-last activations
            release_file_pages(model)
    log.info("CPU speed-ups (%s): %s", dtype, done)
    return done
