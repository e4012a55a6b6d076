"""Reservations in the runtime both paths share (proxy inline, Temporal worker activities)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from activities.config_source import load_config_dir
from activities.gateway import STALE_RESERVATION_SECONDS, Gateway
from activities.llm_call import CallRequest, governed_call
from policies.identity import resolve_identity
from policies.refusals import Refusal
from simulator.server import SimServer
from tests.support.servers import make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

BUDGET = """
type: gateway-budget-config
name: worker-budgets
budgets:
  - id: worker-cap
    scope: {metadata: {X-Governor-Project: worker}}
    ceiling_usd: 0.005
    window: daily
    on_exceed: hard_block
"""


def _req(gw: Gateway, call_id: str, text: str) -> CallRequest:
    key = next(k for k in gw.config.keys_by_hash.values() if k.id == "dev-developer")
    ident = resolve_identity(key, {"x-governor-project": "worker"}, gw.config.settings)
    body = {"model": "support-cheap", "max_tokens": 400,
            "messages": [{"role": "user", "content": text}]}
    return CallRequest("openai", body, ident, call_id, 200)


async def test_concurrent_worker_activities_cannot_pass_a_budget(tmp_path: Path):
    """The worker's Gateway (path "workflow", replayable call ids as activities use)."""
    async with SimServer() as sim:
        os.environ["GOVERNOR_SIM_URL"] = sim.base_url
        cfg = load_config_dir(make_config_dir(tmp_path / "cfg", {"zz-w.yaml": BUDGET}))
        gw = await Gateway.open(cfg, f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "j",
                                path="workflow")
        try:
            async def one(i: int) -> bool:
                text = f"[[sim:output_tokens=400,latency_ms=150]] turn {i}"
                try:
                    await governed_call(gw, _req(gw, f"wf-{i}:1", text))
                except Refusal as r:
                    assert r.code == "budget_exceeded"
                    return False
                return True

            answered = sum(await asyncio.gather(*(one(i) for i in range(32))))
            spent = sum(v for k, v in gw.state.spend.items() if k[0] == "worker-cap")
            # support-cheap's dearest target (haiku, 1/5 $/MTok): 400 output tokens ≈ $0.00205
            assert 1 <= answered < 32 and spent <= 0.005
            assert not gw.state.in_flight and not gw.state.reserved_spend
        finally:
            await gw.close()


async def test_a_failed_call_releases_its_reservation_and_a_stale_one_is_swept(tmp_path: Path):
    async with SimServer() as sim:
        os.environ["GOVERNOR_SIM_URL"] = sim.base_url
        cfg = load_config_dir(make_config_dir(tmp_path / "cfg", {"zz-w.yaml": BUDGET}))
        gw = await Gateway.open(cfg, f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "j")
        try:
            sim.add_fault(model="gpt-4o-mini", status=400)  # a request the provider rejects
            with pytest.raises(Refusal):
                await governed_call(gw, _req(gw, "fail-1", "rejected"))
            assert not gw.state.in_flight and not gw.state.reserved_spend
            sim.clear_faults()
            # a reservation whose call never ended (a stream never read) is swept
            st = gw.state
            held = st.reserve([], [], 10, 0.004, time.time() - STALE_RESERVATION_SECONDS - 1)
            assert st.in_flight
            assert st.release_stale(time.time() - STALE_RESERVATION_SECONDS) == 1
            assert not held.open and not st.in_flight
        finally:
            await gw.close()
