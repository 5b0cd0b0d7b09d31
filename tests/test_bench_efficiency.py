"""bench_diffusion's efficiency figure: a step's FLOPs per second over the best kernel measured around it.

The arithmetic is checked by hand, and the FLOP count on a tiny UNet built
on the meta device (no weights, no arithmetic: milliseconds), whose
attention FLOPs are worked out from its layout below.
"""

from __future__ import annotations

import pytest

from benchmarks.kernel_rates import best_kernel, efficiency, step_efficiency


def test_efficiency_is_the_step_rate_over_the_kernel_rate() -> None:
    assert efficiency(1.6e12, 2.0, 1.0) == pytest.approx(0.8)  # 0.8 TFLOP/s of a 1.0 TFLOP/s kernel
    with pytest.raises(ValueError, match="must be positive"):
        efficiency(1.6e12, 0.0, 1.0)


def test_the_better_of_the_measurements_before_and_after_is_the_yardstick() -> None:
    before = {"matmul_bf16": 0.5, "packed_conv3x3_bf16": 0.8, "matmul_fp32": 2.0}
    after = {"matmul_bf16": 0.6, "packed_conv3x3_bf16": 0.9}
    assert best_kernel(before, "bf16") == ("packed_conv3x3_bf16", 0.8)  # the fp32 entry is not a bf16 kernel
    with pytest.raises(ValueError, match="no fp16 kernel was measured"):
        best_kernel(before, "fp16")
    figures = step_efficiency({"total": 1.6e12, "attention": 0.24e12}, 2.5, "bf16", before, after)
    assert figures == {
        "step_tflop": 1.6, "step_tflop_without_attention": 1.36, "step_tflops": 0.64,
        "kernel_tflops_before": before, "kernel_tflops_after": after,
        "best_kernel": "packed_conv3x3_bf16", "best_kernel_tflops": 0.9,
        "efficiency_pct": 71.1, "efficiency_without_attention_pct": 60.4,
    }


def test_a_steps_flops_count_its_attention_and_double_with_guidance(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from benchmarks.step_flops import unet_step_flops

    with torch.device("meta"):  # the tiny test pipeline's UNet layout (tests/fixtures/tiny_sd.py)
        diffusers.UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
            norm_num_groups=32).save_config(str(tmp_path / "unet"))
    guided = unet_step_flops(tmp_path, 64, guided=True)
    plain = unet_step_flops(tmp_path, 64, guided=False)
    # A 64² image has 8×8 latents; attention runs at 4×4 = 16 tokens, 64 wide, in 6 transformer blocks (2 down,
    # 1 middle, 3 up), each over itself (16 keys) and the 77 text tokens: Q·K and weights·V, 2 FLOPs a product.
    assert guided["attention"] == 6 * 2 * 2 * (2 * 16 * 64 * (16 + 77))
    assert (guided["total"], guided["attention"]) == (2 * plain["total"], 2 * plain["attention"])
    assert guided["total"] > 3 * guided["attention"]  # convolutions and projections are counted too
