"""Helpers shared by the classifier-detector proxy tests: a call's guardrail events once the
background verdicts are in, a recorded verdict's JSON, the SIMULATED classifier's faults."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from activities.classifiers import runtime
from ledger.event_store import guardrail_events
from ledger.models import GuardrailEventRecord
from simulator.server import SimServer
from tests.support.servers import InProcessProxy


async def events(proxy: InProcessProxy, call_id: str) -> list[GuardrailEventRecord]:
    """The call's guardrail events, after every pending (flag-mode) verdict was recorded."""
    assert proxy.gw is not None
    await runtime(proxy.gw).drain()
    await proxy.gw.writer.flush()
    return await guardrail_events(proxy.gw.store, call_id=call_id)


def verdict(e: GuardrailEventRecord) -> dict[str, Any]:
    v = orjson.loads(e.verdict or "null")
    assert isinstance(v, dict)
    return v


async def fault(sim: SimServer, **fields: Any) -> None:
    """Make the simulated classifier slow or failing (`POST /_sim/classifier`)."""
    async with httpx.AsyncClient(base_url=sim.base_url) as h:
        r = await h.post("/_sim/classifier", json=fields)
        assert r.status_code == 200, r.text


async def clear_faults(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as h:
        await h.delete("/_sim/classifier")
