"""How fast a kill ends a stream in flight, and a client disconnect cancels the upstream request.

Real parts on loopback: the simulated provider (a slow stream: one event every 20 ms), two proxy
replicas sharing one SQLite ledger, httpx clients. Measured per run:

- kill, same replica: the admin `PUT …/kill` sent to the replica serving the stream → the
  stream's last byte (the kill event) read by the client;
- kill, other replica: the kill sent to replica A while B serves the stream; B learns it through
  the kill poll (every 0.25 s), so this adds up to one poll interval;
- disconnect: the client closes the connection mid-stream → the simulator sees the upstream
  request cancelled (its `cancelled_requests` record).

Prints median / p95 / max per kind; asserts nothing. Run: .venv/bin/python benchmarks/stream_stop.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from activities.config_source import load_config_dir  # noqa: E402
from activities.gateway import Gateway  # noqa: E402
from proxy.app import ProxyApp  # noqa: E402
from proxy.server import uvicorn_config  # noqa: E402
from simulator.server import SimServer  # noqa: E402

RUNS = int(os.environ.get("STREAM_STOP_RUNS", "20"))
DEV = {"authorization": "Bearer gk-dev-developer"}
ADMIN = {"authorization": "Bearer gk-dev-admin"}
ROUTE = """
name: bench-stream
type: gateway-load-balancing-config
retries: 0
rules:
  - id: s
    target: {provider: openai, model: gpt-4.1, timeout_ms: 30000}
"""
BODY = {"model": "bench-stream", "stream": True,
        "messages": [{"role": "user", "content": "a long answer please"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(gw: Gateway) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    port = _free_port()
    cfg = uvicorn_config(ProxyApp(gateway=gw), "127.0.0.1", port)
    cfg.lifespan = "off"
    server = uvicorn.Server(cfg)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, task


def _summary(name: str, got: list[float]) -> str:
    ms = sorted(x for x in got if x == x)
    if not ms:
        return f"{name:<34} no measurement ({len(got)} missed)"
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return (f"{name:<34} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   "
            f"max {ms[-1]:7.1f} ms   (n={len(ms)}, missed {len(got) - len(ms)})")


async def _kill_run(h: httpx.AsyncClient, serve_url: str, kill_url: str, sid: str) -> float:
    async with h.stream("POST", serve_url + "/v1/chat/completions", json=BODY,
                        headers={**DEV, "x-governor-session-id": sid}) as r:
        n = 0
        t0 = 0.0
        kill: asyncio.Task[httpx.Response] | None = None
        async for _ in r.aiter_lines():
            n += 1
            if n == 6:  # the kill goes out while the stream keeps being read
                t0 = time.perf_counter()
                kill = asyncio.create_task(h.put(
                    kill_url + f"/gateway/sessions/{sid}/kill", json={"reason": "benchmark"},
                    headers=ADMIN))
        took = (time.perf_counter() - t0) * 1000
    assert kill is not None and (await kill).status_code == 200
    return took


async def _disconnect_run(h: httpx.AsyncClient, url: str, sim: SimServer) -> float:
    await asyncio.sleep(0.3)  # the killed streams' own upstream cancels land first
    before = sim.state.cancelled_total
    async with h.stream("POST", url + "/v1/chat/completions", json=BODY, headers=DEV) as r:
        n = 0
        async for _ in r.aiter_lines():
            n += 1
            if n == 6:
                break
        left = time.time()  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 10
    while len(sim.state.cancelled) == before:
        if time.monotonic() > deadline:
            return float("nan")  # never cancelled: reported as missed
        await asyncio.sleep(0.001)
    return (sim.state.cancelled[-1]["at"] - left) * 1000


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="governor-stream-stop-"))
    cfg_dir = tmp / "config"
    shutil.copytree(REPO / "examples" / "config", cfg_dir)
    (cfg_dir / "zz-bench-stream.yaml").write_text(ROUTE)
    async with SimServer(port=0) as sim:
        os.environ["GOVERNOR_SIM_URL"] = sim.base_url
        config = load_config_dir(cfg_dir)
        ledger = f"sqlite:///{tmp / 'ledger.db'}"
        a = await Gateway.open(config, ledger, tmp / "journal-a")
        b = await Gateway.open(config, ledger, tmp / "journal-b")
        (url_a, sa, ta), (url_b, sb, tb) = await _serve(a), await _serve(b)
        same, other, disc = [], [], []
        try:
            async with httpx.AsyncClient(timeout=60) as h:
                # Every stream is slow (one rule for all runs, so none can miss its fault).
                sim.add_fault(model="gpt-4.1", chunk_delay_ms=20, output_tokens=2000)
                for i in range(RUNS):
                    for into, kill_url in ((same, url_b), (other, url_a)):
                        sid = f"bench-kill-{i}-{len(into)}-{'same' if kill_url == url_b else 'x'}"
                        try:
                            into.append(await asyncio.wait_for(
                                _kill_run(h, url_b, kill_url, sid), 30))
                        except TimeoutError:
                            into.append(float("nan"))
                    disc.append(await _disconnect_run(h, url_b, sim))
        finally:
            for s in (sa, sb):
                s.should_exit = True
            await asyncio.gather(ta, tb)
            await a.close()
            await b.close()
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{time.strftime('%H:%M:%S')} stream stop (simulated provider, one event per 20 ms; "
          "loopback; shared machine)")
    print(_summary("kill -> stream end, same replica", same))
    print(_summary("kill -> stream end, other replica", other))
    print(_summary("disconnect -> upstream cancelled", disc))


if __name__ == "__main__":
    asyncio.run(main())
