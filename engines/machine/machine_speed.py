"""How fast this machine moves memory and multiplies matrices: measured once, kept in the cache.

Expected speeds (:mod:`engines.machine.speed`) need two numbers that no
spec sheet gives reliably for the machine at hand: the memory bandwidth a
program really gets (token generation in llama.cpp reads every weight once
per token, so it is bound by it) and the rate of a large matrix product
(image generation is bound by arithmetic). Both are measured here with
numpy in well under a second:

* bandwidth: one thread per physical core copies its own slice of a
  128 MiB buffer (with its copy, larger than any desktop CPU's cache), best of five rounds;
  a copy reads and writes each byte, so it counts twice. numpy releases
  the GIL while it copies, so the threads really run side by side, as
  llama.cpp's do.
* compute: a 1024×1024 float32 matrix product through numpy's BLAS
  (all cores), best of five.

The result is kept in ``<cache>/machine-speed.json`` together with the CPU
it was measured on, and measured again only when the CPU (name or core
count) changes or the measurement method does (``METHOD``), or when the
user asks (Refresh on the Models page). Other programs running during a
measurement can only make it lower, so a new measurement keeps the higher
of the old and new figures. Two processes starting at once measure once:
the second waits on the file's lock and reads the first one's result.
Never call :func:`machine_speed` on the GUI thread: measuring takes from a
few hundred milliseconds to two seconds on a busy machine.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engines.machine.hardware import CpuInfo, probe_cpu
from engines.storage import atomic_write_text, state_lock

log = logging.getLogger(__name__)

METHOD = 1  # bump when the measurement changes: older cached figures are then measured again
FILE_NAME = "machine-speed.json"
COPY_BYTES = 128 * 1024**2  # the source buffer; the copy's destination is as large again
MIN_COPY_BYTES = 64 * 1024**2  # still larger than the caches of every CPU we know of but server ones
MATRIX_SIZE = 1024
ROUNDS = 5


@dataclass(frozen=True)
class MachineSpeed:
    """The measured figures, and the CPU they belong to."""

    cpu: str
    physical_cores: int
    logical_cores: int
    memory_bandwidth: float  # bytes per second, all cores copying at once
    matmul_flops: float  # float32 FLOP per second of numpy's matrix product
    measured_at: float
    method: int = METHOD

    def matches(self, cpu: CpuInfo) -> bool:
        """True when this measurement was taken on *cpu* with the current method."""
        return (self.method == METHOD and self.cpu == cpu.name and self.physical_cores == cpu.physical_cores
                and self.logical_cores == cpu.logical_cores)

    def describe(self) -> str:
        """"21 GB/s memory bandwidth, 95 GFLOP/s", for the speed explanations."""
        return f"{self.memory_bandwidth / 1e9:.0f} GB/s memory bandwidth, {self.matmul_flops / 1e9:.0f} GFLOP/s"


def measure_memory_bandwidth(threads: int, total_bytes: int = COPY_BYTES, rounds: int = ROUNDS) -> float:
    """Bytes per second that *threads* threads copying side by side achieve (read + write)."""
    import numpy as np

    threads = max(1, threads)
    per_thread = max(1, total_bytes // threads // 8)
    sources = [np.ones(per_thread) for _ in range(threads)]  # touched now, so page faults stay out of the timing
    targets = [np.empty_like(s) for s in sources]
    for source, target in zip(sources, targets):
        np.copyto(target, source)
    best = float("inf")
    for _ in range(rounds):
        start = threading.Barrier(threads + 1)

        def copy(index: int) -> None:
            start.wait()
            np.copyto(targets[index], sources[index])

        workers = [threading.Thread(target=copy, args=(i,), daemon=True) for i in range(threads)]
        for worker in workers:
            worker.start()
        start.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - began)
    return 2 * per_thread * 8 * threads / best


def measure_matmul_flops(size: int = MATRIX_SIZE, rounds: int = ROUNDS) -> float:
    """float32 FLOP per second of numpy's matrix product (its BLAS uses every core)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b  # warm the BLAS threads up
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best


def measure(cpu: CpuInfo) -> MachineSpeed:
    """Measure both figures now (a few hundred milliseconds).

    The copy buffers take at most an eighth of the free memory (twice
    ``COPY_BYTES`` when there is plenty), so a small machine is not pushed
    into swap by its own measurement.
    """
    import psutil

    budget = max(MIN_COPY_BYTES, min(COPY_BYTES, psutil.virtual_memory().available // 16))
    bandwidth = measure_memory_bandwidth(cpu.physical_cores, budget)
    flops = measure_matmul_flops()
    return MachineSpeed(cpu.name, cpu.physical_cores, cpu.logical_cores, bandwidth, flops, time.time())


def read_cached(path: Path) -> MachineSpeed | None:
    """The cached measurement, or None when there is none or it cannot be read."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return MachineSpeed(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:  # torn, hand-edited or from another version: measure again
        log.info("measuring the machine again: %s is unusable (%s)", path, exc)
        return None


def machine_speed(cache_dir: Path, cpu: CpuInfo | None = None, remeasure: bool = False) -> MachineSpeed:
    """The figures for this machine: from the cache when they were measured on this CPU, else measured now.

    *remeasure* measures again and keeps the better of the old and new figures.
    """
    cpu = cpu or probe_cpu()
    path = Path(cache_dir) / FILE_NAME
    cached = read_cached(path)
    if cached is not None and cached.matches(cpu) and not remeasure:
        return cached
    try:
        with state_lock(path):
            cached = read_cached(path)  # another process may have measured while we waited
            if cached is not None and cached.matches(cpu) and not remeasure:
                return cached
            return _measure_and_keep(cpu, path, cached if cached is not None and cached.matches(cpu) else None)
    except OSError as exc:  # no usable cache folder (read-only, full): measure, keep nothing
        log.warning("could not use the cache folder for the machine speed: %s", exc)
        return measure(cpu)


def _measure_and_keep(cpu: CpuInfo, path: Path, previous: MachineSpeed | None) -> MachineSpeed:
    speed = measure(cpu)
    if previous is not None:  # a busy moment only lowers a measurement: keep the best seen
        speed = replace(speed, memory_bandwidth=max(speed.memory_bandwidth, previous.memory_bandwidth),
                        matmul_flops=max(speed.matmul_flops, previous.matmul_flops))
    try:
        atomic_write_text(path, json.dumps(asdict(speed), indent=2))
    except OSError as exc:  # a full or read-only cache only costs a measurement next time
        log.warning("could not keep the machine speed in %s: %s", path, exc)
    log.info("measured this machine: %s", speed.describe())
    return speed
