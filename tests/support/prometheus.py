"""Debian's Prometheus and Alertmanager for slow-tier tests: find the program, wait for it."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import pytest


def program(*names: str) -> str:
    """The first of `names` on PATH, or skip the test (.ci/run installs them)."""
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    pytest.skip(f"{names[0]} is not installed (.ci/run installs Debian's prometheus packages)")


async def ready(url: str, within: float = 30.0) -> None:
    """Until `url` (a /-/ready endpoint) answers 200."""
    end = time.monotonic() + within
    async with httpx.AsyncClient() as c:
        while time.monotonic() < end:
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never became ready")
