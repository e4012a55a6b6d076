"""Owners bound while the ledger is down are bounded (issue 9: memory is bounded by
configuration, not by callers): a new session id per call during a real PostgreSQL outage holds
at most the owner cache's cap of provisional claims; past it a new session is refused 503
`ledger_unavailable` (retry), never bound and then forgotten, so every session still belongs
to its first key."""

from __future__ import annotations

import asyncpg
import pytest

from activities.session_owners import SessionOwners
from ledger.session_store import session_owner
from ledger.store import LedgerStore
from policies.identity import Identity
from policies.refusals import Refusal
from tests.support.pg import PG_URL, fresh_database

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.postgres]

CAP = 20


def ident(key: str, sid: str) -> Identity:
    return Identity(
        key_id=key,
        user=key,
        team="t",
        role="developer",
        subject_type="user",
        project="p",
        session_id=sid,
    )


async def test_provisional_owners_stay_under_the_cap_and_keep_their_owner(tmp_path):
    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        store = await LedgerStore.open(url)
        admin = await asyncpg.connect(PG_URL)
        try:
            owners = SessionOwners(store, cap=CAP)
            await owners.check(ident("k-a", "before"))  # claimed in the ledger
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )

            admitted, refused = [], []
            for i in range(2 * CAP):  # a new session id per call, all during the outage
                sid = f"out-{i}"
                try:
                    await owners.check(ident("k-a", sid))
                    admitted.append(sid)
                except Refusal as r:
                    assert (r.status, r.code) == (503, "ledger_unavailable"), r
                    assert r.retry_after
                    refused.append(sid)
                assert len(owners._provisional) <= CAP
            assert len(admitted) == CAP and len(refused) == CAP

            # Every admitted session is still k-a's: another key is refused on each, and its
            # owner is served, even after the owner cache churned past its cap.
            for i in range(3 * CAP):
                owners.remember(f"churn-{i}", "k-c")
            for sid in admitted:
                with pytest.raises(Refusal) as other:
                    await owners.check(ident("k-b", sid))
                assert other.value.status == 403 and other.value.code == "session_not_owned"
                await owners.check(ident("k-a", sid))
            # A refused session was bound to nobody: not taken by the next key to ask.
            with pytest.raises(Refusal) as again:
                await owners.check(ident("k-b", refused[0]))
            assert again.value.code == "ledger_unavailable"

            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await owners.flush_provisional()
            assert owners._provisional == {}
            for sid in admitted:
                rec = await session_owner(store, sid)
                assert rec is not None and rec.key_id == "k-a"
            await owners.check(ident("k-b", refused[0]))  # the ledger is back: claimable
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            await store.close()
