"""A chat reply and an image at the same time: through one scheduler, against two engines left to fight.

The scheduled case is the app: one :class:`engines.scheduler.Scheduler`
for both, so on a machine with one CPU lane the reply and the image take
turns. The unscheduled case is the same code with one scheduler per
engine, so nothing keeps them apart and both engines' threads compete for
the same cores (what Atelier did before the scheduler, and what two apps
do). Both models are loaded first in every configuration; only the work
is timed, in the calling process, from the moment both are submitted.
Rounds alternate between the two cases (each goes first in every other
round) so that background noise hits both alike; the figures are the
median of the rounds and the least disturbed round, next to the same two
jobs run alone. Another program busy on the same cores (a test suite, a
build) slows both cases, the unscheduled one most: run it on a quiet
machine.

Run it on a quiet machine (``uptime`` load below ~1.5):
``python -m benchmarks.bench_scheduler``; the figures are saved under
"scheduler" in benchmarks/results/latest.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROUNDS = 5
CHAT_TOKENS = 64
IMAGE_SIZE = 128
IMAGE_STEPS = 8
KEYS = ("chat_s", "image_s", "both_s", "chat_tokens_per_s", "image_engine_s")


def _chat_work(spec):
    from engines.api import SamplingParams, TextRequest
    from engines.scheduler import Work

    request = TextRequest(raw_prompt="The history of the printing press began",
                          sampling=SamplingParams(temperature=0.0, max_tokens=CHAT_TOKENS, seed=1))
    return Work("llama_cpp", spec, request)


def _image_work(spec):
    from engines.diffusion.types import ImageRequest
    from engines.scheduler import Work

    request = ImageRequest(prompt="a lighthouse at dusk", width=IMAGE_SIZE, height=IMAGE_SIZE, steps=IMAGE_STEPS,
                           seed=7, preview_every=0)
    return Work("diffusers", spec, request)


def _wait(ticket, start: float, out: dict, name: str) -> None:
    result = ticket.wait()
    out[f"{name}_s"] = time.perf_counter() - start
    if name == "chat":
        out["chat_tokens_per_s"] = result.tokens_per_second  # the decode rate the engine measured
    else:
        out["image_engine_s"] = result.seconds  # the image's own time, from its first step


def _together(chat_scheduler, image_scheduler, chat, image) -> dict:
    """Submit both at once (the reply first); seconds until each is done, and until both are."""
    out: dict = {}
    start = time.perf_counter()
    tickets = {"chat": chat_scheduler.submit(chat, "chat"), "image": image_scheduler.submit(image, "images")}
    threads = [threading.Thread(target=_wait, args=(ticket, start, out, name)) for name, ticket in tickets.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out["both_s"] = max(out["chat_s"], out["image_s"])
    return out


def _alone(scheduler, work, client: str) -> float:
    start = time.perf_counter()
    scheduler.submit(work, client).wait()
    return time.perf_counter() - start


def run() -> dict:
    from engines.api import TextLoadSpec
    from engines.diffusion.types import ImageLoadSpec
    from engines.scheduler import Scheduler
    from engines.scheduler.lanes import cpu_lane_count
    from tests.fixtures.gemma import assemble_gemma
    from tests.fixtures.tiny_sd import build_tiny_sd

    logs = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    chat = _chat_work(TextLoadSpec(str(assemble_gemma()), context_length=1024))
    image = _image_work(ImageLoadSpec(str(build_tiny_sd(logs / "tiny-sd")), backend="torch", dtype="fp32"))
    shared = Scheduler(logs / "shared", idle_unload_s=None)
    text_only = Scheduler(logs / "text", idle_unload_s=None)
    image_only = Scheduler(logs / "image", idle_unload_s=None)
    try:
        for scheduler in (shared, text_only):  # load (and warm) every model in every configuration
            _alone(scheduler, chat, "warm-up")
        for scheduler in (shared, image_only):
            _alone(scheduler, image, "warm-up")
        alone_chat, alone_image, scheduled, unscheduled = [], [], [], []
        for round_ in range(ROUNDS):  # each case first in every other round
            alone_chat.append(_alone(shared, chat, "chat"))
            alone_image.append(_alone(shared, image, "images"))
            cases = [(scheduled, (shared, shared)), (unscheduled, (text_only, image_only))]
            for rows, (chat_scheduler, image_scheduler) in cases if round_ % 2 == 0 else cases[::-1]:
                rows.append(_together(chat_scheduler, image_scheduler, chat, image))
    finally:
        for scheduler in (shared, text_only, image_only):
            scheduler.shutdown()

    def median(rows, key):
        return round(statistics.median(row[key] for row in rows), 2)

    def best(rows):  # the round that finished both soonest: the least disturbed by anything else on the machine
        row = min(rows, key=lambda r: r["both_s"])
        return {key: round(row[key], 2) for key in KEYS}

    return {
        "cpu_lanes": cpu_lane_count(),
        "rounds": ROUNDS,
        "chat": f"Gemma 3 270M Q4_K_M, {CHAT_TOKENS} tokens, greedy",
        "image": f"tiny SD pipeline, {IMAGE_SIZE}x{IMAGE_SIZE}, {IMAGE_STEPS} steps, fp32",
        "alone_chat_s": round(statistics.median(alone_chat), 2),
        "alone_image_s": round(statistics.median(alone_image), 2),
        "scheduled": {key: median(scheduled, key) for key in KEYS},
        "unscheduled": {key: median(unscheduled, key) for key in KEYS},
        "scheduled_best": best(scheduled),
        "unscheduled_best": best(unscheduled),
        "rounds_scheduled": scheduled,
        "rounds_unscheduled": unscheduled,
    }


def main() -> int:
    report = run()
    print(json.dumps(report, indent=2))
    out = Path(__file__).resolve().parent / "results" / "latest.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results["scheduler"] = report
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
