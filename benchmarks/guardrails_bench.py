"""Guardrails scan cost: µs per prompt and per KB for 1/4/16 KB of ordinary text, all detectors.

The proxy's budget is ≤ 1 ms p50 added per call with guardrails on, so a 4 KB scan must stay
well under ~300 µs. Prints a table (median and p90 of many runs); asserts nothing.

Run: .venv/bin/python benchmarks/guardrails_bench.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from policies.guardrails import DETECTORS, StreamGuard, load_guardrails, scan
from policies.guardrails.engine import find_spans

ORDINARY = Path(__file__).parent.parent / "tests" / "policies" / "corpus" / "ordinary.txt"
SALT = b"bench"


def _prompt(size: int) -> str:
    base = ORDINARY.read_text(encoding="utf-8")
    return (base * (size // len(base) + 1))[:size]


def _timings(fn, text: str, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(20):
        fn(text)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn(text)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return sorted(out)


def main() -> None:
    print(f"{'size':>6} {'detectors':<18} {'p50 µs':>9} {'p90 µs':>9} {'µs/KB':>8}")
    for size in (1024, 4096, 16384):
        text = _prompt(size)
        runs = 2000 if size < 16384 else 500
        cases = [("all", DETECTORS)] + [(d, frozenset({d})) for d in sorted(DETECTORS)]
        for name, dets in cases:
            t = _timings(lambda s, dets=dets: scan(s, dets, SALT), text, runs)
            p50 = statistics.median(t)
            p90 = t[int(len(t) * 0.9)]
            per_kb = p50 / (size / 1024)
            print(f"{size // 1024:>4}KB {name:<18} {p50:>9.1f} {p90:>9.1f} {per_kb:>8.1f}")
    cfg = load_guardrails(
        "type: gateway-guardrails-config\nname: b\nrules:\n  - id: all\n"
        "    hooks: [request-output]\n    detectors: [secrets, pii, prompt_injection]\n"
        "    mode: mutate\n"
    )
    text = _prompt(4096)
    deltas = [text[i : i + 16] for i in range(0, len(text), 16)]

    def stream(_: str) -> None:
        g = StreamGuard(cfg, "request-output", {}, SALT)
        for d in deltas:
            g.feed(d)
        g.finish()

    t = _timings(stream, text, 300)
    p50 = statistics.median(t)
    print(
        f"\nstream 4KB in {len(deltas)} deltas of 16 chars: p50 {p50:.0f} µs total, "
        f"{p50 / len(deltas):.1f} µs per delta"
    )
    assert find_spans(text, DETECTORS) == []  # ordinary text: nothing to find


if __name__ == "__main__":
    main()
