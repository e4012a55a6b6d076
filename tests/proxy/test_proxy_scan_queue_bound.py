"""The guardrail scan worker's queue is bounded (issue 9: memory is bounded by configuration,
not by callers): at most `scan_pool.MAX_QUEUED_SCANS` large texts wait for the one worker
process; a caller's large text past it is refused 503 `guardrail_busy` in the caller's protocol
(Retry-After, nothing sent upstream), not held in memory for as long as the queue takes. Real
worker process, real proxy over HTTP, the sample guardrails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from activities import scan_pool
from activities.guardrails import merged_config
from policies.refusals import Refusal
from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEV = {"authorization": "Bearer gk-dev-developer"}
MAX = scan_pool.MAX_QUEUED_SCANS
# ~4 MB of `01 01 …`: a slow text for the PII detectors (about a second per scan), so scans
# started first are still queued while the test's own requests arrive.
SLOW = "01 " * 1_300_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path_factory.mktemp("scanq-config"))
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path_factory.mktemp("scanq-data"), sim.base_url)
        await p.start()
        try:
            yield p
        finally:
            await p.stop()
            scan_pool.shutdown()


def _scan(p: InProcessProxy, hook: str, text: str) -> asyncio.Task[object]:
    assert p.gw is not None
    cfg = merged_config(p.gw.config)
    assert cfg is not None
    return asyncio.ensure_future(scan_pool.evaluate_off_loop(cfg, hook, text, {}, b"salt"))


async def _drain(tasks: list[asyncio.Task[object]]) -> list[object]:
    out = await asyncio.gather(*tasks, return_exceptions=True)
    assert scan_pool.queued() == 0
    return out


async def test_past_the_bound_a_callers_text_is_refused_and_an_answer_still_waits(
    sp: InProcessProxy,
) -> None:
    text = "hello " * (scan_pool.OFFLOAD_CHARS // 4)
    tasks = [_scan(sp, "request-input", text) for _ in range(2 * MAX)]
    answers = [_scan(sp, "request-output", text) for _ in range(3)]
    await asyncio.sleep(0)  # every task has asked for its slot; none can have finished
    assert scan_pool.queued() == MAX + 3
    out = await _drain(tasks + answers)
    refused = [r for r in out[: 2 * MAX] if isinstance(r, Refusal)]
    assert len(refused) == MAX
    assert {(r.status, r.code, r.retry_after) for r in refused} == {(503, "guardrail_busy", 1)}
    assert not any(isinstance(r, BaseException) for r in out[2 * MAX :])  # answers: scanned
    # Drained: the next one is scanned.
    assert not isinstance((await _drain([_scan(sp, "tool-output", text)]))[0], BaseException)


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/messages"])
async def test_a_large_request_past_the_bound_is_503_in_the_callers_protocol(
    sp: InProcessProxy, route: str
) -> None:
    body = {"model": "support-cheap", "max_tokens": 5,
            "messages": [{"role": "user", "content": "big " * 40_000}]}  # fmt: skip
    held = [_scan(sp, "request-input", SLOW) for _ in range(MAX)]
    try:
        async with httpx.AsyncClient(base_url=sp.base_url, timeout=60) as h:
            r = await h.post(route, json=body, headers=DEV)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            doc = r.json()
            if route == "/v1/messages":
                assert doc["type"] == "error" and "guardrail_busy" in doc["error"]["message"]
            else:
                assert doc["error"]["code"] == "guardrail_busy"
            for t in held:  # the scans not started yet are dropped: less CPU for the test
                t.cancel()
            await _drain(held)
            r = await h.post(route, json=body, headers=DEV)
            assert r.status_code == 200, r.text
    finally:
        for t in held:
            t.cancel()
        await _drain(held)
