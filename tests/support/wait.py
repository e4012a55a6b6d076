"""Waiting for a condition in tests (never a fixed sleep standing in for one)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from typing import Any


async def until(pred: Any, what: str, within: float = 30.0, every: float = 0.05) -> Any:
    """Call `pred()` (awaiting it when it is a coroutine function) every `every` s until it
    returns something truthy (returned), or fail naming `what` after `within` s."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = pred()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


async def close_connections(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    """Close raw client connections and wait until each is closed (one reset by the server is
    closed too)."""
    for _, w in conns:
        w.close()
    for _, w in conns:
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()
