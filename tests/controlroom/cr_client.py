"""Signing in to `/control-room` over real HTTP, as a browser would (Origin header, form body)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest

from examples.control_room_traffic import Traffic, generate, write_traffic
from tests.support.servers import InProcessProxy, make_config_dir

VIEWER_KEY = "gk-dev-viewer"
ONCALL_KEY = "gk-dev-oncall"
ADMIN_KEY = "gk-dev-admin"
DEV_KEY = "gk-dev-developer"
METRICS_KEY = "gk-dev-metrics"


def origin_of(base_url: str) -> dict[str, str]:
    return {"origin": base_url}


async def sign_in(h: httpx.AsyncClient, base_url: str, key: str) -> httpx.Response:
    """POST the login form; on success `h` holds the session cookie."""
    return await h.post(base_url + "/control-room/login", data={"api_key": key},
                        headers=origin_of(base_url))


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m, "no CSRF token in the page"
    return m.group(1)


@asynccontextmanager
async def generated_proxy(sim_url: str, tmp: pytest.TempPathFactory, *, days: int, seed: int,
                          sessions_per_day: int, overlay: dict[str, str] | None = None,
                          ledger_url: str | None = None
                          ) -> AsyncIterator[tuple[InProcessProxy, Traffic]]:
    """A proxy of its own (sample config + `overlay`; a SQLite ledger unless `ledger_url`)
    whose ledger holds the generator's traffic for `days` days ending now (so its looping
    session is live)."""
    cfg = make_config_dir(tmp.mktemp("cr-config"), overlay)
    p = InProcessProxy(cfg, tmp.mktemp("cr-data"), sim_url, ledger_url=ledger_url)
    await p.start()
    try:
        tr = generate(days=days, seed=seed, end=time.time(), sessions_per_day=sessions_per_day)
        assert p.gw is not None
        for kind, rows in (("call", tr.calls), ("event", tr.events), ("outcome", tr.outcomes)):
            await write_traffic(p.gw.store, ((kind, r) for r in rows))
        yield p, tr
    finally:
        await p.stop()


def iso(ts: float) -> str:
    """A unix time as an ISO 8601 query value (`+` percent-encoded by the HTTP client)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
