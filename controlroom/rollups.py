"""Hourly rollups of the `calls` table: what keeps every panel under a second on 1M calls.

Each closed UTC hour of calls is rolled once into four small tables (derived data: they can be
dropped and rebuilt from `calls` at any time, so they are not ledger tables and carry no
audit chain):

- `cr_hour_calls` (hour, team, project, tag, tool, environment, virtual model, model, version,
  decision): calls, tokens, input/output/cache tokens, cost, repeated input, budget and
  rate-limit hits;
- `cr_hour_users` (hour, team, project, tag, tool, user): calls — users are only ever counted;
- `cr_hour_sessions` (hour, session): tag, team, project, calls, tokens, cost, input, cache read,
  first and last call, budget and rate-limit hits, retry tokens;
- `cr_hour_prompts` (hour, virtual model, model, version, tag, prompt fingerprint): calls, input
  sum and minimum, first call — calls served by their route (`allowed`) only.

`cr_rollup_hours` records which hours are rolled and how many calls each had. An hour is rolled
`SETTLE_SECONDS` after it ends; the last `RECHECK_SECONDS` of hours are re-counted on every
refresh and re-rolled when a row arrived late (a journal replayed after an outage). A row written
more than `RECHECK_SECONDS` after its call time is only seen after `rebuild`. The panels read
rolled hours from these tables and roll the rest of their range (the open hour, partial hours at
the edges) on the fly with the same `roll` function, so both give the same numbers.

Repeats are counted within an hour (a prompt cache or a retry loop lives minutes, not days):
`repeat_input` is the input of calls repeating a (tag, virtual model, model, version, prompt)
already sent in the hour, `retry_tokens` the tokens of a session's calls repeating a prompt of
that session in the hour; in both the cheapest call of a repeated prompt is the original.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    String,
    Table,
    and_,
    cast,
    delete,
    func,
    literal_column,
    select,
    text,
)
from sqlmodel import SQLModel

from controlroom.model import Filters
from ledger.models import CALLS
from ledger.store import LedgerStore

HOUR = 3600
SETTLE_SECONDS = 120.0
RECHECK_SECONDS = 24 * 3600.0
RATE_LIMIT_CODES = frozenset({"rate_limited", "session_throttled", "session_ceiling"})
_MD = SQLModel.metadata


def _s(name: str) -> Column[Any]:
    return Column(name, String, primary_key=True, nullable=False, default="")


def _n(name: str) -> Column[Any]:
    return Column(name, BigInteger, nullable=False, default=0)


HOUR_CALLS = Table(
    "cr_hour_calls", _MD,
    Column("hour", BigInteger, primary_key=True), _s("team"), _s("project"), _s("workflow_tag"),
    _s("client_tool"), _s("environment"), _s("virtual_model"), _s("model"), _s("model_version"),
    _s("decision"), _n("calls"), _n("tokens"), _n("input_tokens"), _n("output_tokens"),
    _n("cache_read_tokens"), _n("cache_write_tokens"), Column("cost_usd", Float, nullable=False),
    _n("repeat_input"), _n("budget_hits"), _n("rate_hits"),
)
HOUR_USERS = Table(
    "cr_hour_users", _MD,
    Column("hour", BigInteger, primary_key=True), _s("team"), _s("project"), _s("workflow_tag"),
    _s("client_tool"), _s("user"), _n("calls"),
)
HOUR_SESSIONS = Table(
    "cr_hour_sessions", _MD,
    Column("hour", BigInteger, primary_key=True), _s("session_id"),
    Column("workflow_tag", String, nullable=False), Column("team", String, nullable=False),
    Column("project", String, nullable=False), _n("calls"), _n("tokens"),
    Column("cost_usd", Float, nullable=False), _n("input_tokens"), _n("cache_read_tokens"),
    Column("first_ts", Float, nullable=False), Column("last_ts", Float, nullable=False),
    _n("budget_hits"), _n("rate_hits"), _n("retry_tokens"),
    # covering the outcome join's count of a range's sessions and their cost per tag (grouped
    # by session): read from the index alone, ~45% less time than through the table rows
    Index("ix_cr_hour_sessions_tag_cost", "hour", "session_id", "workflow_tag", "cost_usd"),
)
HOUR_PROMPTS = Table(
    "cr_hour_prompts", _MD,
    Column("hour", BigInteger, primary_key=True), _s("virtual_model"), _s("model"),
    _s("model_version"), _s("workflow_tag"), _s("prompt_sha256"), _n("calls"), _n("sum_input"),
    _n("min_input"), Column("first_ts", Float, nullable=False),
    Index("ix_cr_hour_prompts_vm_fp", "virtual_model", "prompt_sha256"),
    # prompts sent twice or more in their hour: what drift reads on a large range
    Index("ix_cr_hour_prompts_repeated", "virtual_model", "hour",
          sqlite_where=text("calls >= 2"), postgresql_where=text("calls >= 2")),
)
ROLLUP_HOURS = Table(
    "cr_rollup_hours", _MD,
    Column("hour", BigInteger, primary_key=True), _n("calls"),
    Column("rolled_ts", Float, nullable=False),
)
TABLES = (HOUR_CALLS, HOUR_USERS, HOUR_SESSIONS, HOUR_PROMPTS, ROLLUP_HOURS)
_COLUMNS = ("call_id", "ts", "team", "project", "workflow_tag", "client_tool", "environment",
            "virtual_model", "model", "model_version", "decision", "user", "session_id",
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
            "cost_usd", "error_code", "fallback_reason", "prompt_sha256")


@dataclass
class Rolled:
    """Rollup rows in memory, keyed like their tables (values are lists, summed in place)."""

    calls: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)
    users: dict[tuple[Any, ...], int] = field(default_factory=dict)
    sessions: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)
    prompts: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)


def roll(rows: Iterable[Mapping[str, Any]]) -> Rolled:
    """Aggregate call rows (any span) into hourly rollup rows. Pure."""
    out = Rolled()
    # repeat groups -> [(value, call_id, rollup key)]: all but the cheapest are repeats
    by_prompt: dict[tuple[Any, ...], list[tuple[int, str, tuple[Any, ...]]]] = {}
    by_session: dict[tuple[Any, ...], list[tuple[int, str, tuple[Any, ...]]]] = {}
    for r in rows:
        hour = int(r["ts"] // HOUR) * HOUR
        tag, tool, env = r["workflow_tag"] or "", r["client_tool"] or "", r["environment"] or ""
        inp, out_, cr, cw = (int(r["input_tokens"]), int(r["output_tokens"]),
                             int(r["cache_read_tokens"]), int(r["cache_write_tokens"]))
        tokens = inp + out_ + cr + cw
        cost = float(r["cost_usd"])
        budget = int(r["error_code"] == "budget_exceeded"
                     or (r["fallback_reason"] or "").startswith("budget"))
        rate = int(r["error_code"] in RATE_LIMIT_CODES)
        ck = (hour, r["team"], r["project"], tag, tool, env, r["virtual_model"], r["model"],
              r["model_version"], r["decision"])
        out_row = out.calls.get(ck)
        if out_row is None:
            out_row = out.calls[ck] = [0, 0, 0, 0, 0, 0, 0.0, 0, 0, 0]
        out_row[0] += 1
        out_row[1] += tokens
        out_row[2] += inp
        out_row[3] += out_
        out_row[4] += cr
        out_row[5] += cw
        out_row[6] += cost
        out_row[8] += budget
        out_row[9] += rate
        uk = (hour, r["team"], r["project"], tag, tool, r["user"])
        out.users[uk] = out.users.get(uk, 0) + 1
        fp = r["prompt_sha256"] or ""
        if r["decision"] == "allowed" and fp:
            pk = (hour, r["virtual_model"], r["model"], r["model_version"], tag, fp)
            p = out.prompts.get(pk)
            if p is None:
                out.prompts[pk] = [1, inp, inp, float(r["ts"])]
            else:
                p[0] += 1
                p[1] += inp
                p[2] = min(p[2], inp)
                p[3] = min(p[3], float(r["ts"]))
            g = (hour, tag, r["virtual_model"], r["model"], r["model_version"], fp)
            by_prompt.setdefault(g, []).append((inp, r["call_id"], ck))
        sid = r["session_id"]
        if sid is not None:
            sk = (hour, sid)
            s = out.sessions.get(sk)
            if s is None:
                s = out.sessions[sk] = [tag, r["team"], r["project"], 0, 0, 0.0, 0, 0,
                                        float(r["ts"]), float(r["ts"]), 0, 0, 0]
            s[3] += 1
            s[4] += tokens
            s[5] += cost
            s[6] += inp
            s[7] += cr
            s[8] = min(s[8], float(r["ts"]))
            s[9] = max(s[9], float(r["ts"]))
            s[10] += budget
            s[11] += rate
            if fp:
                by_session.setdefault((hour, sid, fp), []).append((tokens, r["call_id"], sk))
    for calls in by_prompt.values():
        if len(calls) > 1:
            calls.sort()
            for n, _, key in calls[1:]:
                out.calls[key][7] += n
    for calls in by_session.values():
        if len(calls) > 1:
            calls.sort()
            for n, _, key in calls[1:]:
                out.sessions[key][12] += n
    return out




# -- storage -------------------------------------------------------------------------------------


async def ensure_tables(store: LedgerStore) -> None:
    if getattr(store, "_rollup_tables", False):
        return

    def create(sync_conn: Any) -> None:
        _MD.create_all(sync_conn, tables=list(TABLES))
        for t in TABLES:  # tables made before an index was added gain it
            for ix in t.indexes:
                ix.create(sync_conn, checkfirst=True)

    async with store._connect(write=True) as conn:
        await conn.run_sync(create)
    store._rollup_tables = True  # type: ignore[attr-defined]


def _hour_of(store: LedgerStore, ts: Any) -> Any:
    from sqlalchemy import Integer, cast

    if store.dialect == "postgresql":
        return cast(func.floor(ts / HOUR), BigInteger) * HOUR
    return cast(ts / HOUR, Integer) * HOUR


async def fetch_calls(store: LedgerStore, since: float, until: float) -> list[dict[str, Any]]:
    """The columns `roll` reads, of calls with ts in [since, until)."""
    c = CALLS.c
    q = select(*(c[n] for n in _COLUMNS)).where(c.ts >= since, c.ts < until)
    async with store._connect(write=False) as conn:
        return [dict(m) for m in (await conn.execute(q)).mappings().all()]


def _rows(rolled: Rolled) -> dict[Table, list[dict[str, Any]]]:
    calls = [dict(zip(("hour", "team", "project", "workflow_tag", "client_tool", "environment",
                       "virtual_model", "model", "model_version", "decision"), k, strict=True),
                  calls=v[0], tokens=v[1], input_tokens=v[2], output_tokens=v[3],
                  cache_read_tokens=v[4], cache_write_tokens=v[5], cost_usd=v[6],
                  repeat_input=v[7], budget_hits=v[8], rate_hits=v[9])
             for k, v in rolled.calls.items()]
    users = [dict(zip(("hour", "team", "project", "workflow_tag", "client_tool", "user"), k,
                      strict=True), calls=v) for k, v in rolled.users.items()]
    sessions = [dict(hour=k[0], session_id=k[1], workflow_tag=v[0], team=v[1], project=v[2],
                     calls=v[3], tokens=v[4], cost_usd=v[5], input_tokens=v[6],
                     cache_read_tokens=v[7], first_ts=v[8], last_ts=v[9], budget_hits=v[10],
                     rate_hits=v[11], retry_tokens=v[12]) for k, v in rolled.sessions.items()]
    prompts = [dict(zip(("hour", "virtual_model", "model", "model_version", "workflow_tag",
                         "prompt_sha256"), k, strict=True), calls=v[0], sum_input=v[1],
                    min_input=v[2], first_ts=v[3]) for k, v in rolled.prompts.items()]
    return {HOUR_CALLS: calls, HOUR_USERS: users, HOUR_SESSIONS: sessions, HOUR_PROMPTS: prompts}


async def _store_hours(store: LedgerStore, hours: list[int], counts: Mapping[int, int],
                       rolled: Rolled, now: float) -> None:
    """Replace the rollups of `hours` in one transaction (two replicas rolling the same hour
    write the same rows once)."""
    rows = _rows(rolled)
    async with store._connect(write=True) as conn:
        for t in TABLES:
            await conn.execute(delete(t).where(t.c.hour.in_(hours)))
        for t, batch in rows.items():
            for i in range(0, len(batch), 5000):
                await conn.execute(store._insert(t).on_conflict_do_nothing(), batch[i:i + 5000])
        await conn.execute(store._insert(ROLLUP_HOURS).on_conflict_do_nothing(),
                           [{"hour": h, "calls": counts.get(h, 0), "rolled_ts": now}
                            for h in hours])


async def refresh(store: LedgerStore, now: float | None = None,
                  max_calls_per_batch: int = 50_000) -> int:
    """Roll every closed hour not rolled yet, and re-roll the last `RECHECK_SECONDS` of hours
    whose call count changed; returns how many hours were (re)rolled."""
    await ensure_tables(store)
    now = time.time() if now is None else now
    closed = int((now - SETTLE_SECONDS) // HOUR) * HOUR
    async with store._connect(write=False) as conn:
        rolled = {int(h): int(n) for h, n in
                  (await conn.execute(select(ROLLUP_HOURS.c.hour, ROLLUP_HOURS.c.calls))).all()}
        c = CALLS.c
        hour = _hour_of(store, c.ts).label("h")
        q = select(hour, func.count()).where(c.ts < closed)
        if rolled:
            q = q.where(c.ts >= min(max(rolled) + HOUR, closed) - RECHECK_SECONDS)
        counts = {int(h): int(n) for h, n in (await conn.execute(q.group_by(hour))).all()}
    todo = sorted(h for h, n in counts.items() if rolled.get(h) != n)
    done = 0
    batch: list[int] = []
    size = 0
    for h in todo:
        batch.append(h)
        size += counts[h]
        if size >= max_calls_per_batch or h == todo[-1]:
            rows: list[dict[str, Any]] = []
            for span in _spans(batch):
                rows.extend(await fetch_calls(store, span[0], span[1]))
            result = await asyncio.to_thread(roll, rows)  # pure Python: off the event loop
            await _store_hours(store, batch, counts, result, now)
            done += len(batch)
            batch, size = [], 0
    if done and store.dialect == "postgresql" and (not rolled or done * 10 >= len(rolled)):
        # A bulk roll (first build, rebuild, catching up) changes the tables' shape at once:
        # fresh planner statistics now, instead of whenever autovacuum gets to them (without
        # them the outcome join probed outcomes once per session-hour: 0.36 s instead of 0.08).
        async with store._connect(write=True) as conn:
            for t in TABLES:
                await conn.execute(text(f"ANALYZE {t.name}"))
    return done


async def rebuild(store: LedgerStore, now: float | None = None) -> int:
    """Drop every rollup and roll the whole ledger again (after rows were written more than
    `RECHECK_SECONDS` late, or deleted by retention)."""
    await ensure_tables(store)
    async with store._connect(write=True) as conn:
        for t in TABLES:
            await conn.execute(delete(t))
    return await refresh(store, now)


def _spans(hours: list[int]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for h in sorted(hours):
        if out and out[-1][1] == h:
            out[-1] = (out[-1][0], float(h + HOUR))
        else:
            out.append((float(h), float(h + HOUR)))
    return out


# -- reading -------------------------------------------------------------------------------------


def _keep(f: Filters, team: str, project: str, tag: str) -> bool:
    return ((f.team is None or team == f.team) and (f.project is None or project == f.project)
            and (f.workflow_tag is None or tag == f.workflow_tag))


def _filtered(r: Rolled, f: Filters) -> Rolled:
    """`r` without what `f`'s team / project / tag exclude (prompts: the tag only — a tokenizer
    is not per team)."""
    return Rolled(
        calls={k: v for k, v in r.calls.items() if _keep(f, k[1], k[2], k[3])},
        users={k: v for k, v in r.users.items() if _keep(f, k[1], k[2], k[3])},
        sessions={k: v for k, v in r.sessions.items() if _keep(f, v[1], v[2], v[0])},
        prompts={k: v for k, v in r.prompts.items()
                 if f.workflow_tag is None or k[4] == f.workflow_tag},
    )


def _where(t: Table, f: Filters, h0: int, h1: int, by_team: bool = True) -> Any:
    conds = [t.c.hour >= h0, t.c.hour < h1]
    if by_team and f.team is not None:
        conds.append(t.c.team == f.team)
    if by_team and f.project is not None:
        conds.append(t.c.project == f.project)
    if f.workflow_tag is not None:
        conds.append(t.c.workflow_tag == f.workflow_tag)
    return and_(*conds)


async def spend(store: LedgerStore, since: float, until: float,
                match: Mapping[str, str]) -> float:
    """Cost of the calls in [since, until) whose team / project / workflow_tag / environment
    equal `match` (a budget's scope): stored hours summed in SQL, the rest rolled."""
    await ensure_tables(store)
    t = HOUR_CALLS
    h0 = int(-(-since // HOUR)) * HOUR
    h1 = int(until // HOUR) * HOUR
    total = 0.0
    live: list[tuple[float, float]] = []
    if h0 >= h1:
        live.append((since, until))
    else:
        conds = [t.c.hour >= h0, t.c.hour < h1, *(t.c[k] == v for k, v in match.items())]
        async with store._connect(write=False) as conn:
            rh = ROLLUP_HOURS.c
            have = {int(h) for (h,) in (await conn.execute(
                select(rh.hour).where(rh.hour >= h0, rh.hour < h1))).all()}
            total += float((await conn.execute(
                select(func.sum(t.c.cost_usd)).where(and_(*conds)))).scalar() or 0.0)
        if since < h0:
            live.append((since, float(h0)))
        live.extend(_spans([h for h in range(h0, h1, HOUR) if h not in have]))
        if until > h1:
            live.append((float(h1), until))
    names = ("hour", "team", "project", "workflow_tag", "client_tool", "environment")
    for a, b in live:
        for k, v in roll(await fetch_calls(store, a, b)).calls.items():
            key = dict(zip(names, k, strict=False))
            if all(key.get(m) == val for m, val in match.items()):
                total += v[6]
    return total


async def read(store: LedgerStore, f: Filters, parts: Iterable[str] = ("calls", "users",
               "sessions", "prompts"), prompt_cap: int = 20_000,
               prompt_models: Iterable[str] | None = None,
               prompt_calls: int | None = None) -> Rolled:
    """Rollup rows of [f.since, f.until) under `f`'s filters: stored hours from the tables, the
    rest rolled on the fly from `calls`. `prompts` rows are capped near `prompt_cap`: above it
    only prompts sent twice or more within an hour are read, and above it still a deterministic
    sample of their fingerprints (a hex prefix range), so identical prompts stay together.
    `prompt_models` limits prompt rows to those virtual models; `prompt_calls`, when the caller
    knows it, is their served calls in the range (at least their prompt groups: no count
    query)."""
    await ensure_tables(store)
    parts = set(parts)
    h0 = int(-(-f.since // HOUR)) * HOUR
    h1 = int(f.until // HOUR) * HOUR
    out = Rolled()
    live: list[tuple[float, float]] = []
    if h0 >= h1:
        live.append((f.since, f.until))
    else:
        async with store._connect(write=False) as conn:
            rh = ROLLUP_HOURS.c
            have = {int(h) for (h,) in (await conn.execute(
                select(rh.hour).where(rh.hour >= h0, rh.hour < h1))).all()}
            if f.since < h0:
                live.append((f.since, float(h0)))
            live.extend(_spans([h for h in range(h0, h1, HOUR) if h not in have]))
            if f.until > h1:
                live.append((float(h1), f.until))
            await _read_stored(conn, out, f, h0, h1, parts, prompt_cap, prompt_models,
                               prompt_calls)
    for a, b in live:
        rows = await fetch_calls(store, a, b)
        extra = _filtered(roll(rows), f)
        _merge(out, extra, prompt_models)
    return out


async def _read_stored(conn: Any, out: Rolled, f: Filters, h0: int, h1: int, parts: set[str],
                       prompt_cap: int, prompt_models: Iterable[str] | None,
                       prompt_calls: int | None = None) -> None:
    if "calls" in parts:
        t = HOUR_CALLS
        keys = [t.c[n] for n in ("hour", "team", "project", "workflow_tag", "client_tool",
                                 "environment", "virtual_model", "model", "model_version",
                                 "decision")]
        vals = [t.c[n] for n in ("calls", "tokens", "input_tokens", "output_tokens",
                                 "cache_read_tokens", "cache_write_tokens", "cost_usd",
                                 "repeat_input", "budget_hits", "rate_hits")]
        for r in (await conn.execute(select(*keys, *vals).where(_where(t, f, h0, h1)))).all():
            out.calls[tuple(r[:10])] = list(r[10:])
    if "users" in parts:
        t = HOUR_USERS
        q = select(t.c.hour, t.c.team, t.c.project, t.c.workflow_tag, t.c.client_tool,
                   t.c.user, t.c.calls).where(_where(t, f, h0, h1))
        for r in (await conn.execute(q)).all():
            out.users[tuple(r[:6])] = int(r[6])
    if "sessions" in parts:  # one row per session (its stored hours summed), key (-1, id)
        t = HOUR_SESSIONS
        def total(name: str) -> Any:
            return cast(func.sum(t.c[name]), BigInteger)  # an int in both dialects

        q = select(t.c.session_id, func.max(t.c.workflow_tag), func.max(t.c.team),
                   func.max(t.c.project), total("calls"), total("tokens"),
                   func.sum(t.c.cost_usd), total("input_tokens"), total("cache_read_tokens"),
                   func.min(t.c.first_ts), func.max(t.c.last_ts), total("budget_hits"),
                   total("rate_hits"), total("retry_tokens")).where(
            _where(t, f, h0, h1)).group_by(t.c.session_id)
        for r in (await conn.execute(q)).all():
            out.sessions[(-1, r[0])] = r[1:]  # a tuple: readers copy before changing it
    if "prompts" in parts:
        t = HOUR_PROMPTS
        cond = _where(t, f, h0, h1, by_team=False)
        if prompt_models is not None:
            cond = and_(cond, t.c.virtual_model.in_(list(prompt_models)))
        n = prompt_calls if prompt_calls is not None else int((await conn.execute(
            select(func.count()).select_from(t).where(cond))).scalar() or 0)
        if n > prompt_cap:
            # Too many to read: prompts sent at least twice in an hour (templates, system
            # prompts: where a tokenizer change moves spend), and a fingerprint sample of those
            # if they are still too many.
            cond = and_(cond, t.c.calls >= literal_column("2"))  # literal: the partial index
            n = int((await conn.execute(select(func.count()).select_from(t).where(cond))).scalar()
                    or 0)
            if n > prompt_cap:
                cond = and_(cond, t.c.prompt_sha256 < sample_cut(prompt_cap / n))
        q = select(t.c.hour, t.c.virtual_model, t.c.model, t.c.model_version, t.c.workflow_tag,
                   t.c.prompt_sha256, t.c.calls, t.c.sum_input, t.c.min_input,
                   t.c.first_ts).where(cond)
        for r in (await conn.execute(q)).all():
            out.prompts[tuple(r[:6])] = list(r[6:])


def sample_cut(fraction: float) -> str:
    """The hex prefix below which about `fraction` of uniformly spread fingerprints fall."""
    return format(max(1, min(0xFFFF, int(fraction * 0x10000))), "04x")


def _merge(out: Rolled, extra: Rolled, prompt_models: Iterable[str] | None) -> None:
    for k, v in extra.calls.items():
        out.calls[k] = v  # hours never overlap between stored and live spans
    for k, n in extra.users.items():
        out.users[k] = n
    for k, s in extra.sessions.items():
        out.sessions[k] = s
    models = None if prompt_models is None else set(prompt_models)
    for k, p in extra.prompts.items():
        if models is None or k[1] in models:
            out.prompts[k] = p



@dataclass
class SessionSummary:
    """Sessions of a range for the outcome join: per workflow tag ('' = none) the number of
    sessions and their cost, and the summed rollup values (as in `Rolled.sessions`) of the
    sessions that need scoring — those with an outcome since the range's start, and those with
    calls in hours rolled on the fly (few: the open hour, the edges)."""

    per_tag: dict[str, list[Any]] = field(default_factory=dict)  # tag -> [sessions, cost]
    rows: dict[str, list[Any]] = field(default_factory=dict)


def _session_totals(t: Table) -> list[Any]:
    def total(name: str) -> Any:
        return cast(func.sum(t.c[name]), BigInteger)  # an int in both dialects

    return [func.max(t.c.workflow_tag), func.max(t.c.team), func.max(t.c.project),
            total("calls"), total("tokens"), func.sum(t.c.cost_usd), total("input_tokens"),
            total("cache_read_tokens"), func.min(t.c.first_ts), func.max(t.c.last_ts),
            total("budget_hits"), total("rate_hits"), total("retry_tokens")]


async def session_summary(store: LedgerStore, f: Filters) -> SessionSummary:
    """What the outcome join needs, without reading every session: a session with no outcome
    scores 0 (`controlroom.leverage`), so only its tag and cost are counted, in SQL."""
    from ledger.models import OUTCOMES

    await ensure_tables(store)
    h0 = int(-(-f.since // HOUR)) * HOUR
    h1 = int(f.until // HOUR) * HOUR
    out = SessionSummary()
    live: list[tuple[float, float]] = []
    t = HOUR_SESSIONS
    if h0 >= h1:
        live.append((f.since, f.until))
    else:
        cond = _where(t, f, h0, h1)
        per_session = (select(t.c.session_id, func.max(t.c.workflow_tag).label("tag"),
                              func.sum(t.c.cost_usd).label("cost"))
                       .where(cond).group_by(t.c.session_id).subquery())
        o = OUTCOMES.c
        with_outcome = select(o.session_id).where(o.ts >= f.since, o.session_id != "")
        rh = ROLLUP_HOURS.c
        # three independent reads, each on its own connection, at once
        have_rows, tag_rows, outcome_rows = await asyncio.gather(
            _fetch(store, select(rh.hour).where(rh.hour >= h0, rh.hour < h1)),
            _fetch(store, select(per_session.c.tag, func.count(),
                                 func.sum(per_session.c.cost)).group_by(per_session.c.tag)),
            _fetch(store, select(t.c.session_id, *_session_totals(t))
                   .where(cond, t.c.session_id.in_(with_outcome)).group_by(t.c.session_id)))
        have = {int(h) for (h,) in have_rows}
        if f.since < h0:
            live.append((f.since, float(h0)))
        live.extend(_spans([h for h in range(h0, h1, HOUR) if h not in have]))
        if f.until > h1:
            live.append((float(h1), f.until))
        for tag, n, cost in tag_rows:
            out.per_tag[tag] = [int(n), float(cost or 0.0)]
        for r in outcome_rows:
            out.rows[r[0]] = list(r[1:])
    fly: dict[str, list[Any]] = {}
    for a, b in live:
        for (_, sid), v in _filtered(roll(await fetch_calls(store, a, b)), f).sessions.items():
            _add_session(fly, sid, v)
    if fly and h0 < h1:  # sessions with stored hours too: complete them, count them once
        ids = sorted(fly)
        async with store._connect(write=False) as conn:
            for i in range(0, len(ids), 500):
                q = (select(t.c.session_id, *_session_totals(t))
                     .where(_where(t, f, h0, h1), t.c.session_id.in_(ids[i:i + 500]))
                     .group_by(t.c.session_id))
                for r in (await conn.execute(q)).all():
                    out.rows[r[0]] = list(r[1:])
    for sid, v in fly.items():
        stored = out.rows.get(sid)
        if stored is None:
            tag = out.per_tag.setdefault(v[0], [0, 0.0])
            tag[0] += 1
            tag[1] += v[5]
            out.rows[sid] = v
        else:
            out.per_tag.setdefault(stored[0], [0, 0.0])[1] += v[5]
            _add_session(out.rows, sid, v)
    return out


async def _fetch(store: LedgerStore, q: Any) -> list[Any]:
    async with store._connect(write=False) as conn:
        return list((await conn.execute(q)).all())


def _add_session(acc: dict[str, list[Any]], sid: str, v: list[Any] | tuple[Any, ...]) -> None:
    a = acc.get(sid)
    if a is None:
        acc[sid] = list(v)
        return
    for i in (3, 4, 5, 6, 7, 10, 11, 12):
        a[i] += v[i]
    a[8] = min(a[8], v[8])
    a[9] = max(a[9], v[9])
