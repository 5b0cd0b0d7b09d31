"""Expected speeds: the arithmetic, the machine measurement and its cache, measured speeds, recommendations."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace

import pytest

from engines.machine import machine_speed as ms
from engines.library.advisor import Advisor, TYPICAL_DOWNLOAD_RATE
from engines.library.catalog import load_catalog
from engines.machine.fit import FitVerdict, MemoryNeed
from engines.machine.hardware import CpuInfo, DiskInfo, HardwareReport, MemoryInfo, _nvml_bandwidth
from engines.machine.image_speed import estimate_image_speed
from engines.library.measured_speeds import (
    read_download_rate,
    read_measured,
    record_download_rate,
    record_image_speed,
    record_text_speed,
)
from engines.library.recommend import recommend, suitability_order
from engines.machine.speed import SpeedEstimate, compare_words, estimate_text_speed, format_speed, format_speed_short
from engines.workspace import open_workspace

GB = 1_000_000_000
CPU = CpuInfo("Test CPU 9000", "x86_64", 2, 4, ["AVX2"])


# ---- words ----------------------------------------------------------------------


@pytest.mark.parametrize("value, unit, words", [
    (18.4, "tokens/s", "18 tokens/s"),
    (6.46, "tokens/s", "6.5 tokens/s"),
    (0.43, "tokens/s", "0.4 tokens/s"),
    (7.26, "s/image", "7.3 s per image"),
    (37.4, "s/image", "37 s per image"),
    (130, "s/image", "2 min 10 s per image"),
    (120, "s/image", "2 min per image"),
])
def test_speeds_in_words(value, unit, words):
    assert format_speed(value, unit) == words
    assert SpeedEstimate(value, unit, "").words == f"about {words} here"


def test_short_forms_and_the_comparison_with_a_measurement():
    assert format_speed_short(13.2, "tokens/s") == "13 tokens/s"
    assert format_speed_short(37.4, "s/image") == "37 s/image"
    assert format_speed_short(150, "s/image") == "2.5 min/image"
    estimate = SpeedEstimate(18.2, "tokens/s", "")
    assert compare_words(21.3, "tokens/s", estimate) == "measured 21 tokens/s (estimated 18)"
    assert compare_words(21.3, "tokens/s", None) == "measured 21 tokens/s"
    image = SpeedEstimate(10.4, "s/image", "")
    assert (compare_words(12.2, "s/image", image, "512×512, 2 steps")
            == "measured 12 s per image at 512×512, 2 steps (estimated 10 s)")


# ---- the text estimate ------------------------------------------------------------


def test_text_speed_is_bandwidth_over_bytes_read_per_token():
    from engines.machine import speed

    # 1 GB of weights, 100 kB of cache per token at 4,096 tokens (half filled: 0.2048 GB), 20 GB/s.
    estimate = estimate_text_speed(1 * GB, 100_000, 4096, cpu_bandwidth=20 * GB)
    seconds = speed.TOKEN_OVERHEAD_S + 1.2048 * GB / (20 * GB * speed.READ_EFFICIENCY)
    assert estimate.value == pytest.approx(1 / seconds)
    assert estimate.unit == "tokens/s"
    assert estimate.basis == ("1.2 GB read per token (1.0 GB weights + 0.20 GB context cache at 2,048 tokens) "
                              "at 20 GB/s measured memory bandwidth")


def test_layers_on_a_gpu_read_at_the_gpu_bandwidth():
    from engines.machine import speed

    half = estimate_text_speed(4 * GB, 0, 4096, cpu_bandwidth=20 * GB, gpu_layers=16, total_layers=32,
                               gpu_bandwidth=1000 * GB)
    seconds = speed.TOKEN_OVERHEAD_S + 2 * GB / (20 * GB * speed.READ_EFFICIENCY) + 2 * GB / (1000 * GB * speed.GPU_READ_EFFICIENCY)
    assert half.value == pytest.approx(1 / seconds)
    assert "50% of it at 1000 GB/s on the GPU, the rest at 20 GB/s measured memory bandwidth" in half.basis
    assert estimate_text_speed(4 * GB, 0, 4096, cpu_bandwidth=20 * GB, gpu_layers=32, total_layers=32,
                               gpu_bandwidth=None) is None  # a GPU whose bandwidth we do not know
    shared = estimate_text_speed(4 * GB, 0, 4096, cpu_bandwidth=100 * GB, gpu_layers=32, total_layers=32,
                                 unified_memory=True)
    assert "(shared by the CPU and GPU)" in shared.basis


def test_nvml_bandwidth_is_bus_width_times_memory_clock_times_two():
    class FakeNvml:
        NVML_CLOCK_MEM = 2

        @staticmethod
        def nvmlDeviceGetMemoryBusWidth(handle):
            return 384

        @staticmethod
        def nvmlDeviceGetMaxClockInfo(handle, clock):
            assert clock == 2
            return 10501  # MHz: an RTX 4090's GDDR6X

    assert _nvml_bandwidth(FakeNvml, None) == pytest.approx(384 / 8 * 10501e6 * 2)  # 1008 GB/s, its spec

    class OldDriver(FakeNvml):
        @staticmethod
        def nvmlDeviceGetMemoryBusWidth(handle):
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    assert _nvml_bandwidth(OldDriver, None) is None


# ---- the image estimate -------------------------------------------------------------


def test_image_seconds_from_flops_and_the_measured_rate():
    from engines.machine.image_speed import ENGINE_FACTORS, VAE_SHARE_OF_RATE

    rate = 100e9 * ENGINE_FACTORS[("torch", "fp32")]
    turbo = estimate_image_speed("sd-turbo", 512, 1, 0.0, matmul_flops=100e9, backend="torch", dtype="fp32")
    expected = (0.045 + 0.80) * 1e12 / rate + 2.48e12 / (rate * VAE_SHARE_OF_RATE)
    assert turbo.value == pytest.approx(expected)
    assert turbo.basis == ("3.3 TFLOP for a 512×512 SD 2.1 image in 1 step, at 0.10 TFLOP/s "
                           "(PyTorch fp32 on this CPU)")
    guided = estimate_image_speed("sd15", 512, 20, 7.0, matmul_flops=100e9, backend="torch", dtype="fp32")
    assert "in 20 steps with guidance" in guided.basis
    assert guided.value == pytest.approx((0.019 * 2 + 20 * 0.80 * 2) * 1e12 / rate + 2.48e12 / (rate * VAE_SHARE_OF_RATE))
    bigger = estimate_image_speed("sd15", 1024, 20, 7.0, matmul_flops=100e9, backend="torch", dtype="fp32")
    assert bigger.value > 4 * guided.value  # attention grows with the square of the pixels


def test_no_image_estimate_on_a_gpu_or_for_an_unknown_architecture():
    assert estimate_image_speed("sd15", 512, 20, 7.0, matmul_flops=1e11, on_gpu=True) is None
    assert estimate_image_speed(None, 512, 20, 7.0, matmul_flops=1e11) is None
    assert estimate_image_speed("sd15", 512, 20, 7.0, matmul_flops=1e11, backend="onnx", dtype="fp16") is None


# ---- the machine measurement and its cache ------------------------------------------------


def test_the_machine_is_measured_once_and_kept_with_its_cpu(tmp_path, monkeypatch):
    first = ms.machine_speed(tmp_path, CPU)
    assert first.memory_bandwidth > 1e8 and first.matmul_flops > 1e8 and first.cpu == CPU.name
    saved = json.loads((tmp_path / ms.FILE_NAME).read_text())
    assert saved["cpu"] == "Test CPU 9000" and saved["method"] == ms.METHOD

    def measuring_again(cpu):
        raise AssertionError("measured although a measurement of this CPU is cached")

    monkeypatch.setattr(ms, "measure", measuring_again)
    assert ms.machine_speed(tmp_path, CPU) == first


def test_another_cpu_or_a_damaged_cache_is_measured_again(tmp_path, monkeypatch):
    calls = []

    def fake_measure(cpu):
        if cpu.name in (CPU.name, "Another CPU"):  # not a page of another test still measuring the real CPU
            calls.append(cpu.name)
        return ms.MachineSpeed(cpu.name, cpu.physical_cores, cpu.logical_cores, 10 * GB, 50e9, 1.0)

    monkeypatch.setattr(ms, "measure", fake_measure)
    ms.machine_speed(tmp_path, CPU)
    other = replace(CPU, name="Another CPU")
    assert ms.machine_speed(tmp_path, other).cpu == "Another CPU"
    (tmp_path / ms.FILE_NAME).write_text('{"cpu": ')
    assert ms.machine_speed(tmp_path, other).cpu == "Another CPU"
    assert calls == ["Test CPU 9000", "Another CPU", "Another CPU"]


def test_measuring_again_keeps_the_better_figures(tmp_path, monkeypatch):
    figures = iter([(20 * GB, 40e9), (12 * GB, 60e9)])  # a busy moment lowers one figure, not the other

    def fake_measure(cpu):
        bandwidth, flops = next(figures)
        return ms.MachineSpeed(cpu.name, cpu.physical_cores, cpu.logical_cores, bandwidth, flops, 1.0)

    monkeypatch.setattr(ms, "measure", fake_measure)
    ms.machine_speed(tmp_path, CPU)
    again = ms.machine_speed(tmp_path, CPU, remeasure=True)
    assert (again.memory_bandwidth, again.matmul_flops) == (20 * GB, 60e9)
    assert ms.read_cached(tmp_path / ms.FILE_NAME) == again


def test_an_unusable_cache_folder_still_gives_a_measurement(tmp_path, monkeypatch):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setattr(ms, "measure", lambda cpu: ms.MachineSpeed(cpu.name, 2, 4, 10 * GB, 50e9, 1.0))
    assert ms.machine_speed(blocked / "sub", CPU).memory_bandwidth == 10 * GB


# ---- measured speeds --------------------------------------------------------------------


def test_measured_speeds_keep_the_median_of_the_last_runs(tmp_path):
    path = tmp_path / "measured-speeds.json"
    for rate in (20.0, 21.0, 5.0, 22.0, 23.0, 24.0):
        record_text_speed(path, "m", rate, 100, "CPU A")
    speed = read_measured(path)["m"]
    assert speed.runs == 5 and speed.value == 22.0 and speed.unit == "tokens/s"  # 20.0 dropped: last five kept
    assert record_text_speed(path, "m", 99.0, 8, "CPU A") is None  # too short a reply to tell
    assert read_measured(path, cpu="CPU B") == {}  # another machine's measurement is not shown


def test_image_runs_at_new_settings_start_a_new_record(tmp_path):
    path = tmp_path / "measured-speeds.json"
    common = dict(steps=2, guidance=0.0, backend="torch", dtype="bf16")
    record_image_speed(path, "img", 10.0, "CPU", width=512, height=512, **common)
    record_image_speed(path, "img", 12.0, "CPU", width=512, height=512, **common)
    assert read_measured(path)["img"].runs == 2
    record_image_speed(path, "img", 40.0, "CPU", width=1024, height=1024, **common)
    speed = read_measured(path)["img"]
    assert speed.runs == 1 and speed.value == 40.0 and speed.detail["width"] == 1024


def test_fields_of_a_newer_version_are_kept_and_a_damaged_file_is_set_aside(tmp_path):
    path = tmp_path / "measured-speeds.json"
    path.write_text(json.dumps({"version": 3, "future": [1, 2], "models": {
        "m": {"unit": "tokens/s", "runs": [10.0], "cpu": "CPU", "detail": {"threads": None}, "quality": "x"}}}))
    record_text_speed(path, "m", 12.0, 50, "CPU", threads=None)
    saved = json.loads(path.read_text())
    assert saved["version"] == 3 and saved["future"] == [1, 2] and saved["models"]["m"]["quality"] == "x"
    assert saved["models"]["m"]["runs"] == [10.0, 12.0]
    record_download_rate(path, 12_500_000)
    assert read_download_rate(path) == 12_500_000

    path.write_text("[1, 2")
    assert read_measured(path) == {}
    kept = list(tmp_path.glob("measured-speeds.unreadable-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == "[1, 2"


def _record_many(path, prefix):
    for i in range(15):
        record_text_speed(path, f"{prefix}-{i}", 10.0 + i, 50, "CPU")


def test_two_processes_recording_at_once_lose_nothing(tmp_path):
    path = tmp_path / "measured-speeds.json"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(path, name)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(read_measured(path)) == 30


# ---- recommendations and order -------------------------------------------------------------


def verdict(kind: str, fits: bool, need_gb: float, free_gb: float, speed: float | None) -> FitVerdict:
    unit = "tokens/s" if kind == "chat" else "s/image"
    return FitVerdict("cpu_only" if fits else "wont_fit", "CPU only" if fits else "Won't fit", "",
                      MemoryNeed(int(need_gb * GB), 0, 0, 0), ram_free_bytes=int(free_gb * GB),
                      speed=SpeedEstimate(speed, unit, "") if speed is not None else None)


def test_the_pick_is_the_most_capable_model_that_runs_comfortably():
    entries = load_catalog().entries
    size = {e.id: e.total_size / GB for e in entries}

    def machine(bandwidth_gb: float) -> dict:  # 24 GB free; tokens/s ≈ bandwidth / size; images 30 s
        return {e.id: verdict(e.kind, True, size[e.id] * 1.3, 24, bandwidth_gb / size[e.id] if e.kind == "chat" else 30)
                for e in entries}

    # 20 GB/s: usable (≥ 10 tokens/s) means at most 2 GB. Qwen2.5 3B (1.93 GB) is the largest of those, but its
    # licence forbids commercial use; of the rest, the curated Qwen2.5 1.5B wins over the slightly larger
    # SmolLM2 1.7B, and its Q4_K_M (17.9 tokens/s) over its Q8_0 (10.6): speed counts until it is ample.
    pick = recommend(entries, machine(20), "chat")
    assert pick.entry_id == "qwen2.5-1.5b-instruct-q4_k_m"
    assert pick.reason.startswith("The most capable chat model that fits this machine with room to spare")
    # 60 GB/s: both quantizations are fast (53 and 32 tokens/s): more bits per weight win.
    assert recommend([e for e in entries if e.family == "Qwen2.5" and e.parameters < 2e9], machine(60),
                     "chat").entry_id == "qwen2.5-1.5b-instruct-q8_0"
    # Every image model at 30 s: the one whose licence allows any use, SD 1.5, before the larger Turbo ones.
    assert recommend(entries, machine(20), "image").entry_id == "stable-diffusion-1.5-fp16"
    no_sd15 = [e for e in entries if e.id != "stable-diffusion-1.5-fp16"]
    assert recommend(no_sd15, machine(20), "image").entry_id == "sdxl-turbo-fp16"  # then the largest
    order = suitability_order(entries, machine(20), {pick.entry_id})
    assert order[pick.entry_id] == 0


def test_when_nothing_is_fast_enough_the_fastest_comfortable_model_is_picked():
    entries = load_catalog().entries
    verdicts = {e.id: verdict(e.kind, True, e.total_size / GB, 100, 1 / (e.total_size / GB)) for e in entries}
    pick = recommend(entries, verdicts, "chat")
    assert pick.entry_id == "qwen2.5-0.5b-instruct-q4_k_m"
    assert pick.reason.endswith("every model will be slow here.")
    tight = {e.id: verdict(e.kind, True, 9, 10, 50) for e in entries}  # fits, but leaves too little room
    assert recommend(entries, tight, "chat") is None


def test_the_order_puts_what_runs_well_first_and_what_wont_fit_last():
    entries = load_catalog().chat()
    verdicts = {}
    for e in entries:
        gb = e.total_size / GB
        verdicts[e.id] = verdict("chat", gb < 6, gb, 10, 20 / gb)
    order = suitability_order(entries, verdicts, set())
    ranked = sorted(entries, key=lambda e: order[e.id])
    fits = [verdicts[e.id].fits for e in ranked]
    assert fits == sorted(fits, reverse=True)  # every "won't fit" after every "fits"
    good = [e for e in ranked if verdicts[e.id].speed.value >= 10 and verdicts[e.id].need.total_bytes <= 6 * GB]
    assert ranked[:len(good)] == good


# ---- the advisor on the real catalog ------------------------------------------------------------


def machine_report() -> HardwareReport:
    return HardwareReport("Test OS", "3", CPU, MemoryInfo(32 * GB, 24 * GB), [], DiskInfo("/", 500 * GB, 1000 * GB))


def test_the_advisor_judges_the_whole_catalog_with_speeds(monkeypatch):
    workspace = open_workspace()
    library = workspace.library()
    monkeypatch.setattr(library, "hardware", lambda refresh=False: machine_report())
    ms.atomic_write_text(workspace.paths.cache / ms.FILE_NAME, json.dumps({
        "cpu": CPU.name, "physical_cores": 2, "logical_cores": 4, "memory_bandwidth": 16 * GB,
        "matmul_flops": 60e9, "measured_at": 1.0, "method": ms.METHOD}))
    advice = Advisor(library).catalog_advice()
    assert set(advice.verdicts) == {e.id for e in library.catalog.entries}
    assert all(v.speed is not None for v in advice.verdicts.values() if v.fits)
    assert advice.machine.memory_bandwidth == 16 * GB
    chat = advice.verdicts["qwen2.5-1.5b-instruct-q4_k_m"]
    assert chat.summary.startswith("CPU only · about ") and chat.summary.endswith(" tokens/s here")
    assert advice.recommended["chat"].entry_id == "qwen2.5-1.5b-instruct-q4_k_m"
    assert advice.order[advice.recommended["chat"].entry_id] == 0
    assert advice.download_time(int(TYPICAL_DOWNLOAD_RATE * 180)).words == (
        "about 3 min at a typical 50 Mbit/s connection (6.2 MB/s)")

    record_text_speed(Advisor(library).speeds_path, "qwen2.5-1.5b-instruct-q4_k_m", 21.3, 100, CPU.name)
    record_download_rate(Advisor(library).speeds_path, 12_000_000)
    advice = Advisor(library).catalog_advice()
    estimated = format_speed(advice.verdicts["qwen2.5-1.5b-instruct-q4_k_m"].speed.value, "tokens/s").split()[0]
    assert advice.comparisons["qwen2.5-1.5b-instruct-q4_k_m"] == f"measured 21 tokens/s (estimated {estimated})"
    assert advice.download_time(36_000_000).words == "about 3 s at your last download's speed (12 MB/s)"
