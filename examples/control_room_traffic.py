"""Realistic ledger traffic for the control room: N days of governed calls, deterministic by seed.

What it writes (all into the ledger tables the proxy writes; SIMULATED traffic, no provider):
- five teams (platform, payments, search, support, data) with their own mix of tools
  (`client_tool`: claude-code, cursor, codex, openai-python), so adoption differs by team;
- projects per team, and `UNTAGGED` spend: cursor sessions sent without a project header and
  the data team's SDK scripts;
- workflow tags (code-review, classify-intent, incident-triage, refactor, support-reply, none)
  on virtual models of three tiers; classify-intent on a premium model (the review queue's case);
- an Opus 4.6 -> 4.7 migration of the virtual model `code-review-strong` half way through the
  window: the same prompt fingerprints cost +25% input tokens on 4.7;
- prompt-cache reads on part of the Anthropic calls, repeated prompts inside sessions;
- budget and rate-limit refusals, guardrail events on all four hooks (one secret `allowed`);
- one looping session (`sess-loop-0001`), live at the end of the window;
- outcomes: merged PRs (GitHub, some naming two sessions), closed tickets, resolved incidents,
  evals with pass rates.

    python -m examples.control_room_traffic --days 7 --ledger sqlite:///.governor/ledger.db

Every row is a function of (seed, days, end, sessions_per_day): the tests recompute the panels
from `generate(...)`'s rows in plain Python and compare with what the ledger queries return.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.config.models import ModelPrice, PricingCatalog
from policies.pricing import call_cost

DAY = 86400.0
LOOP_SESSION = "sess-loop-0001"
SECRET_SESSION_TAG = "refactor"
PRICING_FILE = Path(__file__).parent / "config" / "pricing.yaml"

# team -> (users, project, {tool: probability a user uses it on a given day})
TEAMS: dict[str, tuple[int, str, dict[str, float]]] = {
    "platform": (18, "platform-infra", {"claude-code": 0.55, "cursor": 0.8, "codex": 0.2}),
    "payments": (14, "payments-api", {"claude-code": 0.35, "cursor": 0.7, "codex": 0.4}),
    "search": (12, "platform-search", {"claude-code": 0.6, "cursor": 0.5}),
    "support": (10, "support-bot", {"openai-python": 0.9, "cursor": 0.3}),
    "data": (8, "data-pipeline", {"openai-python": 0.7, "codex": 0.5}),
}
# tool -> workflow tags it runs (weights)
TOOL_TAGS: dict[str, list[tuple[str | None, int]]] = {
    "claude-code": [("code-review", 5), ("incident-triage", 2), (None, 1)],
    "cursor": [("code-review", 3), ("refactor", 3), (None, 2)],
    "codex": [("refactor", 4), ("code-review", 1)],
    "openai-python": [("support-reply", 4), ("classify-intent", 4), (None, 1)],
}
# tag -> virtual model; code-review-strong is the Opus model that migrates
TAG_MODEL: dict[str | None, str] = {
    "code-review": "code-review-strong",
    "incident-triage": "code-review-strong",
    "classify-intent": "code-review-strong",
    "refactor": "code-openai",
    "support-reply": "support-cheap",
    None: "intent-fast",
}
# virtual model -> (provider, protocol, model, model_version) before the migration
VM_TARGET: dict[str, tuple[str, str, str, str]] = {
    "code-review-strong": ("anthropic", "anthropic", "claude-opus-4-6", "claude-opus-4-6"),
    "code-openai": ("openai", "openai", "gpt-4.1", "gpt-4.1-2025-04-14"),
    "support-cheap": ("openai", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    "intent-fast": ("anthropic", "anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001"),
}
MIGRATED = ("anthropic", "anthropic", "claude-opus-4-7", "claude-opus-4-7-20260416")
DRIFT = 1.25  # Opus 4.7 input tokens / Opus 4.6 input tokens on the same prompt
REPO = "acme/monorepo"


def load_prices(path: Path = PRICING_FILE) -> dict[str, ModelPrice]:
    cat = PricingCatalog.model_validate(yaml.safe_load(path.read_text()))
    return {m.model: m for m in cat.models}


def _fp(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


@dataclass
class Traffic:
    """Everything one run generated, in the ledger's row shapes."""

    start: float
    end: float
    migration_ts: float
    calls: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)


