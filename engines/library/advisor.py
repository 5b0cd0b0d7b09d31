"""Everything the Models page and the first-run dialog say about a model for this machine.

The library judges whether a model fits (:class:`engines.library.service.ModelLibrary`);
this adds what a person choosing needs next: the expected speed here
(:mod:`engines.machine.speed`, :mod:`engines.machine.image_speed`), the speed
measured when it last ran (:mod:`engines.library.measured_speeds`), the
recommended chat and image model (:mod:`engines.library.recommend`), the
order to list the catalog in, and how long a download will take.

Everything here reads files or measures the machine: call it off the GUI
thread. The first call measures the machine (a few hundred milliseconds);
later ones read the cached figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from engines.byte_sizes import format_bytes
from engines.durations import format_duration
from engines.errors import EngineError
from engines.library.catalog import CatalogEntry
from engines.machine.fit import FitVerdict
from engines.machine.image_fit import PipelineShape, default_run_dtype
from engines.machine.image_speed import default_steps, estimate_image_speed
from engines.library.installed import InstalledModel
from engines.machine.machine_speed import MachineSpeed, machine_speed
from engines.library.measured_speeds import MeasuredSpeed, read_download_rate, read_measured, speeds_file
from engines.library.recommend import Recommendation, recommend, suitability_order
from engines.machine.speed import SpeedEstimate, compare_words, estimate_embedding_speed, text_speed_for_verdict

log = logging.getLogger(__name__)

TYPICAL_DOWNLOAD_RATE = 50e6 / 8  # bytes per second: a typical 50 Mbit/s home connection


@dataclass(frozen=True)
class DownloadTime:
    seconds: float
    measured: bool  # True: at the last download's rate here; False: at a typical rate
    rate: float  # bytes per second

    @property
    def words(self) -> str:
        """"about 3 min at your last download's speed (12 MB/s)"."""
        rate = f"{format_bytes(self.rate)}/s"
        basis = f"at your last download's speed ({rate})" if self.measured else f"at a typical 50 Mbit/s connection ({rate})"
        return f"about {format_duration(self.seconds)} {basis}"


@dataclass(frozen=True)
class CatalogAdvice:
    """The catalog judged for this machine: verdicts with speeds, picks, order, measurements."""

    verdicts: dict[str, FitVerdict] = field(default_factory=dict)
    measured: dict[str, MeasuredSpeed] = field(default_factory=dict)
    recommended: dict[str, Recommendation] = field(default_factory=dict)  # "chat" / "image" -> pick
    order: dict[str, int] = field(default_factory=dict)  # catalog id -> rank, 0 first
    machine: MachineSpeed | None = None
    download_rate: float | None = None  # bytes per second of the last download here
    comparisons: dict[str, str] = field(default_factory=dict)  # catalog id -> "measured 21 tokens/s (estimated 18)"

    def is_recommended(self, entry_id: str) -> bool:
        return any(pick.entry_id == entry_id for pick in self.recommended.values())

    def download_time(self, size_bytes: int) -> DownloadTime:
        rate = self.download_rate or TYPICAL_DOWNLOAD_RATE
        return DownloadTime(size_bytes / rate, self.download_rate is not None, rate)


class Advisor:
    """Adds speeds, measurements and recommendations to a :class:`ModelLibrary`'s verdicts."""

    def __init__(self, library) -> None:
        self.library = library
        self._machine: MachineSpeed | None = None

    # ---- the machine -------------------------------------------------------

    def machine(self, remeasure: bool = False) -> MachineSpeed | None:
        """This machine's measured speed (cached on disk); None if it cannot be measured (no numpy).

        *remeasure* measures again (Refresh), keeping the better figures.
        """
        if self._machine is None or remeasure:
            try:
                self._machine = machine_speed(self.library.paths.cache, self.library.hardware().cpu,
                                              remeasure)
            except Exception as exc:  # noqa: BLE001 - speeds are a guide: without them the verdicts still stand
                log.warning("could not measure this machine's speed: %s", exc)
                return None
        return self._machine

    @property
    def speeds_path(self) -> Path:
        return speeds_file(self.library.paths.data)

    def measured(self) -> dict[str, MeasuredSpeed]:
        """Measured speeds taken on this CPU, by model id."""
        return read_measured(self.speeds_path, self.library.hardware().cpu.name)

    # ---- speeds ------------------------------------------------------------

    def with_speed(self, verdict: FitVerdict, speed: SpeedEstimate | None) -> FitVerdict:
        return replace(verdict, speed=speed) if speed is not None else verdict

    def text_speed(self, verdict: FitVerdict) -> SpeedEstimate | None:
        machine = self.machine()
        if machine is None or not verdict.fits or not verdict.need.context_length:
            return None
        report = self.library.hardware()
        resources = self.library.resources()
        gpu = next((g for g in report.gpus if g.name == resources.gpu_name), None)
        kv_per_token = verdict.need.kv_cache_bytes / verdict.need.context_length
        return text_speed_for_verdict(verdict, kv_per_token, machine.memory_bandwidth,
                                      gpu.memory_bandwidth if gpu else None, resources.unified_memory)

    def image_speed(self, verdict: FitVerdict, base: str | None, size: int, steps: int, guidance: float,
                    onnx: bool) -> SpeedEstimate | None:
        machine = self.machine()
        if machine is None or not verdict.fits:
            return None
        dtype = "fp32" if onnx else default_run_dtype(self.library.hardware())
        return estimate_image_speed(base, size, steps, guidance, matmul_flops=machine.matmul_flops,
                                    backend="onnx" if onnx else "torch", dtype=dtype,
                                    on_gpu=verdict.verdict == "gpu_full")

    def entry_speed(self, entry: CatalogEntry, verdict: FitVerdict) -> SpeedEstimate | None:
        if entry.kind == "upscaler":  # its arithmetic for a 1024-pixel image, at the measured matrix rate
            machine = self.machine()
            if machine is None or not verdict.fits:
                return None
            from engines.machine.upscale_fit import upscale_speed

            spec = entry.upscaler
            return upscale_speed(spec.blocks, spec.features, spec.scale, machine.matmul_flops)
        if entry.kind == "vae":  # one 512² decode (0.14 TFLOP, torch.utils.flop_counter) at the measured rate
            from engines.diffusion.taesd import DECODE_FLOP_512

            machine = self.machine()
            if machine is None or not verdict.fits:
                return None
            return SpeedEstimate(DECODE_FLOP_512 / machine.matmul_flops, "s/image",
                                 f"{DECODE_FLOP_512 / 1e12:.2f} TFLOP to decode a 512×512 image at "
                                 f"{machine.matmul_flops / 1e12:.2f} TFLOP/s measured here")
        if entry.kind == "chat":
            return self.text_speed(verdict)
        if entry.kind == "embedding":  # it reads documents, it never writes: its rate is arithmetic, not bandwidth
            machine = self.machine()
            if machine is None or not verdict.fits:
                return None
            table = entry.arch.vocab_size * entry.arch.embedding_length  # a lookup, not arithmetic
            return estimate_embedding_speed(entry.parameters - table, machine.matmul_flops)
        spec = entry.image
        return self.image_speed(verdict, spec.base, spec.default_size, spec.default_steps, spec.default_guidance,
                                entry.format == "onnx")

    def installed_speed(self, model: InstalledModel, verdict: FitVerdict) -> SpeedEstimate | None:
        """The expected speed of an installed model at its own settings (catalog defaults for catalog images)."""
        if model.kind in ("upscaler", "lora", "vae"):
            # an upscaler's time depends on the image; a LoRA adds no time to its model's; a tiny VAE saves some
            return None
        if model.format == "gguf":
            return self.text_speed(verdict)
        entry = self.library.catalog.get(model.id)
        if entry is not None and entry.kind == "image":
            return self.entry_speed(entry, verdict)
        shape = PipelineShape.from_folder(Path(model.path))
        distilled = any(word in model.name.lower() for word in ("turbo", "lcm"))
        steps, guidance = default_steps(model.name, distilled)
        return self.image_speed(verdict, shape.base, shape.native_size, steps, guidance, model.format == "onnx")

    def image_base(self, model: InstalledModel) -> str | None:
        """The architecture of an installed image model ("sd15", "sd21", "sdxl"...); None for a chat model."""
        if model.format == "gguf" or model.kind in ("upscaler", "lora", "vae"):
            return None
        entry = self.library.catalog.get(model.id)
        if entry is not None and entry.image is not None:
            return entry.image.base
        return PipelineShape.from_folder(Path(model.path)).base

    def comparison(self, measured: MeasuredSpeed, verdict: FitVerdict | None, base: str | None = None) -> str:
        """"measured 21 tokens/s (estimated 18)"; for images, the estimate at the settings the run used."""
        if measured.unit == "tokens/s":
            return compare_words(measured.value, "tokens/s", verdict.speed if verdict is not None else None)
        detail = measured.detail
        try:
            width, height, steps = int(detail["width"]), int(detail["height"]), int(detail["steps"])
            guidance, backend, dtype = float(detail["guidance"]), str(detail["backend"]), str(detail["dtype"])
        except (KeyError, TypeError, ValueError):
            return compare_words(measured.value, "s/image", None)
        machine = self.machine()
        estimate = None
        if machine is not None and verdict is not None:
            estimate = estimate_image_speed(base, int((width * height) ** 0.5), steps, guidance,
                                            matmul_flops=machine.matmul_flops, backend=backend, dtype=dtype,
                                            on_gpu=verdict.verdict == "gpu_full")
        setting = f"{width}×{height}, {steps} step{'' if steps == 1 else 's'}"
        return compare_words(measured.value, "s/image", estimate, setting)

    def installed_verdict(self, model: InstalledModel) -> FitVerdict:
        """The library's verdict for an installed model, with its expected speed."""
        verdict = self.library.verdict_for_installed(model)
        return self.with_speed(verdict, self.installed_speed(model, verdict))

    # ---- the catalog -------------------------------------------------------

    def catalog_advice(self, remeasure: bool = False) -> CatalogAdvice:
        """Every catalog entry judged with its speed, the picks, the order, the measurements."""
        library = self.library
        self.machine(remeasure)
        entries = list(library.catalog.entries)
        verdicts: dict[str, FitVerdict] = {}
        for entry in entries:
            try:
                verdict = library.verdict_for_entry(entry)
            except EngineError as exc:
                log.warning("no verdict for %s: %s", entry.id, exc.message)
                continue
            verdicts[entry.id] = self.with_speed(verdict, self.entry_speed(entry, verdict))
        picks = {kind: pick for kind in ("chat", "image") if (pick := recommend(entries, verdicts, kind)) is not None}
        order = suitability_order(entries, verdicts, {pick.entry_id for pick in picks.values()})
        measured = self._safe(self.measured, {})
        comparisons = {
            entry.id: self.comparison(measured[entry.id], verdicts.get(entry.id), entry.image.base if entry.image else None)
            for entry in entries if entry.id in measured
        }
        return CatalogAdvice(verdicts, measured, picks, order, self.machine(),
                             self._safe(lambda: read_download_rate(self.speeds_path), None), comparisons)

    @staticmethod
    def _safe(read, default):
        """A measurement file that cannot be read (permissions) only hides the measurements."""
        try:
            return read()
        except OSError as exc:
            log.warning("could not read the measured speeds: %s", exc)
            return default
