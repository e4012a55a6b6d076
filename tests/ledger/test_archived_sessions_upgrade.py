"""A ledger made before retention and final histories used `archived_sessions` gains its
`history_due_ts` column and its two indexes at start, twice without error (SQLite and
PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from ledger.store import LedgerStore
from tests.support.pg import fresh_database

OLD_TABLE = (
    "CREATE TABLE archived_sessions (session_id VARCHAR PRIMARY KEY, archived_ts FLOAT NOT NULL,"
    " seen_updated_ts FLOAT NOT NULL, index_version INTEGER NOT NULL, objects INTEGER NOT NULL,"
    " erased BOOLEAN NOT NULL)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    async with fresh_database() as url:
        yield url


async def test_an_older_archived_sessions_table_gains_its_column_and_indexes(
    ledger_url: str,
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from ledger.store import _engine_url

    engine = create_async_engine(_engine_url(ledger_url)[0])
    async with engine.begin() as conn:
        await conn.execute(text(OLD_TABLE))
    await engine.dispose()
    for _ in range(2):
        store = await LedgerStore.open(ledger_url)
        await store.close()
    store = await LedgerStore.open(ledger_url)
    try:
        async with store._connect(write=False) as conn:
            def look(sync_conn: object) -> tuple[set[str], set[str]]:
                insp = inspect(sync_conn)
                cols = {c["name"] for c in insp.get_columns("archived_sessions")}
                idx = {i["name"] for i in insp.get_indexes("archived_sessions")}
                return cols, idx

            cols, idx = await conn.run_sync(look)
    finally:
        await store.close()
    assert "history_due_ts" in cols
    assert {"ix_archived_sessions_archived_ts", "ix_archived_sessions_history_due"} <= idx
