"""The proxy's upstream client (`activities.upstream_http.UpstreamPool`) side by side with
aiohttp's ClientSession configured as the router had it, in one process, rounds interleaved.

Upstream: Debian's nginx answering the fixed chat.completion of `proxy_overhead.py`, on CPU 1;
this process on CPU 0. One connection, sequential POSTs; reported: this process's CPU time per
call (user + system), median of the rounds. CPU time, not wall time: what a call costs the
proxy's core.

    .venv/bin/python benchmarks/upstream_client.py [--calls 3000 --rounds 5]

Needs `nginx` (apt-get install nginx-light). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy_overhead import free_port, start_nginx, wait_port

from activities.upstream_http import UpstreamPool

BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 10}],
     "max_tokens": 16}
)
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


async def run(port: int, calls: int, rounds: int) -> dict[str, list[float]]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None,
                                      sock_connect=None),
        skip_auto_headers=("User-Agent",),
    )
    pool = UpstreamPool()

    async def with_aiohttp() -> None:
        async with asyncio.timeout(10):
            resp = await session.post(url, data=BODY, headers=HEADERS)
            raw = await resp.read()
        resp.release()
        orjson.loads(raw)

    async def with_pool() -> None:
        async with asyncio.timeout(10):
            resp = await pool.post(url, BODY, HEADERS)
            raw = await resp.read()
        resp.release()
        orjson.loads(raw)

    clients: dict[str, Callable[[], Awaitable[None]]] = {
        "aiohttp ClientSession": with_aiohttp,
        "UpstreamPool": with_pool,
    }
    out: dict[str, list[float]] = {k: [] for k in clients}
    for fn in clients.values():  # warm-up: connections, caches
        for _ in range(200):
            await fn()
    for _ in range(rounds):
        for name, fn in clients.items():
            t = time.process_time()
            for _ in range(calls):
                await fn()
            out[name].append((time.process_time() - t) / calls * 1e6)
    await session.close()
    await pool.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="governor-upstream-"))
    root.chmod(0o755)
    port = free_port()
    nginx = start_nginx(root, port)
    try:
        wait_port(port)
        os.sched_setaffinity(0, {0})
        res = uvloop.run(run(port, args.calls, args.rounds))
    finally:
        nginx.terminate()
        nginx.wait()
    base = statistics.median(res["aiohttp ClientSession"])
    print(f"\nupstream client CPU per call, median of {args.rounds} interleaved rounds of "
          f"{args.calls} sequential POSTs (nginx on CPU 1)\n")
    print(f"{'client':<24}{'cpu µs/call':>12}  rounds")
    for name, v in res.items():
        m = statistics.median(v)
        print(f"{name:<24}{m:>12.1f}  {[round(x) for x in v]}  ({m / base:.2f}x aiohttp)")


if __name__ == "__main__":
    main()
