"""The one byte formatter: decimal units, the precision each range is read in, one unit across a sum."""

import pytest

from engines.byte_sizes import format_bytes


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 bytes"),
    (1, "1 byte"),
    (999, "999 bytes"),
    (1000, "1.0 KB"),
    (1536, "1.5 KB"),
    (9_949, "9.9 KB"),
    (9_950, "10 KB"),  # not "10.0 KB"
    (540_000_000, "540 MB"),
    (246_600_000, "247 MB"),
    (999_600, "1.0 MB"),  # the carry goes to the next unit, never "1000 KB"
    (999_960_000, "1.0 GB"),
    (1_200_000_000, "1.2 GB"),
    (7_000_000_000, "7.0 GB"),
    (23_540_000_000, "23.5 GB"),
    (1_500_000_000_000, "1.5 TB"),
    (3_000_000_000_000_000, "3000.0 TB"),
    (-500_000_000, "-500 MB"),
])
def test_sizes_are_decimal_with_the_precision_of_their_range(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_gib_based_sizes_are_shown_in_decimal_units_like_everywhere_else() -> None:
    assert format_bytes(2**30) == "1.1 GB"
    assert format_bytes(64 * 2**20) == "67 MB"


def test_the_terms_of_a_sum_share_one_unit() -> None:
    terms = [format_bytes(n, in_gb=True) for n in (1_100_000_000, 120_000_000, 5_000_000)]
    assert terms == ["1.1 GB", "0.12 GB", "0.01 GB"]
    assert format_bytes(-250_000_000, in_gb=True) == "-0.25 GB"


def test_an_unknown_size_says_so() -> None:
    assert format_bytes(None) == "—"
    assert format_bytes(None, unknown="unknown") == "unknown"


def test_a_rate_is_a_size_per_second() -> None:
    assert format_bytes(6_250_000) + "/s" == "6.2 MB/s"
    assert format_bytes(12_000_000) + "/s" == "12 MB/s"
