"""The control room's direct reads of the ledger (what the hourly rollups do not hold): live
sessions, session baselines, alerts, guardrail events and outcomes. Both dialects.

Each function returns plain rows (tuples of JSON types); `controlroom.panels` turns them into
panels. Reads of `calls` here cover only the live window, on the `ts` index; none returns a user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    select,
    text,
)

from controlroom.model import Filters
from ledger.models import ALERTS, CALLS, GUARDRAIL_EVENTS, OUTCOMES, SESSIONS
from ledger.store import LedgerStore

c = CALLS.c
RATE_LIMIT_CODES = ("rate_limited", "session_throttled", "session_ceiling")
TOKENS = c.input_tokens + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens

# Indexes the panels read through (created once per store, `IF NOT EXISTS`: a ledger made by an
# older Governor gains it too). None on `calls`: the hot path's writer pays for every index
# there; the panels read `calls` by its `ts` index (live sessions, rollups).
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_sessions_updated ON sessions (updated_ts)",
)


async def ensure_indexes(store: LedgerStore) -> None:
    if getattr(store, "_controlroom_indexes", False):
        return
    async with store._connect(write=True) as conn:
        for ddl in _INDEXES:
            await conn.execute(text(ddl))
    store._controlroom_indexes = True  # type: ignore[attr-defined]


def call_filter(f: Filters, since: float | None = None) -> ColumnElement[bool]:
    """The filter's range and exact matches on `calls` (`since` overrides the range start)."""
    conds = [c.ts >= (f.since if since is None else since), c.ts < f.until]
    if f.team is not None:
        conds.append(c.team == f.team)
    if f.project is not None:
        conds.append(c.project == f.project)
    if f.workflow_tag is not None:
        conds.append(c.workflow_tag == f.workflow_tag)
    return and_(*conds)


def day_of(store: LedgerStore, ts: Any) -> Any:
    """UTC day number of an epoch-seconds column."""
    if store.dialect == "postgresql":
        return cast(func.floor(ts / 86400), BigInteger)
    return cast(ts / 86400, Integer)


async def fetch(store: LedgerStore, q: Any) -> list[tuple[Any, ...]]:
    async with store._connect(write=False) as conn:
        return [tuple(r) for r in (await conn.execute(q)).all()]


# -- panel 1: adoption -------------------------------------------------------------------------


# -- panel 2: burn rate ------------------------------------------------------------------------


# -- panel 3: runaway agents -------------------------------------------------------------------


async def live_sessions(store: LedgerStore, f: Filters, window: float) -> list[tuple[Any, ...]]:
    """(session_id, workflow_tag, team, project, tokens in the last `window` s, last call ts)."""
    q = (
        select(c.session_id, func.max(c.workflow_tag), func.max(c.team), func.max(c.project),
               cast(func.sum(TOKENS), BigInteger), func.max(c.ts))
        .where(call_filter(f, since=max(f.since, f.until - window)), c.session_id.is_not(None))
        .group_by(c.session_id)
        .order_by(c.session_id)
    )
    return await fetch(store, q)


def _session_rate(store: LedgerStore, min_span: float) -> Any:
    """A session's tokens per hour from the sessions table: tokens / max(last - first call,
    `min_span`) x 3600 (the same expression wherever baselines are read, so they agree)."""
    s = SESSIONS.c
    longest = func.greatest if store.dialect == "postgresql" else func.max
    return cast(s.tokens, Float) * 3600.0 / longest(s.updated_ts - s.created_ts, min_span)


