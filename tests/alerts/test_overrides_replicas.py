"""A runtime override written to the ledger (what a runbook's policy step does) is in force on
every replica within a second, and so is its removal."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from activities.guardrails import merged_config
from ledger.alert_store import add_override
from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir

GUARDRAILS = """\
type: gateway-guardrails-config
name: audit-only
rules:
  - id: secrets-audit-input
    hooks: [request-input]
    detectors: [secrets]
    mode: validate
    on_match: allow
"""
AWS = "AKIAQ4T7W2X9Y3Z5B8C6"


def _modes(p: InProcessProxy) -> set[str]:
    assert p.gw is not None
    cfg = merged_config(p.gw.config)
    assert cfg is not None
    return {r.mode for r in cfg.rules if "secrets" in r.detectors}


async def _until_s(pred: object, within: float = 5.0) -> float:
    """Seconds until `pred()` holds (polled every 10 ms)."""
    t0 = time.monotonic()
    while not pred():  # type: ignore[operator]
        assert time.monotonic() - t0 < within, "not in force"
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def test_an_override_and_its_removal_reach_every_replica_within_a_second(
    tmp_path: Path,
) -> None:
    cfg = make_config_dir(tmp_path / "config", {"guardrails.yaml": GUARDRAILS})
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with SimServer(port=0) as sim:
        a = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=ledger,
                                 replica="a").start()
        b = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=ledger,
                                 replica="b").start()
        try:
            assert a.gw is not None and b.gw is not None
            assert _modes(a) == _modes(b) == {"validate"}
            rec, created = await add_override(
                a.gw.store, idem_key="drill:1", kind="guardrail_mode", target="secrets",
                value="mutate", actor="u_oncall", alert_key="alert-drill", yaml_diff="",
                ts=time.time())
            assert created
            took = await _until_s(lambda: _modes(a) == _modes(b) == {"mutate"})
            assert took < 1.0, took  # from the ledger write to in force on both
            async with httpx.AsyncClient(timeout=30) as c:
                r = await c.post(b.base_url + "/v1/chat/completions",
                                 headers={"Authorization": "Bearer gk-dev-developer"},
                                 json={"model": "support-cheap", "messages": [
                                     {"role": "user", "content": f"deploy with {AWS}"}]})
                assert r.status_code == 200, r.text
                m = b.gw.metrics
                assert m.guardrail_events.labels(
                    "secret", "aws_access_key", "request-input", "redacted")._value.get() == 1
                r = await c.delete(f"{a.base_url}/gateway/overrides/{rec.id}",
                                   headers={"Authorization": "Bearer gk-dev-admin"})
                assert r.status_code == 200 and r.json()["cleared"] == 1, r.text
            took = await _until_s(lambda: _modes(a) == _modes(b) == {"validate"})
            assert took < 1.0, took  # from the clear's answer to gone on both
        finally:
            await a.stop()
            await b.stop()
