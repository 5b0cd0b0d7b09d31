"""How many CPU-heavy jobs may run at once, and how many lanes each job takes.

Every engine here uses a thread per physical core by default: llama.cpp
(``engines.llama.engine.default_threads``) and PyTorch's OpenMP pool
alike. Two of them running at once on the same cores do not share them
gracefully: OpenMP threads spin-wait for each other, and when another
process holds the core a spinning thread waits a whole scheduler slice.
On this 2-core machine a tiny image went from 0.25 s to 3-7 s while a
chat reply was streaming. So CPU work takes turns through *lanes*:

- On a machine with fewer than :data:`CORES_PER_LANE` × 2 physical cores
  there is one lane: a chat reply and an image take turns, each at full
  speed, which finishes both sooner than running them together.
- With more cores there is a lane per :data:`CORES_PER_LANE` cores (at most
  :data:`MAX_LANES`). llama.cpp's decode is memory-bound and stops gaining
  from threads well before that, so each text host is then given its
  share of the cores (``TextLoadSpec.threads``, when the user left it
  unset) and text models run side by side. PyTorch and ONNX Runtime have
  no such knob in their load specs and use every core, so an image job
  takes all the lanes: it runs alone on the CPU, as on a small machine.
- Work that runs on a GPU (every layer offloaded, or an image pipeline
  on ``cuda``/``mps``) and remote engines take no lane at all.
"""

from __future__ import annotations

import os

CORES_PER_LANE = 8
MAX_LANES = 4


def physical_cores() -> int:
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # noqa: BLE001 - an odd platform: count what the OS says
        return max(1, os.cpu_count() or 1)


def cpu_lane_count(cores: int | None = None) -> int:
    """One lane below 2 × CORES_PER_LANE physical cores, else one per CORES_PER_LANE (at most MAX_LANES)."""
    cores = physical_cores() if cores is None else cores
    if cores < 2 * CORES_PER_LANE:
        return 1
    return min(MAX_LANES, cores // CORES_PER_LANE)


def threads_per_lane(lanes: int, cores: int | None = None) -> int:
    """The share of the physical cores a text host gets when several lanes run at once."""
    cores = physical_cores() if cores is None else cores
    return max(1, cores // max(1, lanes))
