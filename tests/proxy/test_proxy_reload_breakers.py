"""A config reload forgets the circuit breakers, and their metric series, of (virtual model,
target) pairs the new config no longer routes: reloads that keep renaming upstreams keep one
breaker and one set of series, not one per name ever configured."""

from __future__ import annotations

from pathlib import Path

import httpx

from simulator.server import SimServer
from tests.proxy.conftest import ADMIN_KEY, DEV_KEY
from tests.support.servers import InProcessProxy, make_config_dir

ROUTING = "zz-reload-routing.yaml"


def _routing(i: int, sim_url: str) -> str:
    return f"""
type: gateway-providers
providers:
  - {{name: reload-{i}, protocol: openai, base_url: '{sim_url}', simulated: true}}
---
name: t-reload-{i}
type: gateway-load-balancing-config
retries: 0
circuit_breaker: {{failure_threshold: 1}}
rules:
  - id: only
    target: {{provider: reload-{i}, model: gpt-4.1, timeout_ms: 5000}}
"""


def _series(p: InProcessProxy, name: str) -> list[dict[str, str]]:
    assert p.gw is not None
    return [s.labels for m in p.gw.metrics.registry.collect() for s in m.samples
            if s.name == name and "reload-" in str(s.labels)]  # fmt: skip


async def test_reloads_forget_the_breakers_and_series_of_removed_upstreams(
    tmp_path: Path,
) -> None:
    async with SimServer(port=0) as sim:
        cfg = make_config_dir(tmp_path / "config", {ROUTING: _routing(0, sim.base_url)})
        p = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        try:
            assert p.gw is not None
            async with httpx.AsyncClient(base_url=p.base_url, timeout=30) as h:
                for i in range(1, 6):  # each reload renames the virtual model and its upstream
                    (cfg / ROUTING).write_text(_routing(i, sim.base_url))
                    assert (await h.post("/gateway/config/reload", headers=admin)).status_code \
                        == 200
                    sim.add_fault(model="gpt-4.1", status=500)
                    r = await h.post("/v1/chat/completions", headers={
                        "Authorization": f"Bearer {DEV_KEY}"}, json={
                        "model": f"t-reload-{i}", "messages": [{"role": "user", "content": "x"}]})
                    sim.clear_faults()
                    assert r.status_code >= 500, r.text
                    # only this round's breaker (opened by that failure) is held
                    assert list(p.gw.router.breakers) == [(f"t-reload-{i}", f"reload-{i}/gpt-4.1")]
                    states = _series(p, "governor_breaker_state")
                    assert states == [{"virtual_model": f"t-reload-{i}",
                                       "target": f"reload-{i}/gpt-4.1"}]
                    assert _series(p, "governor_circuit_breaker_open") == [
                        {"target": f"reload-{i}/gpt-4.1"}]
                (cfg / ROUTING).unlink()
                assert (await h.post("/gateway/config/reload", headers=admin)).status_code == 200
            assert p.gw.router.breakers == {}
            for name in ("governor_breaker_state", "governor_circuit_breaker_open",
                         "governor_breaker_transitions_total"):
                assert _series(p, name) == [], name
        finally:
            await p.stop()
