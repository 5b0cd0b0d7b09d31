"""Peak anonymous memory of this process, sampled (Linux).

The kernel keeps the peak resident set (VmHWM), but that peak also counts
file pages that are only mapped: diffusers memory-maps a model's
safetensors files and, when it converts them to bf16 or packs them for
oneDNN, the fp32 file pages stay mapped until the load is over. Those pages
are clean page cache that the kernel drops under pressure; they never make
a machine run out of memory. The memory a model really needs is the
anonymous memory (RssAnon): the converted weights, the activations, the
runtime. There is no kernel counter for its peak, so a thread samples it.
"""

from __future__ import annotations

import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakAnonSampler:
    """``with PeakAnonSampler() as s: ...`` then ``s.peak_bytes`` (None where /proc is missing)."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak_kib: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-anon-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            value = _status_kib("RssAnon")
            if value is not None:
                self.peak_kib = max(self.peak_kib or 0, value)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakAnonSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_bytes(self) -> int | None:
        return None if self.peak_kib is None else self.peak_kib * 1024
