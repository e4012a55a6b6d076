"""`audit verify`'s lookup of each row's latest link is one statement over the whole chain
(`audit.verify._build_latest`): on a large PostgreSQL ledger it takes seconds (~9-13 s for
1.5M calls, plus ~5 s for its index, measured loaded), so it runs under its own timeout, not
the connection's 30 s command timeout that every other ledger statement keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

import audit.verify as verify_mod
import ledger.store
from tests.audit.test_audit_chain_verify import populate
from tests.ledger.ledger_testdb import ledger_target
from tests.support.pg import require_pg


async def test_the_latest_link_lookup_outlasts_the_connections_command_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_pg()
    async with ledger_target("postgresql", tmp_path) as t:
        store = await t.open()
        await populate(store, tmp_path / "j")
        await store.close()
        # every statement of this store must answer within 1 s; the lookup's build takes 2.5
        monkeypatch.setattr(ledger.store, "COMMAND_TIMEOUT_S", 1.0)
        slow = verify_mod._EXPANDED["postgresql"] + (
            " UNION ALL SELECT NULL, NULL, CAST(0 AS BIGINT) FROM pg_sleep(2.5)")
        monkeypatch.setitem(verify_mod._EXPANDED, "postgresql", slow)
        store = await t.open()
        try:
            report = await verify_mod.verify(store)
            assert report.ok and report.rows >= 19, list(report.lines())
        finally:
            await store.close()
