"""Guardrails cost: per KB of prompt in-process, and the proxy's added latency with the sample
guardrails config on, side by side with it off, for a 4 KB prompt, in one run; and the cost per
KB of hostile texts against prose (`tests/support/guardrail_texts.py`): floods, which find next
to nothing (bar <= 2x prose), and texts made of findings, each of which must be reported and
redacted (their cost above prose, per finding).

Part 1 runs the request-input hook of `examples/config/guardrails.yaml` (secrets redact + PII
flag) on 1/4/16 KB of ordinary prose. Part 2 runs two proxies on the same config (one plus the
sample guardrails file) against one nginx upstream, like `proxy_overhead.py` (whose functions
it reuses): proxies pinned to CPU 0, nginx and wrk on CPU 1, one connection, 4 KB prompts.
Target: added p50 <= 1 ms.

    .venv/bin/python benchmarks/guardrails_overhead.py [--duration 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from guardrails_bench import _prompt, _timings
from proxy_overhead import (
    HEADERS,
    REPO,
    bench_config,
    free_port,
    run_wrk,
    start_nginx,
    wait_port,
)

from policies.guardrails import evaluate, load_guardrails
from policies.guardrails.engine import find_spans
from tests.support.guardrail_texts import (
    DISTINCT_FINDINGS,
    DISTINCT_FLOODS,
    FLOODS,
    PROSE,
    REPEATED_FINDINGS,
    distinct,
    distinct_flood,
    fill,
)

SAMPLE = REPO / "examples" / "config" / "guardrails.yaml"
SALT = b"bench"


def per_kb() -> list[tuple[str, str, str, str]]:
    cfg = load_guardrails(SAMPLE.read_text())
    rows = []
    for size in (1024, 4096, 16384):
        text = _prompt(size)
        t = _timings(lambda s: evaluate(cfg, "request-input", s, {}, SALT), text, 1000)
        p50 = statistics.median(t)
        rows.append(
            (
                f"{size // 1024} KB",
                f"{p50:.1f}",
                f"{t[int(len(t) * 0.9)]:.1f}",
                f"{p50 / (size / 1024):.1f}",
            )
        )
    return rows


def adversarial(size: int = 256 * 1024) -> tuple[float, list[tuple[str, str, float, int]]]:
    """µs/KB of every detector on `size` of prose, and on each hostile text of
    `tests/support/guardrail_texts.py` (best of 3 CPU times): rows of (kind, text's name, µs/KB,
    findings), kind `flood` (finds next to nothing: bar 2x prose) or `findings` (one every few
    bytes, each reported and redacted: bounded per finding)."""
    dets = frozenset({"secrets", "pii", "prompt_injection"})

    def cost(text: str) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.thread_time_ns()
            find_spans(text, dets)
            best = min(best, time.thread_time_ns() - t0)
        return best / 1000 / (size / 1024)

    prose_text = fill(PROSE, size)
    find_spans(prose_text, dets)
    texts = [("flood", repr(u), fill(u, size)) for u in FLOODS]
    texts += [("flood", f"distinct {n}", distinct_flood(n, size)) for n in DISTINCT_FLOODS]
    texts += [("findings", repr(u), fill(u, size)) for u in REPEATED_FINDINGS]
    texts += [("findings", f"distinct {n}", distinct(n, size)) for n in DISTINCT_FINDINGS]
    rows, prose = [], cost(prose_text)
    for i, (kind, name, t) in enumerate(texts):
        if i % 8 == 0:  # prose again between texts: its best is the one least disturbed
            prose = min(prose, cost(prose_text))
        rows.append((kind, name, cost(t), len(find_spans(t, dets))))
    return min(prose, cost(prose_text)), rows


def script_4kb(root: Path) -> Path:
    body = json.dumps(
        {
            "model": "bench-fast",
            "messages": [
                {"role": "system", "content": "You are a support assistant."},
                {"role": "user", "content": _prompt(4096)},
            ],
        }
    )
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in HEADERS.items()]
    p = root / "post4k.lua"
    p.write_text("\n".join(lines) + "\n")
    return p


def start_proxy(
    root: Path, name: str, up_port: int, guardrails: bool
) -> tuple[subprocess.Popen[bytes], int]:
    cfg = root / f"config-{name}"
    cfg.mkdir()
    bench_config(cfg, up_port)
    if guardrails:
        shutil.copy(SAMPLE, cfg / "guardrails.yaml")
    port = free_port()
    proc = subprocess.Popen(
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
            str(port),
            "--data-dir",
            str(root / f"data-{name}"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(root / f"{name}.log", "w"),
    )
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating off/on runs per proxy")
    ap.add_argument("--adversarial-only", action="store_true", help="skip the proxy part")
    args = ap.parse_args()
    print("Guardrails request-input hook (sample config: secrets mutate + PII flag), in-process")
    print(f"{'prompt':>7} {'p50 µs':>9} {'p90 µs':>9} {'µs/KB':>8}")
    for r in per_kb():
        print(f"{r[0]:>7} {r[1]:>9} {r[2]:>9} {r[3]:>8}")
    prose, rows = adversarial()
    print(f"\nAll detectors, 256 KB texts, CPU per KB (best of 3): prose {prose:.1f} µs/KB")
    print("Floods (next to no finding; bar <= 2x prose):")
    floods = sorted((r for r in rows if r[0] == "flood"), key=lambda r: -r[2])
    for _, name, c, n in floods:
        print(f"  {name:<40} {c:>7.1f} µs/KB  {c / prose:>5.2f}x  findings {n}")
    print("Texts made of findings (each reported and redacted), µs per finding above prose:")
    found = sorted((r for r in rows if r[0] == "findings"), key=lambda r: -r[2])
    for _, name, c, n in found:
        per = (c - prose) * 256 / n
        print(f"  {name:<40} {c:>7.1f} µs/KB  {c / prose:>5.2f}x  findings {n:>6}  {per:5.1f} µs")
    worst = floods[0]
    print(
        f"worst flood {worst[1]} {worst[2] / prose:.2f}x prose (bar 2x); worst per finding "
        f"{max((c - prose) * 256 / n for _, _, c, n in found):.1f} µs"
    )
    if args.adversarial_only:
        return
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed: apt-get install wrk nginx-light util-linux")
    root = Path(tempfile.mkdtemp(prefix="governor-gr-bench-"))
    root.chmod(0o755)
    up_port = free_port()
    nginx = start_nginx(root, up_port)
    off, off_port = start_proxy(root, "off", up_port, False)
    on, on_port = start_proxy(root, "on", up_port, True)
    try:
        for p in (up_port, off_port, on_port):
            wait_port(p)
        script = script_4kb(root)
        url = "http://127.0.0.1:{}/v1/chat/completions"
        for p in (off_port, on_port):
            run_wrk(url.format(p), script, 4, 2)  # warm-up
        direct = run_wrk(url.format(up_port), script, 1, args.duration)
        res: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both
            res["off"].append(run_wrk(url.format(off_port), script, 1, args.duration))
            res["on"].append(run_wrk(url.format(on_port), script, 1, args.duration))
        errors = sum(r["errors"] for rs in res.values() for r in rs)
    finally:
        for proc in (on, off, nginx):
            proc.terminate()
            proc.wait()

    def med(k: str, key: str) -> float:
        return statistics.median(r[key] for r in res[k])

    print(f"\nProxy, 4 KB prompt, 1 connection, {args.rounds}x{args.duration}s per side (median)")
    print(f"{'':<26} {'direct':>9} {'guard off':>10} {'guard on':>10} {'added':>9}")
    for key, label in (("p50_ms", "latency p50 (ms)"), ("p99_ms", "latency p99 (ms)")):
        a, b = med("off", key), med("on", key)
        print(f"{label:<26} {direct[key]:>9.3f} {a:>10.3f} {b:>10.3f} {b - a:>9.3f}")
    a, b = med("off", "rps"), med("on", "rps")
    print(f"{'requests/s':<26} {direct['rps']:>9.0f} {a:>10.0f} {b:>10.0f} {b - a:>9.0f}")
    print(f"non-2xx responses: {errors:.0f}")


if __name__ == "__main__":
    main()
