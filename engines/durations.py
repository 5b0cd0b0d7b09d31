"""Durations in words, the one formatter every page and command uses: "40 s", "12 min", "2 h 05 min".

Two precisions, because two kinds of number are shown:

- an estimate or a summary ("about 12 min left" while indexing, "Done in
  40 s", a download "about 3 min at a typical connection", how long a
  loaded model has been idle): whole seconds below a minute and a half,
  whole minutes below an hour. More digits would claim a precision the
  estimate does not have, and the status line stays short;
- ``precise=True``, a countdown the user watches tick (an image's time
  left, a download's) or a measured time per image: minutes *and* seconds
  below an hour ("1 min 05 s"), since "1 min" would sit still for a whole
  minute while the work visibly moves.

From an hour on both say hours and minutes ("2 h 05 min"), never decimal
hours: "2.1 h" is easy to misread as 2 h 10 min. Seconds are padded to two
digits after minutes, as minutes are after hours, and a zero part is left
out ("2 min", "3 h"). The shortest duration said is "1 s": "0 s left" or
"Done in 0 s" reads as a fault. Stdlib only, so any layer can use it.
"""

from __future__ import annotations


def format_duration(seconds: float, *, precise: bool = False) -> str:
    """``seconds`` in words: "75 s", "12 min", "2 h 05 min"; with ``precise``, "1 min 15 s" below an hour."""
    whole = max(1, round(seconds))
    if whole < (60 if precise else 90):
        return f"{whole} s"
    if precise and whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"
    minutes = round(whole / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min" if rest else f"{hours} h"
