# ruff: noqa: E501  (inline YAML config and fixed payloads read better unwrapped)
"""Governor proxy overhead, side by side with calling the upstream directly, in one run.

Upstream: Debian's nginx answering a fixed OpenAI chat.completion (and a fixed SSE stream), so the
upstream is many times faster than the proxy and what we measure is the proxy. The proxy runs with
every control on (auth, identity envelope, 4 rate-limit rules, 3 budgets, session ceiling, routing
with breaker, metrics, ledger journal + background flush) and is pinned to CPU 0; nginx and the
load generator (wrk) share CPU 1.

    .venv/bin/python benchmarks/proxy_overhead.py [--duration 10]

Needs `wrk` and `nginx` (apt-get install wrk nginx-light). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = "gk-bench-key"
METRICS_KEY = "gk-bench-metrics"  # /metrics needs a metrics-role key (scrape-only)

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "benchmark reply text"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 4,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
)
STREAM = (
    "".join(
        "data: "
        + json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
            }
        )
        + "\n\n"
        for w in ["bench ", "stream ", "reply"]
    )
    + "data: "
    + json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
    )
    + "\n\ndata: [DONE]\n\n"
)

REQUEST = json.dumps(
    {
        "model": "bench-fast",
        "messages": [
            {"role": "system", "content": "You are a classifier."},
            {"role": "user", "content": "Classify the intent of: where is my order #1234?"},
        ],
    }
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def nginx_conf(root: Path, port: int) -> Path:
    def lit(s: str) -> str:
        return s.replace("'", "\\'")

    conf = root / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{lit(COMPLETION)}';
    }}
    location = /s/v1/chat/completions {{
      default_type text/event-stream;
      return 200 '{STREAM}';
    }}
  }}
}}
""")
    return conf


def start_nginx(root: Path, port: int) -> subprocess.Popen[bytes]:
    """The static upstream, on CPU 1 beside the load generator."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = str(nginx_conf(root, port))
    return subprocess.Popen(
        ["taskset", "-c", "1", nginx, "-c", conf, "-p", str(root), "-g", "daemon off;"]
    )


def bench_config(dest: Path, upstream_port: int) -> None:
    h = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    hm = "sha256:" + hashlib.sha256(METRICS_KEY.encode()).hexdigest()
    (dest / "all.yaml").write_text(f"""
type: gateway-settings
name: bench
loop_action: alert   # wrk repeats one prompt in one session: detect it, don't kill the benchmark
---
type: gateway-api-keys
keys:
  - {{id: bench, hash: "{h}", user: u_bench, team: bench-team, role: developer}}
  - {{id: scraper, hash: "{hm}", user: u_scraper, team: bench-team, role: metrics}}
---
type: gateway-providers
providers:
  - {{name: openai, protocol: openai, base_url: "http://127.0.0.1:{upstream_port}", api_key: x}}
  - {{name: openai-stream, protocol: openai, base_url: "http://127.0.0.1:{upstream_port}/s", api_key: x}}
---
type: gateway-pricing-catalog
models:
  - {{model: gpt-4o-mini, provider: openai, input_per_mtok: 0.15, output_per_mtok: 0.6}}
---
name: bench-fast
type: gateway-load-balancing-config
rules:
  - {{id: a, weight: 90, target: {{provider: openai, model: gpt-4o-mini, timeout_ms: 5000}}}}
  - {{id: b, weight: 10, target: {{provider: openai, model: gpt-4o-mini, timeout_ms: 5000}}}}
circuit_breaker: {{failure_threshold: 5, window_seconds: 60, cooldown_seconds: 30}}
---
name: bench-stream
type: gateway-load-balancing-config
rules:
  - {{id: s, target: {{provider: openai-stream, model: gpt-4o-mini, timeout_ms: 5000}}}}
---
type: gateway-rate-limit-config
name: bench-limits
rules:
  - {{id: session, limit: {{tokens: 1000000000000, window: 1h}}, scope: session}}
  - {{id: user, when: {{subjects: {{type: user}}}}, limit: {{tokens: 1000000000000, window: 1d}}, scope: user, on_breach: queue_then_429}}
  - {{id: tag, when: {{metadata: {{X-TFY-Workflow-Tag: classify-intent}}}}, limit: {{requests: 1000000000, window: 1h}}, on_breach: fallback_to_bench-fast}}
  - {{id: team, limit: {{requests: 1000000000, window: 1m}}, scope: team}}
---
type: gateway-budget-config
name: bench-budgets
budgets:
  - {{id: project, scope: {{metadata: {{X-TFY-Project: bench}}}}, ceiling_usd: 1000000000, window: monthly, alerts: [{{at_pct: 80}}], on_exceed: hard_block}}
  - {{id: team, scope: {{metadata: {{X-Governor-Team: bench-team}}}}, ceiling_usd: 1000000000, window: daily}}
  - {{id: env, scope: {{metadata: {{X-Governor-Environment: production}}}}, ceiling_usd: 1000000000, window: weekly}}
