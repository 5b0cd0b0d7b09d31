"""Which catalog model to recommend for this machine, and the order to list the rest in.

A recommendation has to be right for the machine in front of the user, not
in general, so it is read off the verdicts and expected speeds:

* it must fit *comfortably*: its memory need is at most ``COMFORT_SHARE`` of
  the memory free now, so the browser and the rest keep running beside it;
* it must run at a *usable* speed: at least ``USABLE_TOKENS_PER_S`` for chat
  (a fast reader's pace, with room for the slowdown of a long context),
  at most ``USABLE_SECONDS_PER_IMAGE`` for images;
* among those, a model whose licence allows any use comes first (a first
  model should not restrict what its user may do with the answers; models
  tagged "non-commercial" are picked only when nothing else runs well),
  then the largest model wins (more parameters: better answers and
  pictures), then, between quantizations of the same model, the faster
  one until both are fast (``AMPLE_TOKENS_PER_S``: Q4_K_M at 17 tokens/s
  beats Q8_0 at 10, the difference in quality being small), then the one
  with more bits per weight (Q8_0 at 40 tokens/s beats Q4_K_M at 60). A model the catalog's curators tag
  "recommended" (the best of its size class, by their reading of public
  evaluations) counts as ``CURATED_BONUS`` times its size, so Qwen2.5 1.5B
  wins over the slightly larger but weaker SmolLM2 1.7B, while a 7B model
  that runs well still wins over a curated 4B one.

When no model reaches a usable speed, the fastest one that fits
comfortably is recommended, with a reason that says it will be slow. On a
GPU whose speed cannot be estimated, a model that runs fully on it counts
as usable. Every catalog chat model is instruction-tuned (the catalog lists
only those), so any of them can be the first model a new user chats with.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.library.catalog import CatalogEntry
from engines.machine.fit import FitVerdict

COMFORT_SHARE = 0.6
USABLE_TOKENS_PER_S = 10.0
USABLE_SECONDS_PER_IMAGE = 60.0
CURATED_BONUS = 1.5
AMPLE_TOKENS_PER_S = 2 * USABLE_TOKENS_PER_S
AMPLE_SECONDS_PER_IMAGE = USABLE_SECONDS_PER_IMAGE / 4


@dataclass(frozen=True)
class Recommendation:
    entry_id: str
    reason: str  # one sentence, for the first-run dialog and the details pane


def comfortable(verdict: FitVerdict) -> bool:
    """Fits with room to spare: on the GPU entirely, or in at most COMFORT_SHARE of the free memory."""
    if not verdict.fits:
        return False
    if verdict.verdict == "gpu_full":
        return True
    budget = verdict.ram_free_bytes + (verdict.vram_free_bytes if verdict.verdict == "gpu_partial" else 0)
    return verdict.need.total_bytes <= COMFORT_SHARE * budget


def usable(entry: CatalogEntry, verdict: FitVerdict) -> bool:
    speed = verdict.speed
    if speed is None:
        return verdict.verdict == "gpu_full"  # a GPU we have no figures for: fast enough in practice
    if entry.kind == "chat":
        return speed.value >= USABLE_TOKENS_PER_S
    return speed.value <= USABLE_SECONDS_PER_IMAGE


def _speed_key(entry: CatalogEntry, verdict: FitVerdict) -> float:
    """Larger is faster, for either kind."""
    speed = verdict.speed
    if speed is None:
        return 0.0
    return speed.value if entry.kind == "chat" else -speed.value


def curated(entries: list[CatalogEntry]) -> set[tuple[str, int]]:
    """(family, parameters) of the models tagged "recommended": every quantization of them gets the bonus."""
    return {(e.family, e.parameters) for e in entries if "recommended" in e.tags}


def quality(entry: CatalogEntry, picked: set[tuple[str, int]]) -> float:
    """Parameters, with the curators' bonus: the order of preference among models that run well."""
    return entry.parameters * (CURATED_BONUS if (entry.family, entry.parameters) in picked else 1.0)


def _fast_enough(entry: CatalogEntry, verdict: FitVerdict) -> float:
    """The speed, counted only up to "ample": beyond it, more bits per weight matter more than more speed."""
    speed = _speed_key(entry, verdict)
    return min(speed, AMPLE_TOKENS_PER_S) if entry.kind == "chat" else min(speed, -AMPLE_SECONDS_PER_IMAGE)


def _any_use(entry: CatalogEntry) -> bool:
    return "non-commercial" not in entry.tags


def _bits_per_weight(entry: CatalogEntry) -> float:
    return entry.total_size * 8 / entry.parameters


def recommend(entries: list[CatalogEntry], verdicts: dict[str, FitVerdict], kind: str) -> Recommendation | None:
    """The model of *kind* ("chat" or "image") to recommend, or None when none fits comfortably."""
    judged = [(e, verdicts[e.id]) for e in entries if e.kind == kind and e.id in verdicts]
    roomy = [(e, v) for e, v in judged if comfortable(v)]
    good = [(e, v) for e, v in roomy if usable(e, v)]
    if good:
        picked = curated(entries)
        entry, verdict = max(good, key=lambda ev: (_any_use(ev[0]), quality(ev[0], picked), _fast_enough(*ev),
                                                   _bits_per_weight(ev[0]), _speed_key(*ev)))
        what = "chat model" if kind == "chat" else "image model"
        speed = f", {verdict.speed.words}" if verdict.speed is not None else ""
        return Recommendation(entry.id, f"The most capable {what} that fits this machine with room to spare and "
                                        f"runs at a comfortable speed{speed}.")
    if roomy:
        entry, verdict = max(roomy, key=lambda ev: _speed_key(*ev))
        speed = f" ({verdict.speed.words})" if verdict.speed is not None else ""
        return Recommendation(entry.id, f"The fastest model that fits this machine with room to spare{speed}; "
                                        "every model will be slow here.")
    return None


def suitability_order(entries: list[CatalogEntry], verdicts: dict[str, FitVerdict],
                      recommended: set[str]) -> dict[str, int]:
    """Catalog id -> rank (0 first): recommended, then comfortable and usable, then the rest that fit, then won't fit.

    Within a group, chat before image; among the good ones the larger (better) first, among the
    slow or tight ones the faster first.
    """
    def group(entry: CatalogEntry) -> int:
        verdict = verdicts.get(entry.id)
        if entry.id in recommended:
            return 0
        if verdict is None:
            return 4
        if comfortable(verdict) and usable(entry, verdict):
            return 1
        return 2 if verdict.fits else 3

    picked = curated(entries)

    def key(entry: CatalogEntry):
        rank = group(entry)
        verdict = verdicts.get(entry.id)
        within = -quality(entry, picked) if rank <= 1 else (-_speed_key(entry, verdict) if verdict else 0.0)
        return rank, entry.kind != "chat", within, entry.total_size, entry.id

    ordered = sorted(entries, key=key)
    return {entry.id: rank for rank, entry in enumerate(ordered)}
