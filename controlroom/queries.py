"""The control room's reads of the ledger: one aggregate query per question, both dialects.

Each function returns plain rows (tuples of JSON types); `controlroom.panels` turns them into
panels. Every read of `calls` is bounded by the filter's time range on the `ts` index (or the
indexes `ensure_indexes` adds), never a scan of the whole ledger, and none returns a user: users
are only ever counted (`COUNT(DISTINCT user)`), so no output can order people by usage.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    and_,
    case,
    cast,
    distinct,
    func,
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
# older Governor gains them too). Each costs the writer one more b-tree insert per call.
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_calls_ts_team_tool ON calls (ts, team, client_tool, \"user\")",
    "CREATE INDEX IF NOT EXISTS ix_calls_session_prompt ON calls (session_id, prompt_sha256)",
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


async def active_users_by_day(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    """(day, team, tool, distinct users) per UTC day; tool '' when the call named none."""
    day = day_of(store, c.ts).label("day")
    tool = func.coalesce(c.client_tool, "").label("tool")
    q = (
        select(day, c.team, tool, func.count(distinct(c.user)))
        .where(call_filter(f))
        .group_by(day, c.team, tool)
        .order_by(day, c.team, tool)
    )
    return await fetch(store, q)


async def team_headcount(store: LedgerStore, f: Filters) -> dict[str, int]:
    """Distinct users per team with any call in the range."""
    q = select(c.team, func.count(distinct(c.user))).where(call_filter(f)).group_by(c.team)
    return {t: int(n) for t, n in await fetch(store, q)}


# -- panel 2: burn rate ------------------------------------------------------------------------


async def spend_by_project(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    """(project, calls, tokens, cost_usd), most spend first."""
    cost = func.sum(c.cost_usd)
    q = (
        select(c.project, func.count(), cast(func.sum(TOKENS), BigInteger), cost)
        .where(call_filter(f))
        .group_by(c.project)
        .order_by(cost.desc(), c.project)
    )
    return await fetch(store, q)


async def untagged_sources(store: LedgerStore, f: Filters, untagged: str) -> list[tuple[Any, ...]]:
    """Where untagged spend comes from: (team, tool, environment, calls, cost) — never a user."""
    tool = func.coalesce(c.client_tool, "")
    env = func.coalesce(c.environment, "")
    cost = func.sum(c.cost_usd)
    q = (
        select(c.team, tool, env, func.count(), cost)
        .where(call_filter(f), c.project == untagged)
        .group_by(c.team, tool, env)
        .order_by(cost.desc(), c.team, tool, env)
    )
    return await fetch(store, q)


async def daily_spend_by_project(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    day = day_of(store, c.ts).label("day")
    q = (
        select(day, c.project, func.sum(c.cost_usd))
        .where(call_filter(f))
        .group_by(day, c.project)
        .order_by(day, c.project)
    )
    return await fetch(store, q)


async def spend_where(store: LedgerStore, since: float, until: float,
                      match: dict[str, str]) -> float:
    """Spend in [since, until) of calls whose columns equal `match` (a budget's scope)."""
    conds = [c.ts >= since, c.ts < until]
    for k, v in match.items():
        conds.append(c[k] == v)
    rows = await fetch(store, select(func.sum(c.cost_usd)).where(and_(*conds)))
    return float(rows[0][0] or 0.0)


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


async def session_rates(store: LedgerStore, since: float, until: float,
                        min_span: float) -> list[tuple[Any, ...]]:
    """(workflow_tag, tokens per hour) of sessions whose last call is in [since, until), from
    the sessions table: tokens / max(last - first call, `min_span`)."""
    s = SESSIONS.c
    q = (
        select(s.workflow_tag, s.tokens, s.created_ts, s.updated_ts)
        .where(s.updated_ts >= since, s.updated_ts < until, s.calls > 0)
    )
    out = []
    for tag, tokens, first, last in await fetch(store, q):
        out.append((tag, float(tokens) * 3600.0 / max(float(last) - float(first), min_span)))
    return out


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


async def spend_by_tag_model(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    """(workflow_tag, virtual_model, model, model_version, calls, input, output, cache_read,
    cache_write, cost) of served calls."""
    q = (
        select(c.workflow_tag, c.virtual_model, c.model, c.model_version, func.count(),
               cast(func.sum(c.input_tokens), BigInteger),
               cast(func.sum(c.output_tokens), BigInteger),
               cast(func.sum(c.cache_read_tokens), BigInteger),
               cast(func.sum(c.cache_write_tokens), BigInteger),
               func.sum(c.cost_usd))
        .where(call_filter(f), c.decision != "blocked")
        .group_by(c.workflow_tag, c.virtual_model, c.model, c.model_version)
    )
    return await fetch(store, q)


async def prompt_groups(store: LedgerStore, f: Filters,
                        models: list[str] | None = None) -> list[tuple[Any, ...]]:
    """(virtual_model, model, model_version, workflow_tag, prompt fingerprint, calls,
    sum input, min input, first ts) of calls served by their virtual model's own route
    (`allowed`: a fallback's model is not a version of the virtual model) with a prompt
    fingerprint; only `models` when given."""
    conds = [call_filter(f), c.decision == "allowed", c.prompt_sha256 != ""]
    if models is not None:
        conds.append(c.model.in_(models))
    q = (
        select(c.virtual_model, c.model, c.model_version, c.workflow_tag, c.prompt_sha256,
               func.count(), cast(func.sum(c.input_tokens), BigInteger),
               func.min(c.input_tokens), func.min(c.ts))
        .where(and_(*conds))
        .group_by(c.virtual_model, c.model, c.model_version, c.workflow_tag, c.prompt_sha256)
    )
    return await fetch(store, q)


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


async def session_aggregates(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    """Per session with calls in the range: (session_id, workflow_tag, team, calls, tokens,
    cost, input, cache_read, first ts, last ts, budget hits, rate-limit hits)."""
    budget = func.sum(case((c.error_code == "budget_exceeded", 1),
                           (c.fallback_reason.like("budget%"), 1), else_=0))
    rate = func.sum(case((c.error_code.in_(RATE_LIMIT_CODES), 1), else_=0))
    q = (
        select(c.session_id, func.max(c.workflow_tag), func.max(c.team), func.count(),
               cast(func.sum(TOKENS), BigInteger), func.sum(c.cost_usd),
               cast(func.sum(c.input_tokens), BigInteger),
               cast(func.sum(c.cache_read_tokens), BigInteger),
               func.min(c.ts), func.max(c.ts), budget, rate)
        .where(call_filter(f), c.session_id.is_not(None))
        .group_by(c.session_id)
    )
    return await fetch(store, q)


async def session_retry_tokens(store: LedgerStore, f: Filters) -> dict[str, int]:
    """Tokens of calls repeating a prompt already sent in their session (each repeated
    fingerprint's cheapest call counted as the original)."""
    inner = (
        select(c.session_id.label("sid"), func.count().label("n"),
               func.sum(TOKENS).label("tok"), func.min(TOKENS).label("least"))
        .where(call_filter(f), c.session_id.is_not(None), c.prompt_sha256 != "")
        .group_by(c.session_id, c.prompt_sha256)
        .subquery()
    )
    q = (
        select(inner.c.sid, cast(func.sum(inner.c.tok - inner.c.least), BigInteger))
        .where(inner.c.n > 1)
        .group_by(inner.c.sid)
    )
    return {sid: int(n or 0) for sid, n in await fetch(store, q)}


async def session_guardrail_blocks(store: LedgerStore, f: Filters) -> dict[str, int]:
    e = GUARDRAIL_EVENTS.c
    q = (
        select(e.session_id, func.count())
        .where(e.ts >= f.since, e.ts < f.until, e.action == "blocked", e.session_id.is_not(None))
        .group_by(e.session_id)
    )
    return {sid: int(n) for sid, n in await fetch(store, q)}


async def outcomes_in_range(store: LedgerStore, f: Filters) -> list[tuple[Any, ...]]:
    """(event_id, session_id, kind, source, url, ts, pass_rate) of outcomes at or after `since`
    (an outcome lands after the session that produced it, possibly after `until`)."""
    o = OUTCOMES.c
    q = (
        select(o.event_id, o.session_id, o.kind, o.source, o.url, o.ts, o.pass_rate)
        .where(o.ts >= f.since, o.session_id != "")
        .order_by(o.ts, o.event_id, o.session_id)
    )
    return await fetch(store, q)
