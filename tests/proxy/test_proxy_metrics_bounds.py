"""`/metrics`: scrapers authenticate, label values callers choose are bounded by config, and
scraping does not slow the calls being served (it renders in a thread)."""

from __future__ import annotations

import asyncio
import re
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.registry import Collector

from activities.gateway import hash_key
from simulator.server import SimServer
from tests.support.servers import EXAMPLES, InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

BODY = {"model": "support-cheap", "messages": [{"role": "user", "content": "hi"}]}
DEV = {"authorization": "Bearer gk-dev-developer"}
SCRAPER = {"authorization": "Bearer gk-dev-metrics"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path_factory.mktemp("metrics-config"))
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path_factory.mktemp("metrics-data"), sim.base_url)
        await p.start()
        try:
            yield p
        finally:
            await p.stop()


async def test_metrics_need_a_metrics_or_admin_key(mp: InProcessProxy) -> None:
    async with aiohttp.ClientSession(base_url=mp.base_url) as h:
        for headers, status in (({}, 401), (DEV, 403), ({"authorization": "Bearer nope"}, 401),
                                (SCRAPER, 200), ({"authorization": "Bearer gk-dev-admin"}, 200)):
            async with h.get("/metrics", headers=headers) as r:
                assert r.status == status, (headers, await r.text())
                if status == 403:
                    assert "metrics_role_required" in await r.text()
        async with h.post("/v1/chat/completions", json=BODY, headers=SCRAPER) as r:
            assert r.status == 403  # a scrape key never calls models


async def test_5000_distinct_project_headers_make_a_bounded_number_of_series(
    mp: InProcessProxy,
) -> None:
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(base_url=mp.base_url) as h:

        async def one(i: int) -> None:
            async with sem, h.post("/v1/chat/completions", json=BODY,
                                   headers={**DEV, "x-governor-project": f"p-{i}"}) as r:
                assert r.status == 200

        await asyncio.gather(*(one(i) for i in range(5_000)))
        async with h.get("/metrics", headers=SCRAPER) as r:
            text = await r.text()
    projects = set(re.findall(r'^governor_(?:tokens|cost_usd)_total\{[^}]*project="([^"]*)"',
                              text, re.M))
    assert "other" in projects and not any(p.startswith("p-") for p in projects)
    series = [line for line in text.splitlines() if line.startswith("governor_")]
    assert len(series) < 1_000, len(series)  # was 30,081 series for these 5,000 calls


async def test_scrapes_do_not_slow_the_calls_being_served(mp: InProcessProxy) -> None:
    async with aiohttp.ClientSession(base_url=mp.base_url) as h:

        async def chat_p50(n: int) -> float:
            took = []
            for _ in range(n):
                t0 = time.perf_counter()
                async with h.post("/v1/chat/completions", json=BODY, headers=DEV) as r:
                    assert r.status == 200
                    await r.read()
                took.append(time.perf_counter() - t0)
            return statistics.median(took)

        quiet = await chat_p50(100)
        stop = False

        async def scraper() -> int:
            n = 0
            while not stop:
                async with h.get("/metrics", headers=SCRAPER) as r:
                    assert r.status == 200
                    await r.read()
                n += 1
            return n

        scrapers = [asyncio.create_task(scraper()) for _ in range(2)]
        busy = await chat_p50(100)
        stop = True
        scrapes = sum(await asyncio.gather(*scrapers))
    print(f"chat p50 {quiet * 1000:.1f} ms quiet, {busy * 1000:.1f} ms with 2 scrapers "
          f"({scrapes} scrapes)")
    assert scrapes >= 2
    assert busy < quiet * 5 + 0.05  # was 2.3 ms -> 1.6 s with two scrapers on 30k series