def iter_traffic(
    days: int = 7, seed: int = 7, end: float | None = None, sessions_per_day: int = 60
) -> Iterator[tuple[str, dict[str, Any]]]:
    """("call" | "event" | "outcome", row) items, session by session, deterministic."""
    if days < 1 or sessions_per_day < 1:
        raise ValueError("days and sessions_per_day must be at least 1")
    end = float(int(end if end is not None else time.time()) // 3600 * 3600)
    start = end - days * DAY
    migration = start + (days // 2 or 1) * DAY
    rng = random.Random(seed)
    prices = load_prices()
    # prompt pools per tag: (fingerprint, base input tokens)
    pools = {
        tag: [(_fp("pool", tag, i), rng.randint(1500, 6000)) for i in range(40)]
        for tag in TAG_MODEL
    }
    users = [(team, f"{team}-dev-{k:02d}") for team, (n, _, _) in TEAMS.items() for k in range(n)]
    pr_number = 1000
    secret_done = False
    pending_pr: tuple[str, float] | None = None  # a merged PR that will name two sessions
    for day in range(days):
        day_start = start + day * DAY
        # who is active with which tool today
        active: list[tuple[str, str, str]] = []
        for team, user in users:
            for tool, p in TEAMS[team][2].items():
                if rng.random() < p:
                    active.append((team, user, tool))
        for n in range(sessions_per_day):
            team, user, tool = active[rng.randrange(len(active))] if active else users[0] + (
                "cursor",)
            tags, weights = zip(*TOOL_TAGS[tool], strict=True)
            tag = rng.choices(tags, weights)[0]
            vm = TAG_MODEL[tag]
            project = TEAMS[team][1]
            if (tool == "cursor" and rng.random() < 0.3) or (team == "data" and tag is None):
                project = "UNTAGGED"
            sid = f"s-{day:03d}-{n:05d}"
            t = day_start + rng.uniform(7, 18) * 3600
            ncalls = rng.randint(4, 30)
            session_cost = 0.0
            for i in range(ncalls):
                t += rng.uniform(20, 240)
                if t >= end - 60:
                    break
                row = _call(rng, prices, pools, sid, i, t, migration, team, user, tool, project,
                            tag, vm)
                session_cost += row["cost_usd"]
                yield "call", row
                for ev in _events(rng, row):
                    yield "event", ev
                if not secret_done and tag == SECRET_SESSION_TAG and day == days - 1:
                    secret_done = True
                    yield "event", _event(row, "tool-output", 9, "secrets", "github_token",
                                          "allowed")
            # outcomes
            end_t = t
            if tag == "code-review" and rng.random() < 0.4:
                if pending_pr is None and rng.random() < 0.25:
                    pending_pr = (sid, end_t)
                else:
                    pr_number += 1
                    sids = [sid] + ([pending_pr[0]] if pending_pr else [])
                    pending_pr = None
                    for s in sids:
                        yield "outcome", _outcome(f"github:{REPO}#{pr_number}", s, "pr_merged",
                                                  "github", f"https://github.com/{REPO}/pull/"
                                                  f"{pr_number}", min(end_t + 1800, end - 1))
            elif tag == "support-reply" and rng.random() < 0.5:
                yield "outcome", _outcome(f"zendesk:{sid}", sid, "ticket_closed", "zendesk",
                                          f"https://acme.zendesk.com/tickets/{sid}", end_t)
            elif tag == "incident-triage" and rng.random() < 0.3:
                yield "outcome", _outcome(f"pagerduty:{sid}", sid, "incident_resolved",
                                          "pagerduty", "", end_t)
            elif tag == "classify-intent" and rng.random() < 0.5:
                yield "outcome", _outcome(f"eval:{sid}", sid, "eval", "evals", "", end_t,
                                          round(rng.uniform(0.85, 0.99), 3))
    # the looping agent: the same prompt over and over in the last 30 minutes, live at `end`
    fp, base = pools["incident-triage"][0]
    t = end - 1800
    for i in range(240):
        row = _call(rng, prices, pools, LOOP_SESSION, i, t, migration, "platform",
                    "platform-dev-03", "claude-code", "platform-infra", "incident-triage",
                    "code-review-strong", prompt=(fp, base))
        yield "call", row
        t += 7.5


def _call(rng: random.Random, prices: dict[str, ModelPrice], pools: dict[Any, list[Any]],
          sid: str, i: int, t: float, migration: float, team: str, user: str, tool: str,
          project: str, tag: str | None, vm: str,
          prompt: tuple[str, int] | None = None) -> dict[str, Any]:
    provider, protocol, model, version = VM_TARGET[vm]
    if vm == "code-review-strong" and t >= migration:
        provider, protocol, model, version = MIGRATED
    if prompt is None:
        if rng.random() < 0.6:
            prompt = pools[tag][rng.randrange(len(pools[tag]))]
        else:
            prompt = (_fp("own", sid, i), rng.randint(800, 9000))
    fp, base = prompt
    inp = round(base * DRIFT) if model == "claude-opus-4-7" else base
    out = rng.randint(80, 1500)
    cache_read = rng.randint(500, 4000) if protocol == "anthropic" and i and rng.random() < 0.4 \
        else 0
    decision, status, code, reason = "allowed", 200, None, None
    r = rng.random()
    if project == "payments-api" and r < 0.02:
        decision, status, code = "blocked", 429, "budget_exceeded"
    elif team == "search" and r < 0.015:
        decision, status, code = "blocked", 429, "rate_limited"
    elif project == "platform-infra" and r < 0.01:
        decision, reason = "fallback", "budget platform-monthly at 100%: fallback_to_cheaper"
        provider, protocol, model, version = VM_TARGET["intent-fast"]
        inp = base
    if decision == "blocked":
        inp = out = cache_read = 0
        cost = 0.0
    else:
        cost = call_cost(prices[model], version, inp, out, cache_read, 0)
    return {
        "call_id": f"{sid}-{i:03d}",
        "ts": t,
        "path": "proxy",
        "key_id": f"key-{user}",
        "user": user,
        "team": team,
        "project": project,
        "session_id": sid,
        "workflow_tag": tag,
        "environment": "prod",
        "cost_center": None,
        "request_fingerprint": None,
        "client_tool": tool,
        "protocol": protocol,
        "virtual_model": vm,
        "provider": provider,
        "model": model,
        "model_version": version,
        "decision": decision,
        "fallback_reason": reason,
        "status_code": status,
        "error_code": code,
        "stream": False,
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": 0,
        "cost_usd": cost,
        "latency_ms": rng.uniform(300, 4000),
        "upstream_ms": 0.0,
        "prompt_sha256": fp,
        "prompt_bytes": base * 4,
        "completion_sha256": "",
        "completion_bytes": out * 4,
        "prompt_text": None,
        "completion_text": None,
    }


def _event(row: dict[str, Any], hook: str, seq: int, detector: str, kind: str,
           action: str) -> dict[str, Any]:
    return {"ts": row["ts"], "call_id": row["call_id"], "hook": hook, "seq": seq,
            "detector": detector, "type": kind, "action": action, "rule_id": f"{detector}-default",
            "fingerprint": _fp("ev", row["call_id"], hook, seq)[:32],
            "session_id": row["session_id"], "project": row["project"],
            "workflow_tag": row["workflow_tag"], "model": row["model"]}


def _events(rng: random.Random, row: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if row["decision"] == "blocked":
        return out
    r = rng.random()
    if row["workflow_tag"] == "support-reply" and r < 0.05:
        out.append(_event(row, "request-input", 0, "pii", "email", "redacted"))
    if r > 0.99:
        out.append(_event(row, "tool-output", 1, "prompt_injection", "instruction_override",
                          "flagged"))
    if 0.5 < r < 0.505:
        out.append(_event(row, "tool-input", 2, "secrets", "aws_access_key", "blocked"))
    if 0.3 < r < 0.306:
        out.append(_event(row, "request-output", 3, "pii", "phone_number", "flagged"))
    return out


def _outcome(event_id: str, sid: str, kind: str, source: str, url: str, ts: float,
             pass_rate: float | None = None) -> dict[str, Any]:
    return {"event_id": event_id, "session_id": sid, "kind": kind, "source": source, "url": url,
            "ts": ts, "pass_rate": pass_rate, "actor": "generator", "received_ts": ts}


def generate(days: int = 7, seed: int = 7, end: float | None = None,
             sessions_per_day: int = 60) -> Traffic:
    """All rows of one run in memory (tests; the benchmark streams `iter_traffic`)."""
    end_h = float(int(end if end is not None else time.time()) // 3600 * 3600)
    tr = Traffic(start=end_h - days * DAY, end=end_h,
                 migration_ts=end_h - days * DAY + (days // 2 or 1) * DAY)
    for kind, row in iter_traffic(days, seed, end_h, sessions_per_day):
        {"call": tr.calls, "event": tr.events, "outcome": tr.outcomes}[kind].append(row)
    return tr


async def write_traffic(store: Any, items: Any, batch: int = 5000) -> dict[str, int]:
    """Stream ("call" | "event" | "outcome", row) items into the ledger in batches."""
    from controlroom.outcomes import record_outcomes
    from ledger.event_store import insert_guardrail_events

    counts = {"call": 0, "event": 0, "outcome": 0}
    bufs: dict[str, list[dict[str, Any]]] = {"call": [], "event": [], "outcome": []}

    async def flush(kind: str) -> None:
        rows = bufs[kind]
        if not rows:
            return
        if kind == "call":
            await store.insert_calls(rows)  # normalised there: every column, defaults filled
        elif kind == "event":
            await insert_guardrail_events(store, rows, normalized=True)
        else:
            await record_outcomes(store, rows)
        counts[kind] += len(rows)
        bufs[kind] = []

    for kind, row in items:
        bufs[kind].append(row)
        if len(bufs[kind]) >= batch:
            if kind != "call":
                await flush("call")  # events and outcomes after the calls they name
            await flush(kind)
    for kind in ("call", "event", "outcome"):
        await flush(kind)
    return counts


async def _main() -> None:
    from ledger.store import LedgerStore

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ledger", required=True, help="sqlite:///path.db or postgresql://…")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sessions-per-day", type=int, default=60)
    ap.add_argument("--end", type=float, default=None, help="window end (epoch s; default now)")
    a = ap.parse_args()
    store = await LedgerStore.open(a.ledger)
    try:
        counts = await write_traffic(store, iter_traffic(a.days, a.seed, a.end,
                                                         a.sessions_per_day))
    finally:
        await store.close()
    print(f"wrote {counts['call']} calls, {counts['event']} guardrail events, "
          f"{counts['outcome']} outcome rows (SIMULATED traffic)")


if __name__ == "__main__":
    asyncio.run(_main())
