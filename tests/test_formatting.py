"""Durations, sizes and progress bars read the same in the CLI and the TUI (stepflow_tui.formatting)."""

from __future__ import annotations

import math

import pytest

from stepflow_tui import formatting
from stepflow_tui.display import progress_text


@pytest.mark.parametrize(("seconds", "shown"), [
    (None, ""),
    (math.nan, ""),
    (math.inf, ""),
    (-3.0, "0ms"),  # a clock that moved back
    (0, "0ms"),
    (0.0004, "0ms"),
    (0.0015, "2ms"),
    (0.5, "500ms"),  # the CLI's "500ms" and the TUI's "0.5s" were the same half second
    (0.85, "850ms"),
    (0.9994, "999ms"),
    (0.9996, "1.0s"),  # would round to 1000ms: the next unit
    (1, "1.0s"),
    (1.24, "1.2s"),
    (59.9, "59.9s"),
    (59.96, "1m00s"),  # would round to 60.0s
    (60, "1m00s"),
    (184.7, "3m04s"),  # cut, as a clock shows it
    (3599.9, "59m59s"),
    (3600, "1h00m"),
    (3720, "1h02m"),
    (172_799, "47h59m"),
    (172_800, "2d00h"),
    (180_000, "2d02h"),
    (400 * 86400, "400d00h"),
])
def test_durations(seconds: float | None, shown: str) -> None:
    assert formatting.duration(seconds) == shown


def test_durations_are_at_most_six_characters_below_100_days() -> None:
    # the execution list's duration column is that wide
    samples = [i / 1000 for i in range(0, 2000, 7)] + [i * 0.37 for i in range(0, 100_000, 13)] \
        + [i * 61.0 for i in range(0, 140_000, 97)]
    assert max(len(formatting.duration(s)) for s in samples) <= 6


@pytest.mark.parametrize(("count", "shown"), [
    (None, ""),
    (-5, "0 B"),
    (0, "0 B"),
    (1, "1 B"),
    (512, "512 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (1024 * 1024 - 1, "1.0 MiB"),  # 1024.0 KiB is written in the next unit
    (1024 * 1024, "1.0 MiB"),
    (12 * 1024 ** 2, "12.0 MiB"),
    (int(3.25 * 1024 ** 3), "3.2 GiB"),
    (1024 ** 4, "1.0 TiB"),
    (5 * 1024 ** 5, "5120.0 TiB"),  # the largest unit grows
])
def test_sizes(count: int | None, shown: str) -> None:
    assert formatting.size(count) == shown


@pytest.mark.parametrize(("fraction", "bar", "figure"), [
    (0.0, "          ", "0%"),
    (0.01, "▏         ", "1%"),
    (0.05, "▌         ", "5%"),
    (0.5, "█████     ", "50%"),
    (0.999, "██████████", "100%"),
    (1.0, "██████████", "100%"),
    (1.7, "██████████", "100%"),  # clamped
    (-0.2, "          ", "0%"),
    (math.nan, "          ", "0%"),
])
def test_progress_bars(fraction: float, bar: str, figure: str) -> None:
    assert formatting.progress_bar(fraction, 10) == bar
    assert formatting.percent(fraction) == figure


@pytest.mark.parametrize("width", [0, -3])
def test_a_bar_with_no_room_is_empty(width: int) -> None:
    assert formatting.progress_bar(0.5, width) == ""


@pytest.mark.parametrize("width", [1, 6, 12, 40])
def test_a_bar_keeps_its_width_so_what_follows_stays_in_place(width: int) -> None:
    assert {len(formatting.progress_bar(i / 100, width)) for i in range(101)} == {width}


def test_the_tuis_bar_is_the_same_bar_with_its_figure() -> None:
    assert progress_text(42, 10).plain == formatting.progress_bar(0.42, 10) + "  42%"
    assert progress_text(100, 6).plain == "██████ 100%"
    assert progress_text(None, 6).plain == " " * 11  # no figure: blank, as wide
