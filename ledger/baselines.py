"""Loop-detector baselines: the p95 token rate per workflow tag, shared by every worker.

Kept in its own table (same SQLModel metadata as the ledger) because the scheduled baseline
workflow computes them on one worker while every worker's LLM activity reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, select
from sqlmodel import Field, SQLModel

from ledger.store import LedgerStore


class BaselineRecord(SQLModel, table=True):
    """p95 of per-session peak token rates (tokens/hour) of one workflow tag."""

    __tablename__ = "baselines"

    workflow_tag: str = Field(primary_key=True)
    p95_tokens_per_hour: float
    sessions: int
    window_seconds: float
    computed_ts: float


BASELINES: Table = BaselineRecord.__table__  # type: ignore[attr-defined]


async def ensure_baselines_table(store: LedgerStore) -> None:
    def create(sync_conn: Any) -> None:
        SQLModel.metadata.create_all(sync_conn, tables=[BASELINES])

    async with store._connect(write=True) as conn:
        await conn.run_sync(create)


async def save_baselines(store: LedgerStore, rows: Iterable[BaselineRecord]) -> int:
    """Replace the baselines of the given tags (upsert); returns how many were written."""
    batch = [r.model_dump() for r in rows]
    if not batch:
        return 0
    await ensure_baselines_table(store)
    ins = store._insert(BASELINES)
    stmt = ins.on_conflict_do_update(
        index_elements=["workflow_tag"],
        set_={
            c: ins.excluded[c]
            for c in ("p95_tokens_per_hour", "sessions", "window_seconds", "computed_ts")
        },
    )
    async with store._connect(write=True) as conn:
        await conn.execute(stmt, batch)
    return len(batch)


async def load_baselines(store: LedgerStore) -> dict[str, BaselineRecord]:
    await ensure_baselines_table(store)
    async with store._connect(write=False) as conn:
        result = await conn.execute(select(BASELINES))
        return {m["workflow_tag"]: BaselineRecord(**m) for m in result.mappings().all()}
