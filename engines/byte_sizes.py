"""Byte counts in words: the one formatter every message, table and status line uses.

Units are decimal (1 GB = 1,000,000,000 bytes), as file managers, disk
vendors and download sites count them, so a size Atelier shows matches the
one the user sees elsewhere; a GiB-based "GB" beside a decimal one would make
the same file two sizes. Precision follows what the number is for:

* below 1,000: exact ("512 bytes");
* KB and MB: one decimal below 10, whole above ("1.5 MB", "540 MB"), enough
  to tell files and downloads apart without noise;
* GB and TB: always one decimal ("7.6 GB"), since a model's size against the
  free memory is decided in tenths of a GB.

``in_gb=True`` writes every term of one sum in GB ("1.1 GB weights + 0.12 GB
context cache = 1.2 GB"), with two decimals below 1 GB so that the small
terms do not read as zero: a sum is easier to check in one unit.

Rates are sizes per second: ``format_bytes(rate) + "/s"``. Stdlib only, so
any layer (and the private image engine's Python) can import it.
"""

from __future__ import annotations

_UNITS = ("KB", "MB", "GB", "TB")


def format_bytes(n: float | None, *, in_gb: bool = False, unknown: str = "—") -> str:
    """*n* bytes as people read them ("253 MB", "1.2 GB"); *unknown* when *n* is None."""
    if n is None:
        return unknown
    if in_gb:
        value = n / 1e9
        return f"{value:.2f} GB" if abs(value) < 1 else f"{value:.1f} GB"
    if abs(n) < 1000:
        return "1 byte" if n == 1 else f"{int(n)} bytes"
    value = float(n)
    for unit in _UNITS:
        value /= 1000
        text = _in_unit(value, unit)
        if abs(float(text)) < 1000 or unit == _UNITS[-1]:  # 999.96 KB is "1.0 MB", not "1000.0 KB"
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def _in_unit(value: float, unit: str) -> str:
    if unit in ("KB", "MB") and abs(value) >= 9.95:  # 9.96 would print as "10.0": whole from there
        return f"{value:.0f}"
    return f"{value:.1f}"
