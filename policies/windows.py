"""Window arithmetic: which window a moment falls in, as a function of that moment alone.

Rate windows are fixed, aligned to the Unix epoch (a 1h window is each clock hour, UTC), so every
replica and every replay agrees on the boundaries. Budget windows are calendar periods in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache


def fixed_window(now: float, seconds: int) -> tuple[float, float]:
    start = (now // seconds) * seconds
    return start, start + seconds


def calendar_window(now: float, period: str) -> tuple[float, float]:
    return _calendar_window(int(now // 86400), period)


@lru_cache(maxsize=64)
def _calendar_window(day: int, period: str) -> tuple[float, float]:
    # Calendar windows start at UTC midnight, so the UTC day number determines the window; the
    # cache makes this a dict lookup on the hot path (still a pure function of its inputs).
    midnight = datetime.fromtimestamp(day * 86400, UTC)
    if period == "daily":
        start, end = midnight, midnight + timedelta(days=1)
    elif period == "weekly":
        start = midnight - timedelta(days=midnight.weekday())
        end = start + timedelta(days=7)
    elif period == "monthly":
        start = midnight.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown calendar window {period!r}")
    return start.timestamp(), end.timestamp()
