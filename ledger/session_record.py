"""One session's complete record in the ledger, read for the archive and the auditor's timeline.

`session_record(store, session_id)` returns a plain dict of sections, each a list of row dicts
(columns as in `ledger.models`), oldest first:

    session          [0..1]  the `sessions` row (totals, status, kind)
    owner            [0..1]  the `session_owners` row (key id, user, team; a grant digest)
    calls            [n]     every call row of the session, refusals included (`decision`
                             'blocked', with `error_code`)
    kills            [0..1]  the kill (or close: actor `governor:close`) record
    guardrail_events [n]     findings at each hook: detector, type, action, fingerprint; never
                             the matched value
    alerts           [n]     alert runs whose labels name the session
    runbook_steps    [n]     every step of those runs
    outcomes         [n]     rows of an `outcomes` table naming the session, where one exists
    config_versions  [n]     the `config_versions` rows the calls' `config_version` names,
                             where both exist

Tables another part of Governor adds later (`outcomes`, `config_versions`) are read when the
database has them and are empty sections otherwise. Also here: the `archived_sessions`
bookkeeping the archive job uses to find sessions that ended and are not archived yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy import and_, or_, select, text, update
from sqlalchemy import exc as sa_exc

from ledger.errors import LedgerError
from ledger.models import (
    ALERTS,
    ARCHIVED_SESSIONS,
    CALLS,
    GUARDRAIL_EVENTS,
    KILLS,
    RUNBOOK_STEPS,
    SESSION_OWNERS,
    SESSIONS,
)
from ledger.store import LedgerStore

SECTIONS = (
    "session",
    "owner",
    "calls",
    "kills",
    "guardrail_events",
    "alerts",
    "runbook_steps",
    "outcomes",
    "config_versions",
)
# Alert runs read per session: a session that raised more alerts than this is itself the story.
MAX_ALERT_RUNS = 1000


async def session_record(
    store: LedgerStore, session_id: str, *, with_calls: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Every ledger row about `session_id`, by section (see the module docstring). With
    `with_calls=False` the calls section is empty (read them page by page: `call_pages`)."""
    s = await store._fetch(select(SESSIONS).where(SESSIONS.c.session_id == session_id))
    owner = await store._fetch(
        select(SESSION_OWNERS).where(SESSION_OWNERS.c.session_id == session_id)
    )
    calls = await store._fetch(
        select(CALLS).where(CALLS.c.session_id == session_id).order_by(CALLS.c.ts, CALLS.c.call_id)
    ) if with_calls else []
    kills = await store._fetch(select(KILLS).where(KILLS.c.session_id == session_id))
    e = GUARDRAIL_EVENTS.c
    events = await store._fetch(
        select(GUARDRAIL_EVENTS)
        .where(e.session_id == session_id)
        .order_by(e.ts, e.call_id, e.hook, e.seq)
    )
    alerts = await alerts_naming(store, session_id)
    steps: list[dict[str, Any]] = []
    if alerts:
        r = RUNBOOK_STEPS.c
        steps = await store._fetch(
            select(RUNBOOK_STEPS)
            .where(r.run_id.in_([a["run_id"] for a in alerts]))
            .order_by(r.ts, r.run_id, r.step, r.id)
        )
    if with_calls:
        versions = sorted({str(c["config_version"]) for c in calls if c.get("config_version")})
    else:
        q = select(CALLS.c.config_version).where(
            CALLS.c.session_id == session_id, CALLS.c.config_version.is_not(None)).distinct()
        versions = sorted(str(r["config_version"]) for r in await store._fetch(q))
    return {
        "session": s,
        "owner": owner,
        "calls": calls,
        "kills": kills,
        "guardrail_events": events,
        "alerts": alerts,
        "runbook_steps": steps,
        "outcomes": await _optional(
            store,
            "SELECT * FROM outcomes WHERE session_id = :sid ORDER BY ts",
            {"sid": session_id},
        ),
        "config_versions": await _config_versions(store, versions),
    }