async def test_a_render_runs_off_the_event_loop_and_concurrent_scrapers_share_it(
    mp: InProcessProxy,
) -> None:
    """A collector that blocks until released stands for a render that takes long: while it
    blocks, the proxy (same event loop as this test) still answers, the render ran on another
    thread, and four scrapers that came meanwhile got the one render's page."""
    loop_thread = threading.get_ident()
    entered, release = threading.Event(), threading.Event()
    ran_on: list[int] = []

    class SlowCollector(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            ran_on.append(threading.get_ident())
            entered.set()
            release.wait(5)  # on the event loop, this would hold every caller for 5 s
            return iter(())

    assert mp.gw is not None
    registry = mp.gw.metrics.registry
    probe = SlowCollector()
    registry.register(probe)
    try:
        async with aiohttp.ClientSession(base_url=mp.base_url) as h:

            async def scrape() -> int:
                async with h.get("/metrics", headers=SCRAPER) as r:
                    await r.read()
                    return r.status

            scrapes = [asyncio.create_task(scrape())]
            assert await asyncio.to_thread(entered.wait, 5)
            scrapes += [asyncio.create_task(scrape()) for _ in range(3)]
            async with h.get("/healthz") as r:
                assert r.status == 200
            t0 = time.perf_counter()
            async with h.post("/v1/chat/completions", json=BODY, headers=DEV) as r:
                assert r.status == 200
            served_in = time.perf_counter() - t0
            release.set()
            assert await asyncio.gather(*scrapes) == [200] * 4
    finally:
        release.set()
        registry.unregister(probe)
    assert ran_on and loop_thread not in ran_on
    assert len(ran_on) == 1, ran_on  # one render for the four scrapers
    assert served_in < 4  # served while the render was still blocked (it waits up to 5 s)


@asynccontextmanager
async def _proxy_with(tmp_path: Path, settings: str) -> AsyncIterator[InProcessProxy]:
    """A proxy on the sample config, `settings` appended to its gateway-settings file."""
    cfg = make_config_dir(tmp_path / "cfg")
    (cfg / "gateway.yaml").write_text((EXAMPLES / "gateway.yaml").read_text() + settings)
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
        try:
            yield p
        finally:
            await p.stop()


async def test_the_scrape_token_reads_metrics_and_the_allowlist_keeps_its_projects(
    tmp_path: Path,
) -> None:
    """`metrics_token_hash`: the token (not a key) reads /metrics and nothing else; a wrong one
    is 401. `metrics_label_allowlist`: a project it lists keeps its label, others are `other`."""
    token = f"scrape-{uuid.uuid4().hex}"
    settings = f"metrics_token_hash: '{hash_key(token)}'\nmetrics_label_allowlist: [p-listed]\n"
    async with _proxy_with(tmp_path, settings) as p, aiohttp.ClientSession(
        base_url=p.base_url
    ) as h:
        for project in ("p-listed", "p-unlisted"):
            async with h.post("/v1/chat/completions", json=BODY,
                              headers={**DEV, "x-governor-project": project}) as r:
                assert r.status == 200
        for headers, status in (({"authorization": f"Bearer {token}"}, 200),
                                ({"authorization": f"Bearer {token}x"}, 401), ({}, 401),
                                (DEV, 403)):  # fmt: skip
            async with h.get("/metrics", headers=headers) as r:
                assert r.status == status, headers
                if status == 200:
                    text = await r.text()
        async with h.post("/v1/chat/completions", json=BODY,
                          headers={"authorization": f"Bearer {token}"}) as r:
            assert r.status == 401  # a scrape token is not an API key
    projects = set(re.findall(r'^governor_tokens_total\{[^}]*project="([^"]*)"', text, re.M))
    assert {"p-listed", "other"} <= projects and "p-unlisted" not in projects


async def test_metrics_public_opens_the_scrape_to_anyone(tmp_path: Path) -> None:
    async with _proxy_with(tmp_path, "metrics_public: true\n") as p, aiohttp.ClientSession(
        base_url=p.base_url
    ) as h, h.get("/metrics") as r:
        assert r.status == 200 and "governor_" in await r.text()