""")


HEADERS = {
    "Content-Type": "application/json",
    "Authorization": f"Bearer {KEY}",
    "X-TFY-Project": "bench",
    "X-TFY-Session-ID": "sess-bench",
    "X-TFY-Workflow-Tag": "classify-intent",
    "X-TFY-Environment": "production",
    "X-TFY-Cost-Center": "eng-001",
}


def wrk_script(root: Path) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(REQUEST)}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in HEADERS.items()]
    p = root / "post.lua"
    p.write_text("\n".join(lines) + "\n")
    return p


def run_wrk(url: str, script: Path, conns: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def ttfb(url: str, n: int) -> list[float]:
    """Time to the first body byte of a streamed response (new connection each time)."""
    body = json.dumps({**json.loads(REQUEST), "model": "bench-stream", "stream": True}).encode()
    hostport, _, path = url.split("//")[1].partition("/")
    host, port = hostport.split(":")
    hdrs = dict(HEADERS)
    head = (
        f"POST /{path} HTTP/1.1\r\nHost: x\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    out = []
    for _ in range(n):
        with socket.create_connection((host, int(port))) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            s.sendall(head)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            rest = buf.split(b"\r\n\r\n", 1)[1]
            while not rest:
                rest = s.recv(65536)
            out.append((time.perf_counter() - t0) * 1000)
            if not buf.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"streaming request failed: {buf[:200]!r}")
            # drain to the end so the server finishes cleanly
            s.settimeout(5)
            while b"[DONE]" not in rest:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
    return out


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def ledger_pending(port: int) -> str:
    """The proxy's own gauge: a ledger that cannot keep up shows here (and in memory)."""
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}
    )
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    m = re.search(r"^governor_ledger_pending_rows ([\d.e+]+)$", text, re.M)
    return f"{float(m.group(1)):.0f}" if m else "?"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--ttfb-samples", type=int, default=300)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="direct/proxy runs interleaved per measure; the median is reported",
    )
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed: apt-get install wrk nginx-light util-linux")
    root = Path(tempfile.mkdtemp(prefix="governor-bench-"))
    root.chmod(0o755)  # nginx workers run as www-data and must read stream.txt
    up_port, px_port = free_port(), free_port()
    nginx = start_nginx(root, up_port)
    cfg = root / "config"
    cfg.mkdir()
    bench_config(cfg, up_port)
    proxy = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "governor.cli",
            "proxy",
            "--config",
            str(cfg),
            "--port",
            str(px_port),
            "--data-dir",
            str(root / "data"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(root / "proxy.log", "w"),
    )
    try:
        wait_port(up_port)
        wait_port(px_port)
        script = wrk_script(root)
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{px_port}/v1/chat/completions"
        run_wrk(proxy_url, script, 8, 2)  # warm-up: connections, caches, JIT-free but allocators
        rows = []
        # Interleaved rounds, median of each figure: one noisy neighbour burst on this shared
        # machine should not decide the result.
        d64 = median_run(
            [run_wrk(direct_url, script, 64, args.duration) for _ in range(args.rounds)]
        )
        p64 = median_run(
            [run_wrk(proxy_url, script, 64, args.duration) for _ in range(args.rounds)]
        )
        runs1 = [
            (
                run_wrk(direct_url, script, 1, args.duration),
                run_wrk(proxy_url, script, 1, args.duration),
            )
            for _ in range(args.rounds)
        ]
        d1 = median_run([d for d, _ in runs1])
        p1 = median_run([p for _, p in runs1])
        td = ttfb(f"http://127.0.0.1:{up_port}/s/v1/chat/completions", args.ttfb_samples)
        tp = ttfb(proxy_url, args.ttfb_samples)
        rss = peak_rss_mb(proxy.pid)
        time.sleep(0.5)  # one flush interval and a kill-poll tick: the backlog must be gone
        pending = ledger_pending(px_port)
        rows.append(
            (
                "max requests/s @64 conns",
                f"{d64['rps']:.0f}",
                f"{p64['rps']:.0f}",
                f"proxy = {p64['rps'] / d64['rps']:.2f}x direct",
            )
        )
        rows.append(
            (
                "latency p50 @1 conn (ms)",
                f"{d1['p50_ms']:.3f}",
                f"{p1['p50_ms']:.3f}",
                f"added {p1['p50_ms'] - d1['p50_ms']:.3f} ms",
            )
        )
        rows.append(
            (
                "latency p99 @1 conn (ms)",
                f"{d1['p99_ms']:.3f}",
                f"{p1['p99_ms']:.3f}",
                f"added {p1['p99_ms'] - d1['p99_ms']:.3f} ms",
            )
        )
        rows.append(
            (
                "stream first byte p50 (ms)",
                f"{statistics.median(td):.3f}",
                f"{statistics.median(tp):.3f}",
                f"added {statistics.median(tp) - statistics.median(td):.3f} ms",
            )
        )
        rows.append(("proxy peak RSS (MB)", "-", f"{rss:.1f}", ""))
        rows.append(("ledger rows not yet flushed", "-", pending, "after the load stopped"))
        rows.append(
            (
                "non-2xx responses",
                f"{d64['errors'] + d1['errors']:.0f}",
                f"{p64['errors'] + p1['errors']:.0f}",
                "",
            )
        )
        print(
            f"\nGovernor proxy vs direct upstream (nginx), median of {args.rounds} x {args.duration}s "
            "runs, proxy on "
            "CPU 0, nginx + wrk on CPU 1\n"
        )
        print(f"{'metric':32} {'direct':>10} {'proxy':>10}  note")
        for r in rows:
            print(f"{r[0]:32} {r[1]:>10} {r[2]:>10}  {r[3]}")
    finally:
        proxy.terminate()
        nginx.terminate()
        proxy.wait(10)
        nginx.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
