"""The one duration formatter: the words each page and command shows for a time, at its two precisions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engines.durations import format_duration


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "1 s"),  # never "0 s left" or "Done in 0 s"
    (0.4, "1 s"),
    (40.4, "40 s"),
    (89, "89 s"),  # "1 min" would be half a minute off
    (90, "2 min"),
    (725, "12 min"),
    (3569, "59 min"),
    (3600, "1 h"),
    (4000, "1 h 07 min"),
    (7500, "2 h 05 min"),
    (30 * 3600 + 59, "30 h 01 min"),
])
def test_an_estimate_or_a_summary_is_in_whole_units(seconds, words):
    assert format_duration(seconds) == words


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "1 s"),
    (59.4, "59 s"),
    (60, "1 min"),
    (65, "1 min 05 s"),
    (130, "2 min 10 s"),
    (627, "10 min 27 s"),
    (3599, "59 min 59 s"),
    (3600, "1 h"),
    (7500, "2 h 05 min"),
])
def test_a_countdown_says_minutes_and_seconds_below_an_hour(seconds, words):
    assert format_duration(seconds, precise=True) == words


def test_the_pages_say_the_same_words_for_a_time():
    """A download's estimate (Models page, first run) and an image's time left (Images page) use the one formatter."""
    from desktop.pages.images.status import format_step
    from engines.library.advisor import DownloadTime

    assert DownloadTime(7500, False, 6.25e6).words == "about 2 h 05 min at a typical 50 Mbit/s connection (6.2 MB/s)"
    step = SimpleNamespace(step=3, total=20, image_index=0, batch_count=1, eta_s=65.2)  # a StepEvent's fields
    assert format_step(step) == "Step 3/20 · 1 min 05 s left"
