"""Alerts, runbook steps, silences, runtime overrides and notifications in the ledger database.

Every write is idempotent on a natural key (a run id, run+step+phase, an idempotency key), so a
retried Temporal activity or a second replica writes each fact once. Kept beside `LedgerStore`,
whose connection and dialect handling it reuses.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from ledger import transitions
from ledger.chain import PUT
from ledger.models import (
    ALERT_COUNTERS,
    ALERTS,
    BUDGET_ALERTS,
    NOTIFICATIONS,
    OVERRIDES,
    RUNBOOK_STEPS,
    SILENCES,
    AlertRecord,
    OverrideRecord,
    RunbookStepRecord,
    SilenceRecord,
)
from ledger.store import LedgerStore


def _json(v: Any) -> str:
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


async def open_alert(
    store: LedgerStore,
    *,
    run_id: str,
    alert_key: str,
    name: str,
    labels: dict[str, str],
    source: str,
    severity: str,
    ts: float,
) -> None:
    """The alert row of one runbook run (first call wins)."""
    q = (
        store._insert(ALERTS)
        .values(
            run_id=run_id,
            alert_key=alert_key,
            name=name,
            labels=_json(labels),
            sources=source,
            severity=severity,
            status="firing",
            opened_ts=ts,
            updated_ts=ts,
            repeats=0,
            summary="",
        )
        .on_conflict_do_nothing(index_elements=["run_id"])
        .returning(*ALERTS.c)
    )
    async with store._chained() as conn:
        row = (await conn.execute(q)).mappings().first()
        if row is not None:
            await store.chain_append(conn, [(ALERTS.name, dict(row), PUT, "")])


async def update_alert(store: LedgerStore, run_id: str, ts: float, **values: Any) -> None:
    allowed = {"status", "closed_ts", "repeats", "incident", "summary", "sources"}
    bad = set(values) - allowed
    if bad:
        raise ValueError(f"cannot update alert columns {sorted(bad)}")
    q = ALERTS.update().where(ALERTS.c.run_id == run_id).values(updated_ts=ts, **values)
    where = ALERTS.c.run_id == run_id
    async with store._chained() as conn:  # the new state is a new link: never a silent edit
        was = await transitions.current(conn, ALERTS, "status", where)
        if (await conn.execute(q)).rowcount:
            await store.chain_rows_where(conn, ALERTS, where)
            if "status" in values:
                await transitions.append(store, conn, ALERTS.name, {"run_id": run_id}, "status",
                                         was, values["status"], actor=None, ts=ts)  # fmt: skip


async def record_step(
    store: LedgerStore,
    *,
    run_id: str,
    alert_key: str,
    step: int,
    action: str,
    phase: str,
    actor: str,
    result: str,
    ts: float,
) -> bool:
    """True when this (run, step, phase) is new."""
    q = (
        store._insert(RUNBOOK_STEPS)
        .values(
            run_id=run_id,
            alert_key=alert_key,
            step=step,
            action=action,
            phase=phase,
            actor=actor,
            result=result[:2000],
            ts=ts,
        )
        .on_conflict_do_nothing(index_elements=["run_id", "step", "phase"])
        .returning(*RUNBOOK_STEPS.c)
    )
    async with store._chained() as conn:
        row = (await conn.execute(q)).mappings().first()
        if row is not None:
            await store.chain_append(conn, [(RUNBOOK_STEPS.name, dict(row), PUT, "")])
        return row is not None


async def list_alerts(
    store: LedgerStore, *, status: str | None = None, key: str | None = None, limit: int = 100
) -> list[AlertRecord]:
    q = select(ALERTS)
    if status is not None:
        q = q.where(ALERTS.c.status == status)
    if key is not None:
        q = q.where(ALERTS.c.alert_key == key)
    q = q.order_by(ALERTS.c.opened_ts.desc(), ALERTS.c.id.desc()).limit(limit)
    return [AlertRecord(**m) for m in await store._fetch(q)]


async def steps_of(store: LedgerStore, run_id: str) -> list[RunbookStepRecord]:
    q = (
        select(RUNBOOK_STEPS)
        .where(RUNBOOK_STEPS.c.run_id == run_id)
        .order_by(RUNBOOK_STEPS.c.ts, RUNBOOK_STEPS.c.id)
    )
    return [RunbookStepRecord(**m) for m in await store._fetch(q)]


# Silences -------------------------------------------------------------------------------------


async def add_silence(
    store: LedgerStore,
    *,
    rule: str | None,
    matchers: dict[str, str],
    expires_ts: float,
    actor: str,
    comment: str,
    ts: float,
) -> SilenceRecord:
    q = (
        store._insert(SILENCES)
        .values(
            rule=rule,
            matchers=_json(matchers),
            expires_ts=expires_ts,
            actor=actor,
            comment=comment,
            created_ts=ts,
        )
        .returning(*SILENCES.c)
    )
    async with store._chained() as conn:
        row = (await conn.execute(q)).mappings().one()
        await store.chain_append(conn, [(SILENCES.name, dict(row), PUT, "")])
    return SilenceRecord(**row)


async def active_silences(store: LedgerStore, now: float) -> list[SilenceRecord]:
    q = select(SILENCES).where(SILENCES.c.expires_ts > now).order_by(SILENCES.c.id)
    return [SilenceRecord(**m) for m in await store._fetch(q)]


# Overrides ------------------------------------------------------------------------------------


async def add_override(
    store: LedgerStore,
    *,
    idem_key: str,
    kind: str,
    target: str,
    value: str,
    actor: str,
    alert_key: str,
    yaml_diff: str,
    ts: float,
) -> tuple[OverrideRecord, bool]:
    """Add once per idempotency key; returns the record and whether it is new."""
    q = (
        store._insert(OVERRIDES)
        .values(
            idem_key=idem_key,
            kind=kind,
            target=target,
            value=value,
            actor=actor,
            alert_key=alert_key,
            yaml_diff=yaml_diff,
            created_ts=ts,
        )
        .on_conflict_do_nothing(index_elements=["idem_key"])
        .returning(*OVERRIDES.c)
    )
    async with store._chained() as conn:
        row = (await conn.execute(q)).mappings().first()
        created = row is not None
        if row is None:
            sel = select(OVERRIDES).where(OVERRIDES.c.idem_key == idem_key)
            row = (await conn.execute(sel)).mappings().one()
        else:
            await store.chain_append(conn, [(OVERRIDES.name, dict(row), PUT, "")])
    return OverrideRecord(**row), created


async def active_overrides(store: LedgerStore) -> list[OverrideRecord]:
    q = select(OVERRIDES).where(OVERRIDES.c.cleared_ts.is_(None)).order_by(OVERRIDES.c.id)
    return [OverrideRecord(**m) for m in await store._fetch(q)]


async def clear_overrides(
    store: LedgerStore, *, actor: str, ts: float, override_id: int | None = None
) -> int:
    """Clear one override (by id) or every active one; returns how many were cleared."""
    q = OVERRIDES.update().where(OVERRIDES.c.cleared_ts.is_(None))
    if override_id is not None:
        q = q.where(OVERRIDES.c.id == override_id)
    q = q.values(cleared_ts=ts, cleared_by=actor).returning(*OVERRIDES.c)
    async with store._chained() as conn:
        rows = [dict(m) for m in (await conn.execute(q)).mappings()]
        await store.chain_append(conn, [(OVERRIDES.name, r, PUT, "") for r in rows])
        for r in rows:
            await transitions.append(store, conn, OVERRIDES.name, r, "cleared_by", None, actor,
                                     actor=actor, ts=ts)  # fmt: skip
        return len(rows)


# Notifications --------------------------------------------------------------------------------


async def notification_sent(store: LedgerStore, idem_key: str) -> bool:
    q = select(NOTIFICATIONS.c.id).where(
        NOTIFICATIONS.c.idem_key == idem_key, NOTIFICATIONS.c.ok.is_(True)
    )
    return bool(await store._fetch(q))


async def notification_keys_since(store: LedgerStore, prefix: str, ts: float) -> set[str]:
    """Idempotency keys starting with `prefix` attempted (sent or not) since `ts`."""
    q = select(NOTIFICATIONS.c.idem_key).where(NOTIFICATIONS.c.ts >= ts,
                                               NOTIFICATIONS.c.idem_key.startswith(prefix))
    return {r["idem_key"] for r in await store._fetch(q)}


async def budget_alerts_since(store: LedgerStore, ts: float, limit: int = 1000) -> list[
    dict[str, Any]
]:
    """Budget thresholds crossed since `ts` (rows of `budget_alerts`), newest first."""
    q = select(BUDGET_ALERTS).where(BUDGET_ALERTS.c.ts >= ts).order_by(
        BUDGET_ALERTS.c.ts.desc()).limit(limit)
    return [dict(r) for r in await store._fetch(q)]


async def record_notification(
    store: LedgerStore, *, idem_key: str, target: str, ok: bool, detail: str, ts: float
) -> None:
    ins = store._insert(NOTIFICATIONS).values(
        idem_key=idem_key, target=target, ok=ok, detail=detail[:500], ts=ts
    )
    q = ins.on_conflict_do_update(
        index_elements=["idem_key"], set_={"ok": ins.excluded.ok, "detail": ins.excluded.detail,
                                           "ts": ins.excluded.ts}
    ).returning(*NOTIFICATIONS.c)
    async with store._chained() as conn:
        row = (await conn.execute(q)).mappings().one()
        await store.chain_append(conn, [(NOTIFICATIONS.name, dict(row), PUT, "")])


# Counters ------------------------------------------------------------------------------------


async def add_to_counter(store: LedgerStore, key: str, delta: float, expires_at: float) -> float:
    """Add `delta` to a shared running total (created at 0) and return the new total: one
    atomic upsert, so replicas adding at once each see a total that includes their share."""
    ins = store._insert(ALERT_COUNTERS).values(counter_key=key, total=delta,
                                               expires_at=expires_at)
    q = ins.on_conflict_do_update(
        index_elements=["counter_key"],
        set_={"total": ALERT_COUNTERS.c.total + ins.excluded.total,
              "expires_at": ins.excluded.expires_at},
    ).returning(ALERT_COUNTERS.c.total)
    async with store._connect(write=True) as conn:
        return float((await conn.execute(q)).scalar_one())


async def prune_counters(store: LedgerStore, before: float) -> None:
    q = ALERT_COUNTERS.delete().where(ALERT_COUNTERS.c.expires_at < before)
    async with store._connect(write=True) as conn:
        await conn.execute(q)
