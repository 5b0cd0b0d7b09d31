"""The CPU speed-ups compute what the stock modules compute.

They swap diffusers' layers and attention for faster ones, so each test
pins the output against the stock path: bit-identical where the arithmetic
is the same (packed weights), within bf16 rounding where the order of
operations differs (sliced attention), and end to end through the engine.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from engines.diffusion import cpu_speedups  # noqa: E402
from engines.diffusion.types import ImageLoadSpec, ImageRequest  # noqa: E402
from tests.fixtures.tiny_sd import tiny_sd  # noqa: E402,F401  (fixture)

needs_onednn = pytest.mark.skipif(not cpu_speedups.onednn_packing_available(),
                                  reason="this PyTorch build has no oneDNN weight packing")
needs_bf16_packing = pytest.mark.skipif(not cpu_speedups.onednn_packing_available_for("bf16"),
                                        reason="oneDNN packs bf16 weights only with AVX-512 (BW/VL/DQ), "
                                               "AVX-NE-CONVERT or AMX, which this CPU lacks")
BOTH_DTYPES = [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16_packing)]


def _reference_attention(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sliced_attention_matches_the_fused_kernel(dtype):
    # 1,100 tokens: above the slicing threshold and not a multiple of the 512-query slice.
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 1100, 40, generator=gen).to(dtype) for _ in range(3))
    ours = cpu_speedups.sliced_attention(q, k, v)
    assert ours.shape == q.shape and ours.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # bf16 keeps 8 bits of mantissa
    assert (ours.float() - _reference_attention(q, k, v)).abs().max().item() < tolerance


def test_short_key_sequences_use_the_fused_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_speedups.F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(a[0].shape) or a[0])
    q = torch.randn(1, 2, 2048, 8)
    kv = torch.randn(1, 2, 77, 8)  # cross-attention over 77 text tokens
    cpu_speedups.sliced_attention(q, kv, kv)
    assert calls == [q.shape]


def test_sliced_processor_matches_the_stock_one_and_falls_back_on_masks():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=64, heads=2, dim_head=32, residual_connection=True).eval()
    hidden = torch.randn(1, 64, 32, 36)  # a 4-D feature map of 1,152 tokens: sliced
    with torch.inference_mode():
        stock = attn(hidden)
        attn.set_processor(cpu_speedups.SlicedAttnProcessor())
        ours = attn(hidden)
        assert (ours - stock).abs().max().item() < 1e-4
        mask = torch.ones(1, 1152, dtype=torch.bool)
        mask[:, 1000:] = False
        masked = attn(hidden.flatten(2).transpose(1, 2), attention_mask=mask)
        attn.set_processor(AttnProcessor2_0())
        reference = attn(hidden.flatten(2).transpose(1, 2), attention_mask=mask)
    assert torch.equal(masked, reference)  # the mask went to the stock path


@needs_onednn
@pytest.mark.parametrize("dtype", BOTH_DTYPES)
def test_packed_layers_are_exact_and_drop_the_plain_weight(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 8, 1),
        torch.nn.Flatten(2), torch.nn.Linear(36, 12, bias=False),
    ).eval().to(dtype)
    x = torch.randn(2, 8, 6, 6, dtype=dtype)
    with torch.inference_mode():
        stock = model(x)
        assert cpu_speedups.pack_weights(model) == 3
        packed = model(x)
        other_shape = model[0](torch.randn(1, 8, 10, 4, dtype=dtype))  # packed for 6×6, still right for 10×4
    tolerance = 1e-4 if dtype == torch.float32 else 0.0
    assert (packed.float() - stock.float()).abs().max().item() <= tolerance
    assert other_shape.shape == (1, 16, 10, 4)
    assert all(type(m).__name__.startswith("Packed") for m in (model[0], model[2], model[4]))
    assert not hasattr(model[0], "weight") and model[0].packed_weight.is_mkldnn  # one copy of the weights


@needs_onednn
def test_subclassed_layers_keep_their_own_forward():
    class Lora(torch.nn.Linear):
        pass

    model = torch.nn.Sequential(Lora(4, 4), torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    assert cpu_speedups.pack_weights(model) == 0


@needs_onednn
@pytest.mark.parametrize("dtype", ["fp32", pytest.param("bf16", marks=needs_bf16_packing)])
def test_engine_with_and_without_speedups_gives_the_same_image(tiny_sd, dtype):  # noqa: F811
    from engines.diffusion.torch_engine import TorchDiffusionEngine
    from tests.test_diffusion_torch import png_pixels

    request = ImageRequest("a red fox", width=64, height=64, steps=3, seed=7)
    pixels = {}
    for speedups in (True, False):
        engine = TorchDiffusionEngine()
        engine.load(ImageLoadSpec(str(tiny_sd), backend="torch", device="cpu", dtype=dtype,
                                  cpu_speedups=speedups), lambda e: None)
        if speedups:
            assert any(type(m).__name__ == "PackedConv2d" for m in engine.pipeline.unet.modules())
        pixels[speedups] = png_pixels(engine.generate(request, lambda e: None).images[0].png)
        engine.unload()
    diff = np.abs(pixels[True] - pixels[False])
    if dtype == "fp32":
        assert diff.max() <= 1  # the same image, up to rounding to 8 bits
    else:  # bf16 results depend on the order of summation; the same 40 dB line as bf16 against fp32
        psnr = 10 * np.log10(255**2 / float((diff**2).mean())) if diff.any() else 99.0
        assert psnr > 40.0 and diff.mean() < 1.0


def test_sliced_attention_is_installed_only_over_the_stock_processor():
    from diffusers.models.attention_processor import Attention, AttnProcessor

    class Model(torch.nn.Module):
        """Stands in for a diffusers model: has attn_processors / set_attn_processor via Attention children."""

        def __init__(self):
            super().__init__()
            self.a = Attention(query_dim=8, heads=1, dim_head=8)
            self.b = Attention(query_dim=8, heads=1, dim_head=8, processor=AttnProcessor())

        @property
        def attn_processors(self):
            return {"a.processor": self.a.processor, "b.processor": self.b.processor}

        def set_attn_processor(self, processors):
            self.a.set_processor(processors.pop("a.processor"))
            self.b.set_processor(processors.pop("b.processor"))

    model = Model()
    assert cpu_speedups.use_sliced_attention(model) == 1
    assert isinstance(model.a.processor, cpu_speedups.SlicedAttnProcessor)
    assert type(model.b.processor) is AttnProcessor  # somebody's own processor is left alone


@needs_onednn
@pytest.mark.parametrize("dtype", BOTH_DTYPES)
def test_packed_geglu_matches_diffusers_geglu(dtype):
    from diffusers.models.activations import GEGLU

    torch.manual_seed(0)
    block = torch.nn.Sequential(GEGLU(24, 40)).eval().to(dtype)
    x = torch.randn(2, 300, 24, dtype=dtype)
    with torch.inference_mode():
        stock = block(x)
        assert cpu_speedups.pack_weights(block) == 1
        assert isinstance(block[0], cpu_speedups.PackedGEGLU)
        packed = block(x)
    assert packed.shape == stock.shape == (2, 300, 40)
    # fp32: the same sums; bf16: the fused multiply rounds once instead of twice (bf16 keeps 8 bits: 0.4%).
    error = (packed.float() - stock.float()).abs().max().item() / stock.float().abs().max().item()
    assert error < (1e-5 if dtype == torch.float32 else 1e-2)


@needs_bf16_packing
def test_packed_layers_survive_a_dtype_cast_of_their_model():
    """SDXL's img2img up-casts the VAE to fp32 around its encoder; packed bf16 layers must still run."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Flatten(2), torch.nn.Linear(16, 4))
    model = model.eval().to(torch.bfloat16)
    cpu_speedups.pack_weights(model)
    model.to(torch.float32)  # casts the biases; the packed weights stay bf16
    with torch.inference_mode():
        out = model(torch.randn(1, 4, 4, 4))
    assert out.shape == (1, 8, 4)


def test_packing_is_only_used_on_x86_64(monkeypatch):
    monkeypatch.setattr(cpu_speedups.platform, "machine", lambda: "arm64")
    assert not cpu_speedups.onednn_packing_available()


def test_a_failing_speed_up_leaves_a_working_engine(tiny_sd, monkeypatch):  # noqa: F811
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    def refuse(pipe, dtype):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(cpu_speedups, "speed_up_for_cpu", refuse)
    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd), backend="torch", device="cpu", dtype="fp32"), lambda e: None)
    result = engine.generate(ImageRequest("a red fox", width=64, height=64, steps=2, seed=1), lambda e: None)
    assert len(result.images) == 1
    engine.unload()


def test_bf16_is_left_unpacked_where_onednn_cannot_pack_it(monkeypatch):
    """On an AVX2-only CPU oneDNN refuses bf16 weights: the speed-ups keep the stock layers instead of failing."""
    monkeypatch.setattr(cpu_speedups, "_BF16_PACKING", False)
    monkeypatch.setattr(cpu_speedups, "onednn_packing_available", lambda: True)
    assert not cpu_speedups.onednn_packing_available_for("bf16")
    assert cpu_speedups.onednn_packing_available_for("fp32")
