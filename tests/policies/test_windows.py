"""Window boundaries: fixed rate windows aligned to the epoch, calendar budget windows in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies.windows import calendar_window, fixed_window


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC).timestamp()


# --- fixed windows -------------------------------------------------------------------------------


def test_fixed_window_is_aligned_to_the_epoch_not_to_the_first_call() -> None:
    assert fixed_window(5 * 3600 + 17, 3600) == (5 * 3600, 6 * 3600)
    assert fixed_window(ts(2026, 3, 15, 13, 42, 7), 3600) == (
        ts(2026, 3, 15, 13),
        ts(2026, 3, 15, 14),
    )


def test_a_call_at_exactly_the_window_start_belongs_to_that_window() -> None:
    assert fixed_window(7200, 3600) == (7200, 10800)


def test_a_call_at_exactly_the_window_end_belongs_to_the_next_window() -> None:
    start, end = fixed_window(3600 + 1, 3600)
    assert fixed_window(end, 3600) == (end, end + 3600)
    assert fixed_window(end - 0.001, 3600) == (start, end)


def test_daily_fixed_window_is_the_utc_day() -> None:
    assert fixed_window(ts(2026, 7, 4, 23, 59, 59), 86400) == (ts(2026, 7, 4), ts(2026, 7, 5))


def test_short_windows_tile_the_minute() -> None:
    base = ts(2026, 1, 1, 12, 0)
    assert fixed_window(base + 29.999, 30) == (base, base + 30)
    assert fixed_window(base + 30, 30) == (base + 30, base + 60)


def test_epoch_itself_starts_a_window() -> None:
    assert fixed_window(0.0, 60) == (0.0, 60.0)


# --- calendar windows ----------------------------------------------------------------------------


def test_daily_window_runs_midnight_to_midnight_utc() -> None:
    assert calendar_window(ts(2026, 3, 15, 13, 5), "daily") == (ts(2026, 3, 15), ts(2026, 3, 16))


def test_daily_window_at_exactly_midnight_is_the_new_day() -> None:
    assert calendar_window(ts(2026, 3, 16), "daily") == (ts(2026, 3, 16), ts(2026, 3, 17))
    last_us = ts(2026, 3, 15, 23, 59, 59, 999_000)
    assert calendar_window(last_us, "daily") == (ts(2026, 3, 15), ts(2026, 3, 16))


def test_daily_window_on_leap_day() -> None:
    assert calendar_window(ts(2028, 2, 29, 12), "daily") == (ts(2028, 2, 29), ts(2028, 3, 1))


def test_weekly_window_starts_on_monday_utc() -> None:
    # 2026-03-18 is a Wednesday; its week is Mon 16th .. Mon 23rd.
    assert calendar_window(ts(2026, 3, 18, 9), "weekly") == (ts(2026, 3, 16), ts(2026, 3, 23))


def test_weekly_window_boundaries_sunday_night_and_monday_midnight() -> None:
    assert calendar_window(ts(2026, 3, 22, 23, 59, 59), "weekly") == (
        ts(2026, 3, 16),
        ts(2026, 3, 23),
    )
    assert calendar_window(ts(2026, 3, 23), "weekly") == (ts(2026, 3, 23), ts(2026, 3, 30))


def test_weekly_window_spans_new_year() -> None:
    # 2026-01-01 is a Thursday: its week began Monday 2025-12-29.
    assert calendar_window(ts(2026, 1, 1, 8), "weekly") == (ts(2025, 12, 29), ts(2026, 1, 5))


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        ((2026, 1, 31, 23, 59, 59), (2026, 1, 1), (2026, 2, 1)),  # 31-day month end
        ((2026, 4, 30, 12), (2026, 4, 1), (2026, 5, 1)),  # 30-day month end
        ((2026, 2, 28, 23), (2026, 2, 1), (2026, 3, 1)),  # common-year February
        ((2028, 2, 29, 23), (2028, 2, 1), (2028, 3, 1)),  # leap-year February
        ((2100, 2, 28, 1), (2100, 2, 1), (2100, 3, 1)),  # century, not a leap year
        ((2026, 12, 31, 23, 59, 59), (2026, 12, 1), (2027, 1, 1)),  # Dec -> Jan
        ((2027, 1, 1), (2027, 1, 1), (2027, 2, 1)),  # exactly the new year
        ((2026, 3, 1), (2026, 3, 1), (2026, 4, 1)),  # exactly the month start
    ],
)
def test_monthly_window_is_the_calendar_month(
    moment: tuple[int, ...], start: tuple[int, ...], end: tuple[int, ...]
) -> None:
    assert calendar_window(ts(*moment), "monthly") == (ts(*start), ts(*end))


def test_monthly_window_of_every_month_ends_where_the_next_begins() -> None:
    for year in (2026, 2028):
        for month in range(1, 13):
            s, e = calendar_window(ts(year, month, 15), "monthly")
            assert s == ts(year, month, 1)
            nxt = (year + 1, 1) if month == 12 else (year, month + 1)
            assert e == ts(nxt[0], nxt[1], 1)
            assert calendar_window(e, "monthly")[0] == e


def test_unknown_calendar_period_is_an_error() -> None:
    with pytest.raises(ValueError, match="yearly"):
        calendar_window(0.0, "yearly")
