"""The image fit estimate: per runtime and precision, against figures measured on the SD 1.5 architecture.

The measured figures come from ``benchmarks/bench_diffusion.py`` (SD 1.5
architecture with random weights, 512×512, guidance 7, 2-core AMD EPYC):
the peak anonymous memory of the process (see benchmarks/memory_probe.py
for why file pages that are only mapped do not count). The benchmark
prints the same comparison; these tests keep the estimate from drifting
away from it when the constants change.
"""

from __future__ import annotations

import json

import pytest

from engines.machine.hardware import CpuInfo, HardwareReport, MemoryInfo
from engines.machine.image_fit import PipelineShape, estimate_image, judge_image_fit

GB = 10**9
SD15_FOLDER_BYTES = 4_265_267_180  # unet + vae + text encoder, fp32 safetensors (and the same as ONNX graphs)
# case → measured peak anonymous MB (the benchmark's peak_anon_mb)
MEASURED_MB = {("torch", "bf16"): 3778, ("torch", "fp32"): 5438, ("onnx", "fp32"): 11262}


def machine(features=("AVX2", "AVX-512 BF16"), available=20 * GB) -> HardwareReport:
    return HardwareReport("Linux", "3.11", CpuInfo("AMD EPYC", "x86_64", 2, 2, list(features)),
                          MemoryInfo(24 * GB, available))


def write_sd_configs(folder, down_blocks, heads, sample_size=64):
    (folder / "unet").mkdir(parents=True)
    (folder / "vae").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps({
        "block_out_channels": [320, 640, 1280, 1280][: len(down_blocks)], "down_block_types": down_blocks,
        "attention_head_dim": heads, "sample_size": sample_size}))
    (folder / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))
    return folder


def test_pipeline_shape_finds_the_first_attention_level_and_its_heads(tmp_path):
    sd15 = PipelineShape.from_folder(write_sd_configs(tmp_path / "sd15", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], 8))
    assert (sd15.first_attention_level, sd15.first_attention_heads, sd15.native_size) == (0, 8, 512)
    sd2 = PipelineShape.from_folder(write_sd_configs(tmp_path / "sd2", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                                                     [5, 10, 20, 20], sample_size=96))
    assert (sd2.first_attention_level, sd2.first_attention_heads, sd2.native_size) == (0, 5, 768)
    sdxl = PipelineShape.from_folder(write_sd_configs(tmp_path / "sdxl", ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
                                                      [5, 10, 20], sample_size=128))
    assert (sdxl.first_attention_level, sdxl.first_attention_heads, sdxl.native_size) == (1, 10, 1024)


@pytest.mark.parametrize(("runtime", "dtype"), sorted(MEASURED_MB))
def test_estimate_is_within_20_percent_of_the_measured_sd15_peak(runtime, dtype):
    need = estimate_image(SD15_FOLDER_BYTES, 512, machine(), file_dtype="fp32", run_dtype=dtype, runtime=runtime)
    measured = MEASURED_MB[(runtime, dtype)] * 10**6
    assert abs(need.total_bytes - measured) / measured < 0.20


def test_onnx_runtime_needs_far_more_than_pytorch_and_the_verdict_says_so():
    torch_need = estimate_image(SD15_FOLDER_BYTES, 512, machine(), file_dtype="fp32", run_dtype="fp32")
    onnx_need = estimate_image(SD15_FOLDER_BYTES, 512, machine(), file_dtype="fp32", runtime="onnx")
    assert onnx_need.weights_bytes == 2 * SD15_FOLDER_BYTES
    assert onnx_need.total_bytes > 2 * torch_need.total_bytes - 2 * GB
    eight_gb_free = machine(features=("AVX2",), available=9 * GB)
    assert judge_image_fit(SD15_FOLDER_BYTES, 512, eight_gb_free, file_dtype="fp32").fits
    onnx = judge_image_fit(SD15_FOLDER_BYTES, 512, eight_gb_free, file_dtype="fp32", runtime="onnx")
    assert onnx.verdict == "wont_fit" and "activations at 512×512" in onnx.explanation


def test_bf16_cpus_hold_fp32_files_at_half_size():
    fp32_cpu = estimate_image(SD15_FOLDER_BYTES, 512, machine(features=("AVX2",)), file_dtype="fp32")
    bf16_cpu = estimate_image(SD15_FOLDER_BYTES, 512, machine(), file_dtype="fp32")
    assert fp32_cpu.weights_bytes == SD15_FOLDER_BYTES and bf16_cpu.weights_bytes == SD15_FOLDER_BYTES // 2


@pytest.mark.parametrize(("features", "dtype"), [
    (("AVX2",), "fp32"),
    (("AVX2", "AVX-512 BF16"), "bf16"),
    (("AMX", "AMX-BF16"), "bf16"),
    (("AMX",), "fp32"),  # amx_tile alone computes nothing in bf16
])
def test_the_engine_the_estimate_and_the_auto_backend_ask_one_bf16_check(monkeypatch, features, dtype):
    from engines.diffusion import auto
    from engines.diffusion.torch_engine import resolve_dtype
    from engines.machine import hardware
    from engines.machine.image_fit import default_run_dtype

    cpu = CpuInfo("Test CPU", "x86_64", 2, 2, list(features))
    monkeypatch.setattr(hardware, "probe_cpu", lambda: cpu)
    assert cpu.native_bf16 is (dtype == "bf16")
    assert resolve_dtype("cpu", "auto") == dtype
    assert default_run_dtype(machine(features)) == dtype
    assert auto._cpu_bf16() is (dtype == "bf16")
