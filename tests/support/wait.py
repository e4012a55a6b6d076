"""Waiting for a condition in tests (never a fixed sleep standing in for one)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def until(pred: Any, what: str, within: float = 30.0, every: float = 0.05) -> Any:
    """Await `pred()` every `every` s until it returns something truthy (returned), or fail
    naming `what` after `within` s."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