async def call_pages(
    store: LedgerStore, session_id: str, page: int = 2000
) -> AsyncIterator[list[dict[str, Any]]]:
    """The session's call rows in `session_record` order, `page` rows at a time (keyset
    pagination on (ts, call_id)): a session of any size without holding all of it."""
    c = CALLS.c
    after: tuple[float, str] | None = None
    while True:
        q = select(CALLS).where(c.session_id == session_id)
        if after is not None:
            q = q.where(or_(c.ts > after[0], and_(c.ts == after[0], c.call_id > after[1])))
        rows = await store._fetch(q.order_by(c.ts, c.call_id).limit(page))
        if not rows:
            return
        yield rows
        if len(rows) < page:
            return
        after = (rows[-1]["ts"], rows[-1]["call_id"])


async def alerts_naming(store: LedgerStore, session_id: str) -> list[dict[str, Any]]:
    """Alert runs whose `session_id` label is `session_id` (at most MAX_ALERT_RUNS)."""
    needle = orjson.dumps(session_id).decode()  # how the id appears inside the labels JSON
    a = ALERTS.c
    rows = await store._fetch(
        select(ALERTS)
        .where(a.labels.contains(needle, autoescape=True))
        .order_by(a.opened_ts, a.id)
        .limit(MAX_ALERT_RUNS)
    )
    out = []
    for row in rows:
        try:
            labels = orjson.loads(row["labels"] or "{}")
        except orjson.JSONDecodeError:
            continue
        if isinstance(labels, dict) and labels.get("session_id") == session_id:
            out.append(row)
    return out


async def _config_versions(store: LedgerStore, versions: list[str]) -> list[dict[str, Any]]:
    if not versions:
        return []
    names = ", ".join(f":v{i}" for i in range(len(versions)))
    return await _optional(
        store,
        f"SELECT * FROM config_versions WHERE version_id IN ({names}) ORDER BY ts",
        {f"v{i}": v for i, v in enumerate(versions)},
    )