async def session_p95(store: LedgerStore, since: float, until: float,
                      min_span: float) -> dict[str | None, tuple[float, int]]:
    """Per workflow tag: (p95 by nearest rank, sessions) of the tokens per hour of sessions
    whose last call is in [since, until), from the sessions table: tokens / max(last - first
    call, `min_span`) x 3600. Ranked in SQL (window functions), one row per tag back."""
    s = SESSIONS.c
    rate = _session_rate(store, min_span).label("rate")
    inner = (
        select(s.workflow_tag.label("tag"), rate)
        .where(s.updated_ts >= since, s.updated_ts < until, s.calls > 0)
        .subquery()
    )
    ranked = select(
        inner.c.tag, inner.c.rate,
        func.row_number().over(partition_by=inner.c.tag, order_by=inner.c.rate).label("rn"),
        func.count().over(partition_by=inner.c.tag).label("n"),
    ).subquery()
    # nearest rank: ceil(0.95 n) in integer arithmetic, as policies.loops.p95
    q = select(ranked.c.tag, ranked.c.rate, ranked.c.n).where(
        ranked.c.rn == (ranked.c.n * 95 + 99) // 100)
    return {tag: (float(rate), int(n)) for tag, rate, n in await fetch(store, q)}


async def sessions_below(store: LedgerStore, since: float, until: float, min_span: float,
                         bounds: Mapping[str | None, float]) -> dict[str | None, tuple[int, int]]:
    """Per workflow tag: (sessions, those whose tokens per hour is below `bounds[tag]`) over
    the sessions `session_p95` ranks, in one pass without ranking: the p95 by nearest rank is
    at least a bound exactly when fewer than ceil(0.95 n) sessions are below it."""
    s = SESSIONS.c
    rate = _session_rate(store, min_span)
    whens = [(and_(s.workflow_tag.is_(None) if tag is None else s.workflow_tag == tag,
                   rate < bound), 1) for tag, bound in bounds.items()]
    below = func.sum(case(*whens, else_=0)) if whens else literal(0)
    q = (select(s.workflow_tag, func.count(), below)
         .where(s.updated_ts >= since, s.updated_ts < until, s.calls > 0)
         .group_by(s.workflow_tag))
    return {tag: (int(n), int(b or 0)) for tag, n, b in await fetch(store, q)}


async def session_status(store: LedgerStore, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    s = SESSIONS.c
    q = select(s.session_id, s.status).where(s.session_id.in_(ids[:1000]))
    return {sid: st for sid, st in await fetch(store, q)}


async def runaway_alerts(store: LedgerStore, since: float) -> list[tuple[Any, ...]]:
    """(alert_key, status, labels JSON, opened_ts) of runaway_agent alerts opened since."""
    a = ALERTS.c
    q = (
        select(a.alert_key, a.status, a.labels, a.opened_ts)
        .where(a.name == "runaway_agent", a.opened_ts >= since)
        .order_by(a.opened_ts.desc())
        .limit(200)
    )
    return await fetch(store, q)


# -- panel 4: premium models and tokenizer drift -----------------------------------------------


# -- panel 5: safety ---------------------------------------------------------------------------


async def guardrail_matrix(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    """(hook, detector, action, events, sessions) in the range (project / tag filters apply;
    events carry no team, so a team filter joins their calls)."""
    e = GUARDRAIL_EVENTS.c
    conds = [e.ts >= f.since, e.ts < f.until]
    if f.project is not None:
        conds.append(e.project == f.project)
    if f.workflow_tag is not None:
        conds.append(e.workflow_tag == f.workflow_tag)
    q = select(e.hook, e.detector, e.action, func.count(), func.count(distinct(e.session_id)))
    if f.team is not None:
        q = q.join(CALLS, CALLS.c.call_id == e.call_id)
        conds.append(CALLS.c.team == f.team)
    q = q.where(and_(*conds)).group_by(e.hook, e.detector, e.action).order_by(
        e.hook, e.detector, e.action)
    return await fetch(store, q)


# -- panel 6: outcomes and leverage ------------------------------------------------------------


async def session_guardrail_blocks(store: LedgerStore, f: Filters) -> dict[str, int]:
    e = GUARDRAIL_EVENTS.c
    q = (
        select(e.session_id, func.count())
        .where(e.ts >= f.since, e.ts < f.until, e.action == "blocked", e.session_id.is_not(None))
        .group_by(e.session_id)
    )
    return {sid: int(n) for sid, n in await fetch(store, q)}


async def outcomes_in_range(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    """(event_id, session_id, kind, pass_rate) of outcomes at or after `since` (an outcome
    lands after the session that produced it, possibly after `until`), in no order: the
    outcome join counts and sorts what it shows."""
    o = OUTCOMES.c
    q = select(o.event_id, o.session_id, o.kind, o.pass_rate).where(
        o.ts >= f.since, o.session_id != "")
    return await fetch(store, q)
