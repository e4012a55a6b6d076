"""A config reload frees what it removed: the connection pool, verdict cache and counters of a
classifier the new config no longer has (a pool closed only once the calls using it end), so
reloads that keep changing a classifier's URL keep one pool and one cache, not one per URL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from activities.classifiers import runtime
from simulator.server import SimServer
from tests.proxy.classifier_support import fault
from tests.proxy.conftest import ADMIN_KEY, DEV_KEY
from tests.support.servers import InProcessProxy, make_config_dir
from tests.support.wait import until

PROJECT = "c-reload"


def _classifiers(url: str | None, timeout_ms: int = 5000) -> str:
    doc = "type: gateway-guardrails-config\nname: reload-classifiers\nclassifiers:"
    if url is None:
        return doc + " []\n"
    return doc + (
        "\n  - id: reload-http\n    hooks: [request-input]\n"
        f"    when: {{metadata: {{X-Governor-Project: {PROJECT}}}}}\n"
        "    on_match: block\n    on_error: fail_closed\n"
        f"    http: {{url: '{url}', timeout_ms: {timeout_ms}}}\n"
    )


async def _reload(h: httpx.AsyncClient) -> None:
    r = await h.post("/gateway/config/reload", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text


async def _call(h: httpx.AsyncClient) -> httpx.Response:
    return await h.post(
        "/v1/chat/completions",
        json={"model": "support-cheap",
              "messages": [{"role": "user", "content": f"hello {uuid.uuid4().hex}"}]},
        headers={"Authorization": f"Bearer {DEV_KEY}", "X-Governor-Project": PROJECT},
    )  # fmt: skip


async def test_reloads_free_the_pools_caches_and_counters_of_removed_classifiers(
    tmp_path: Path,
) -> None:
    async with SimServer(port=0) as sim:
        cls_file = "zz-reload-classifiers.yaml"
        cfg = make_config_dir(tmp_path / "config",
                              {cls_file: _classifiers(f"{sim.base_url}/classify?gen=0")})
        p = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
        try:
            assert p.gw is not None
            rt = runtime(p.gw)
            pools = []
            async with httpx.AsyncClient(base_url=p.base_url, timeout=30) as h:
                for gen in range(1, 21):  # each reload moves the classifier to a new URL
                    (cfg / cls_file).write_text(_classifiers(f"{sim.base_url}/classify?gen={gen}"))
                    await _reload(h)
                    r = await _call(h)
                    assert r.status_code == 200, r.text
                    pools.append(rt._sessions[f"{sim.base_url}/classify?gen={gen}"][1])
                await rt.drain()  # the retired pools' closes
                assert len(rt._sessions) == 1 and len(rt._caches) == 1
                assert [s.closed for s in pools] == [True] * 19 + [False]
                assert rt.calls == {"reload-http": 20}

                async def asking() -> bool:
                    return bool(rt._users)

                # A reload changing the classifier (same URL) while a call waits on its
                # verdict: the call's pool is replaced but stays open until the verdict is in
                # (it was closed under the call: a 503 for want of a verdict).
                url = f"{sim.base_url}/classify?gen=20"
                await fault(sim, latency_ms=1500, count=1)
                call = asyncio.ensure_future(_call(h))
                await until(asking, "the classifier request in flight")
                (cfg / cls_file).write_text(_classifiers(url, timeout_ms=6000))
                await _reload(h)
                r = await _call(h)  # the new classifier's own pool
                assert r.status_code == 200, r.text
                assert not pools[-1].closed and pools[-1] in rt._retired
                assert (await call).status_code == 200
                await rt.drain()
                assert pools[-1].closed
                pools.append(rt._sessions[url][1])

                # A reload removing the classifier while a call waits on its verdict: the
                # pool stays open until that call has its verdict, then closes.
                await fault(sim, latency_ms=1500, count=1)
                call = asyncio.ensure_future(_call(h))
                await until(asking, "the classifier request in flight")
                (cfg / cls_file).write_text(_classifiers(None))
                await _reload(h)
                assert rt._sessions == {} and rt._caches == {} and rt.calls == {}
                assert pools[-1] in rt._retired
                assert not pools[-1].closed  # its request is still running
                r = await call
                assert r.status_code == 200, r.text  # a verdict, not a 503 for no verdict
                await rt.drain()
                assert pools[-1].closed and not rt._retired and not rt._users
        finally:
            await p.stop()
