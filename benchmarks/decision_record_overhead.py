"""What decision records cost a call, side by side in one process, on the sample config.

Per call the hot path now (1) wraps the four counter mappings `decide()` reads in `Reads` and
builds the record from what it read (`audit.decisions.record_decision`), (2) adds the draw and
the planned route, (3) journals the row with the record inside (orjson, one call either way).
The record becomes JSON text later, on the ledger's writer thread (`decision_record_text`).

Reports Python bytecode instructions executed (deterministic: sys.settrace opcode events) and
interleaved wall time (best of many rounds; noisy on a shared machine) for:
    decide            `decide()` on plain dicts (the path before records)
    decide+record     the same through `Reads`, plus `record_decision` and the route fields
    journal row       orjson.dumps of a typical call row, without and with its record
    record -> text    what the writer thread does per row (off the event loop)

    .venv/bin/python benchmarks/decision_record_overhead.py [--runs 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.config_source import load_config_dir
from audit.decisions import Reads, record_decision
from ledger.call_rows import decision_record_text, normalize_call
from policies.budgets import budget_statuses
from policies.decision import decide
from policies.identity import Identity
from policies.ratelimits import applicable_keys
from policies.routing import plan_route

REPO = Path(__file__).resolve().parents[1]


def _setup() -> dict[str, Any]:
    cfg = load_config_dir(REPO / "examples" / "config")
    ident = Identity(key_id="dev-developer", user="alice", team="platform", role="developer",
                     subject_type="user", project="platform-search", session_id="bench-session",
                     workflow_tag="demo-support")
    now = time.time()
    vm = cfg.virtual_models["intent-fast"]
    counts: dict[Any, list[int]] = {}
    r_rates: dict[Any, list[int]] = {}
    for _, key, _ in applicable_keys(cfg.rate_limits, ident, vm.name, now):
        counts[key] = [5, 1200]
        r_rates[key] = [1, 300]
    spend: dict[Any, float] = {}
    r_spend: dict[Any, float] = {}
    for st in budget_statuses(cfg.budgets, ident, {}, now):
        spend[st.key] = 0.42
        r_spend[st.key] = 0.01
    row = normalize_call({
        "call_id": "bench-call-0000000001", "ts": now, "path": "proxy", "key_id": "dev-developer",
        "user": "alice", "team": "platform", "project": "platform-search",
        "session_id": "bench-session",
        "workflow_tag": "demo-support", "protocol": "openai", "virtual_model": "intent-fast",
        "provider": "openai", "model": "gpt-4o-mini", "model_version": "gpt-4o-mini-2024-07-18",
        "decision": "allowed", "status_code": 200, "input_tokens": 812, "output_tokens": 164,
        "cost_usd": 0.0002202, "latency_ms": 3.1, "upstream_ms": 2.2,
        "prompt_sha256": "a" * 64, "prompt_bytes": 3300, "completion_sha256": "b" * 64,
        "completion_bytes": 640, "config_version": "cv-0123456789abcdef",
    })
    return {"cfg": cfg, "ident": ident, "now": now, "counts": counts, "spend": spend,
            "r_rates": r_rates, "r_spend": r_spend, "row": row}


def _plain(s: dict[str, Any]) -> Any:
    return decide(s["cfg"], s["ident"], "intent-fast", s["counts"], s["spend"], s["now"], 800,
                  False, est_output_tokens=400, reserved_rates=s["r_rates"],
                  reserved_spend=s["r_spend"])


def _recorded(s: dict[str, Any]) -> Any:
    c, sp, rr, rs = Reads(s["counts"]), Reads(s["spend"]), Reads(s["r_rates"]), Reads(s["r_spend"])
    pre = decide(s["cfg"], s["ident"], "intent-fast", c, sp, s["now"], 800, False,
                 est_output_tokens=400, reserved_rates=rr, reserved_spend=rs)
    rec = record_decision(c, sp, rr, rs, "intent-fast", s["now"], 800, 400, None, s["ident"],
                          pre, None)
    targets = plan_route(pre.vm, 0.37, lambda t: True)  # as before: planned either way
    rec["x"] = 0.37
    rec["rt"] = [t.key for t in targets]
    return rec


def _plain_route(s: dict[str, Any]) -> Any:
    pre = _plain(s)
    return plan_route(pre.vm, 0.37, lambda t: True)


def _opcodes(fn: Callable[[], Any]) -> int:
    n = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal n
        frame.f_trace_opcodes = True
        if event == "opcode":
            n += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return n


def _timed(fns: dict[str, Callable[[], Any]], runs: int, rounds: int = 15) -> dict[str, float]:
    """Best-of-rounds µs per call, the variants interleaved round by round."""
    best: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            for _ in range(runs):
                fn()
            best[name].append((time.perf_counter_ns() - t0) / runs / 1000)
    return {k: min(v) for k, v in best.items()} | {k + " (median)": statistics.median(v)
                                                   for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20000)
    args = ap.parse_args()
    s = _setup()
    rec = _recorded(s)
    row = dict(s["row"])
    row_rec = dict(s["row"], decision_record=rec)
    print(f"record ({len(orjson.dumps(rec))} bytes of JSON): {orjson.dumps(rec).decode()}")
    ops = {
        "decide + plan_route (before)": _opcodes(lambda: _plain_route(s)),
        "decide + plan_route + record (now)": _opcodes(lambda: _recorded(s)),
    }
    for k, v in ops.items():
        print(f"{k:40s} {v:6d} bytecodes")
    t = _timed({
        "decide+route": lambda: _plain_route(s),
        "decide+route+record": lambda: _recorded(s),
        "journal row": lambda: orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE),
        "journal row+record": lambda: orjson.dumps(row_rec, option=orjson.OPT_APPEND_NEWLINE),
        "record->text (writer thread)": lambda: decision_record_text(dict(row_rec)),
    }, args.runs)
    for k, v in t.items():
        print(f"{k:40s} {v:8.2f} µs")
    added = (t["decide+route+record"] - t["decide+route"]
             + t["journal row+record"] - t["journal row"])
    print(f"added on the event loop per call: {added:.2f} µs (best of rounds)")


if __name__ == "__main__":
    main()
