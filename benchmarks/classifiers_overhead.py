"""What classifier detectors cost a call that has none: `guard_request` (the input hooks) and
`guard_response` (the output hooks, a non-streamed 4 KB answer) of this tree side by side
with the same functions at another git revision, in one process, on one real Gateway (SQLite
real Gateway (SQLite ledger, the sample guardrails config), for a 4 KB prompt.

Reports Python bytecode instructions executed per call (deterministic: sys.settrace opcode
events, the C work of the regexes is the same on both sides) and interleaved wall time (noisy on
a shared machine). A third column runs this tree with a classifier configured for another
project (the cost a deployment with classifiers pays on calls they do not scope).

    .venv/bin/python benchmarks/classifiers_overhead.py [--before-rev REV] [--runs 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guardrails_bench import _prompt

from activities import guardrails
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from activities.llm_call import CallRequest
from activities.router import UpstreamResult
from policies.identity import Identity
from policies.request_text import request_view

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER = """
type: gateway-guardrails-config
name: bench-classifiers
classifiers:
  - id: elsewhere
    hooks: [request-input, tool-output, request-output, tool-input]
    when: {metadata: {X-Governor-Project: some-other-project}}
    on_match: block
    http: {url: 'http://127.0.0.1:9/classify'}
"""


def _module_at(rev: str) -> ModuleType:
    src = subprocess.run(
        ["git", "show", f"{rev}:activities/guardrails.py"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    spec = importlib.util.spec_from_loader("guardrails_before", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["guardrails_before"] = mod
    exec(compile(src, f"<{rev}:activities/guardrails.py>", "exec"), mod.__dict__)
    return mod


def _request(text: str) -> CallRequest:
    ident = Identity(
        key_id="bench", user="u", team="t", role="developer", subject_type="user",
        project="bench",
    )  # fmt: skip
    body = {
        "model": "support-cheap",
        "messages": [
            {"role": "system", "content": "You are a support assistant."},
            {"role": "user", "content": text},
        ],
    }
    return CallRequest(protocol="openai", body=body, ident=ident, call_id="bench",
                       body_bytes=len(text))  # fmt: skip


def _opcodes(fn: Callable[[], Any]) -> int:
    n = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
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


async def _gateway(root: Path, name: str, extra: str | None) -> Gateway:
    cfg = root / f"config-{name}"
    shutil.copytree(REPO / "examples" / "config", cfg)
    if extra:
        (cfg / "zz-classifiers.yaml").write_text(extra)
    return await Gateway.open(load_config_dir(cfg), f"sqlite:///{root / name}.db",
                              root / f"journal-{name}")  # fmt: skip


def _table(sides: dict[str, Any], ops: dict[str, int], times: dict[str, list[float]]) -> None:
    print(f"{'':<32} {'bytecodes':>10} {'p50 µs':>9} {'p90 µs':>9}")
    for k in sides:
        t = sorted(times[k])
        print(f"{k:<32} {ops[k]:>10} {statistics.median(t):>9.1f} {t[int(len(t) * 0.9)]:>9.1f}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before-rev", default="daf1ea7")
    ap.add_argument("--runs", type=int, default=3000)
    args = ap.parse_args()
    before = _module_at(args.before_rev)
    root = Path(tempfile.mkdtemp(prefix="governor-cls-bench-"))
    gw = await _gateway(root, "plain", None)
    gw_cls = await _gateway(root, "classifiers", CLASSIFIER)
    text = _prompt(4096)

    def run(mod: ModuleType, g: Gateway) -> Callable[[], Any]:
        def once() -> Any:
            req = _request(text)
            coro = mod.guard_request(g, req, request_view("openai", req.body))
            try:
                coro.send(None)  # a 4 KB prompt never awaits (below the scan pool's size)
            except StopIteration as done:
                return done.value
            raise RuntimeError("guard_request awaited: use a smaller prompt")

        return once

    sides = {
        f"before ({args.before_rev})": run(before, gw),
        "after": run(guardrails, gw),
        "after, classifier elsewhere": run(guardrails, gw_cls),
    }
    for f in sides.values():  # caches filled (merged config, salt, metric children)
        for _ in range(50):
            f()
    ops = {k: _opcodes(f) for k, f in sides.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.runs):  # interleaved: drift on a shared machine hits every side
        for k, f in sides.items():
            t0 = time.perf_counter_ns()
            f()
            times[k].append((time.perf_counter_ns() - t0) / 1000)
    print("guard_request, 4 KB prompt, sample guardrails config (no classifier for this call)")
    _table(sides, ops, times)

    answer = orjson.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop",
         "message": {"role": "assistant", "content": _prompt(4096)}}]})  # fmt: skip

    def out(mod: ModuleType, g: Gateway) -> Callable[[], Any]:
        def once() -> Any:
            req = _request("hi")
            guard = guardrails.call_guard(g, req.ident, "bench", "support-cheap")
            res = UpstreamResult(target=None, provider=None, status=200, body=answer)  # type: ignore[arg-type]
            coro = mod.guard_response(guard, res, "gpt-4o-mini")
            try:
                coro.send(None)
            except StopIteration as done:
                return done.value
            raise RuntimeError("guard_response awaited: use a smaller answer")

        return once

    outs = {
        f"before ({args.before_rev})": out(before, gw),
        "after": out(guardrails, gw),
        "after, classifier elsewhere": out(guardrails, gw_cls),
    }
    for f in outs.values():
        for _ in range(50):
            f()
    ops = {k: _opcodes(f) for k, f in outs.items()}
    times = {k: [] for k in outs}
    for _ in range(args.runs):
        for k, f in outs.items():
            t0 = time.perf_counter_ns()
            f()
            times[k].append((time.perf_counter_ns() - t0) / 1000)
    print()
    print("guard_response, 4 KB answer, sample guardrails config (no classifier for this call)")
    _table(outs, ops, times)
    await gw.close()
    await gw_cls.close()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