async def _optional(store: LedgerStore, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a table this database may not have yet: [] where it does not."""
    table = sql.split(" FROM ", 1)[1].split()[0]
    if not await _has_table(store, table):
        return []
    async with store._connect(write=False) as conn:
        result = await conn.execute(text(sql), params)
        return [dict(m) for m in result.mappings().all()]


async def _has_table(store: LedgerStore, name: str) -> bool:
    def check(sync_conn: Any) -> bool:
        from sqlalchemy import inspect

        return bool(inspect(sync_conn).has_table(name))

    try:
        async with store._connect(write=False) as conn:
            return bool(await conn.run_sync(check))
    except (LedgerError, sa_exc.SQLAlchemyError):
        return False


# -- archive bookkeeping --------------------------------------------------------------------


async def sessions_to_archive(
    store: LedgerStore, now: float, idle_seconds: float, limit: int = 100
) -> list[str]:
    """Proxy sessions that ended (killed, closed) or have been idle `idle_seconds`, and are not
    archived yet or changed since they were; oldest first, at most `limit`. Workflow sessions
    are archived by their workflow's own activity, with their history, and are not listed."""
    s, a = SESSIONS.c, ARCHIVED_SESSIONS.c
    ended = or_(s.status.in_(("killed", "closed")), s.updated_ts <= now - idle_seconds)
    q = (
        select(s.session_id)
        .select_from(SESSIONS.outerjoin(ARCHIVED_SESSIONS, a.session_id == s.session_id))
        .where(
            s.kind != "workflow",
            ended,
            or_(a.session_id.is_(None), and_(a.erased.is_(False),
                                             s.updated_ts > a.seen_updated_ts)),
        )
        .order_by(s.updated_ts, s.session_id)
        .limit(limit)
    )
    return [r["session_id"] for r in await store._fetch(q)]


async def sessions_with_late_rows(store: LedgerStore, limit: int = 100) -> list[str]:
    """Archived (not erased) sessions with an outcome received after their last archive: the
    late rows that become a linked object. [] where the ledger has no outcomes table."""
    if not await _has_table(store, "outcomes"):
        return []
    sql = (
        "SELECT DISTINCT o.session_id FROM outcomes o JOIN archived_sessions a"
        " ON a.session_id = o.session_id"
        " WHERE a.erased = :no AND o.received_ts > a.archived_ts"
        " ORDER BY o.session_id LIMIT :n"
    )
    try:
        async with store._connect(write=False) as conn:
            result = await conn.execute(text(sql), {"no": False, "n": limit})
            return [str(r[0]) for r in result.all()]
    except LedgerError as exc:  # an outcomes table of another shape: nothing to add
        if "received_ts" in str(exc):
            return []
        raise


async def archive_state(store: LedgerStore, session_id: str) -> dict[str, Any] | None:
    rows = await store._fetch(
        select(ARCHIVED_SESSIONS).where(ARCHIVED_SESSIONS.c.session_id == session_id)
    )
    return rows[0] if rows else None


async def mark_archived(
    store: LedgerStore,
    session_id: str,
    *,
    archived_ts: float,
    seen_updated_ts: float,
    index_version: int,
    objects: int,
    erased: bool = False,
) -> None:
    """Record where `session_id`'s archive stands (insert or replace)."""
    values = {
        "archived_ts": archived_ts,
        "seen_updated_ts": seen_updated_ts,
        "index_version": index_version,
        "objects": objects,
        "erased": erased,
    }
    ins = store._insert(ARCHIVED_SESSIONS).values(session_id=session_id, **values)
    q = ins.on_conflict_do_update(index_elements=["session_id"], set_=values)
    async with store._connect(write=True) as conn:
        await conn.execute(q)


async def retention_candidates(store: LedgerStore, cutoff: float, limit: int = 100) -> list[str]:
    """Archived, not erased sessions whose last archive (`archived_ts`) is before `cutoff`
    (epoch seconds), oldest first, at most `limit`: what a retention pass deletes. One indexed
    range read; the archive itself is not listed."""
    a = ARCHIVED_SESSIONS.c
    q = (
        select(a.session_id)
        .where(a.erased.is_(False), a.archived_ts < cutoff)
        .order_by(a.archived_ts, a.session_id)
        .limit(limit)
    )
    return [r["session_id"] for r in await store._fetch(q)]


async def claim_for_deletion(store: LedgerStore, session_id: str, cutoff: float) -> bool:
    """Mark `session_id` erased if it still is a retention candidate; True for the one replica
    whose update took it (the others skip it), False when another got there first or the
    session was archived again since."""
    a = ARCHIVED_SESSIONS.c
    q = (
        update(ARCHIVED_SESSIONS)
        .where(a.session_id == session_id, a.erased.is_(False), a.archived_ts < cutoff)
        .values(erased=True)
    )
    async with store._connect(write=True) as conn:
        return (await conn.execute(q)).rowcount == 1


async def release_claim(store: LedgerStore, session_id: str) -> None:
    """Undo `claim_for_deletion` after a deletion that failed (the next pass retries it)."""
    a = ARCHIVED_SESSIONS.c
    async with store._connect(write=True) as conn:
        await conn.execute(
            update(ARCHIVED_SESSIONS).where(a.session_id == session_id).values(erased=False)
        )


async def set_history_due(store: LedgerStore, session_id: str, ts: float | None) -> None:
    """Record (epoch seconds) or clear (None) that `session_id`'s final history is due."""
    a = ARCHIVED_SESSIONS.c
    async with store._connect(write=True) as conn:
        await conn.execute(update(ARCHIVED_SESSIONS).where(a.session_id == session_id)
                           .values(history_due_ts=ts))


async def histories_due(store: LedgerStore, limit: int = 100) -> list[str]:
    """Workflow sessions whose final history is still to be archived, oldest first."""
    a = ARCHIVED_SESSIONS.c
    q = (
        select(a.session_id)
        .where(a.history_due_ts.is_not(None), a.erased.is_(False))
        .order_by(a.history_due_ts, a.session_id)
        .limit(limit)
    )
    return [r["session_id"] for r in await store._fetch(q)]
