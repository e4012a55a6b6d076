"""Two (or more) checkouts of Governor's proxy side by side, rounds interleaved, in one run.

`proxy_overhead.py` measures one checkout against the upstream. To tell whether a change moved
the proxy's cost, this runs the same load against proxies started from several checkouts (each
with its own `.venv`), one after another in interleaved rounds, on the same nginx upstream and
the same config (`proxy_overhead.bench_config`). Each proxy is pinned to CPU 0, nginx and wrk
share CPU 1, and only the proxy under load is busy.

Per checkout it reports the median over rounds of: requests/s at 64 connections, the proxy
process's CPU time (user + system, from /proc) per call during that run, p50 / p99 at one
connection, and peak RSS.

    .venv/bin/python benchmarks/proxy_compare.py /work/old-checkout . [--rounds 5 --duration 6]
    .venv/bin/python benchmarks/proxy_compare.py . .@GOVERNOR_SOME_SETTING=1   # same tree, env

Needs `wrk` and `nginx` (apt-get install wrk nginx-light). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_overhead import (
    bench_config,
    free_port,
    peak_rss_mb,
    run_wrk,
    start_nginx,
    wait_port,
    wrk_script,
)

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def start_proxy(
    tree: Path, cfg: Path, port: int, data: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        sys.exit(f"{tree} has no .venv: run `bash -c 'source scripts/_venv.sh'` there first")
    cmd = ["taskset", "-c", "0", str(python), "-m", "governor.cli", "proxy", "--config", str(cfg),
           "--port", str(port), "--data-dir", str(data)]  # fmt: skip
    return subprocess.Popen(cmd, cwd=tree, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**os.environ, **(env or {})})  # fmt: skip


def parse_target(spec: str) -> tuple[Path, dict[str, str]]:
    """`PATH` or `PATH@NAME=VALUE,NAME=VALUE`: a checkout and environment for its proxy."""
    path, _, extra = spec.partition("@")
    env = dict(kv.split("=", 1) for kv in extra.split(",") if kv)
    return Path(path), env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="checkouts (each with .venv), as PATH[@NAME=VALUE,…]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=6)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="governor-compare-"))
    root.chmod(0o755)
    up_port = free_port()
    nginx = start_nginx(root, up_port)
    cfg = root / "config"
    cfg.mkdir()
    bench_config(cfg, up_port)
    script = wrk_script(root)
    procs: list[tuple[str, subprocess.Popen[bytes], str]] = []
    try:
        wait_port(up_port)
        for i, spec in enumerate(args.trees):
            tree, env = parse_target(spec)
            port = free_port()
            log = root / f"proxy{i}.log"
            p = start_proxy(tree.resolve(), cfg, port, root / f"data{i}", log, env)
            procs.append((spec, p, f"http://127.0.0.1:{port}/v1/chat/completions"))
            wait_port(port)
            run_wrk(procs[-1][2], script, 8, 2)  # warm-up
        res: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(procs))}
        for r in range(args.rounds):
            order = list(range(len(procs)))
            if r % 2:
                order.reverse()  # neither side always runs first
            for i in order:
                _, p, url = procs[i]
                c0 = cpu_seconds(p.pid)
                w64 = run_wrk(url, script, 64, args.duration)
                cpu = cpu_seconds(p.pid) - c0
                w1 = run_wrk(url, script, 1, max(2, args.duration // 2))
                calls = w64["rps"] * args.duration
                res[i].append(
                    {
                        "rps": w64["rps"],
                        "cpu_us": cpu / calls * 1e6 if calls else float("nan"),
                        "p50": w1["p50_ms"],
                        "p99": w1["p99_ms"],
                        "errors": w64["errors"] + w1["errors"],
                    }
                )
        time.sleep(0.5)
        print(f"\nmedian of {args.rounds} interleaved rounds ({args.duration}s at 64 conns, "
              f"{max(2, args.duration // 2)}s at 1 conn)\n")  # fmt: skip
        print(f"{'checkout':40} {'rps@64':>8} {'cpu µs/call':>12} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'RSS MB':>7} {'non-2xx':>8}")  # fmt: skip
        base = None
        for i, (tree, p, _) in enumerate(procs):
            m = {k: statistics.median(x[k] for x in res[i]) for k in res[i][0]}
            rel = "" if base is None else f"  ({m['rps'] / base:.3f}x rps of the first)"
            base = base or m["rps"]
            errors = sum(x["errors"] for x in res[i])
            print(f"{tree[-40:]:40} {m['rps']:8.0f} {m['cpu_us']:12.1f} {m['p50']:8.3f} "
                  f"{m['p99']:8.3f} {peak_rss_mb(p.pid):7.1f} {errors:8.0f}{rel}")  # fmt: skip
    finally:
        for _, p, _ in procs:
            p.terminate()
        nginx.terminate()
        for _, p, _ in procs:
            p.wait(10)
        nginx.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
