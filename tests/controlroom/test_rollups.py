"""Hourly rollups: stored hours and hours rolled on the fly give the same rows; a row that
arrives late for a rolled hour is rolled again; a range with mid-hour edges reads both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlroom import rollups
from controlroom.model import Filters
from examples.control_room_traffic import generate, write_traffic
from ledger.store import LedgerStore

END = 1_764_460_800.0


def approx(r: rollups.Rolled) -> dict[str, Any]:
    def norm(d: dict[Any, Any]) -> dict[Any, Any]:
        return {k: [round(x, 6) if isinstance(x, float) else x for x in v]
                if isinstance(v, list) else v for k, v in d.items()}

    per: dict[str, list[Any]] = {}  # stored sessions come summed per session
    for (_, sid), v in sorted(r.sessions.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        a = per.setdefault(sid, [*v[:3], 0, 0, 0.0, 0, 0, v[8], v[9], 0, 0, 0])
        for i in (3, 4, 5, 6, 7, 10, 11, 12):
            a[i] += v[i]
        a[8], a[9] = min(a[8], v[8]), max(a[9], v[9])
    return {"calls": norm(r.calls), "users": r.users, "sessions": norm(per),
            "prompts": norm(r.prompts)}


@pytest.mark.asyncio
async def test_stored_and_on_the_fly_rollups_agree_and_late_rows_are_rolled_again(
        tmp_path: Path) -> None:
    tr = generate(days=2, seed=3, end=END, sessions_per_day=30)
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        await write_traffic(store, (("call", r) for r in tr.calls))
        f = Filters(END - 2 * 86400 + 1234.5, END - 777.0, team="platform")
        live = await rollups.read(store, f)  # nothing rolled yet: all on the fly
        assert live.calls and live.users and live.sessions and live.prompts
        rolled = await rollups.refresh(store, now=END + 3600)
        assert rolled == len({int(r["ts"] // 3600) for r in tr.calls})
        assert await rollups.refresh(store, now=END + 3600) == 0  # nothing new
        stored = await rollups.read(store, f)
        assert approx(stored) == approx(live)
        # a late row for an hour already rolled (inside the recheck window): rolled again
        ts = max(r["ts"] for r in tr.calls if r["ts"] < END - 3600) + 0.001
        late = dict(tr.calls[-1], call_id="late-1", ts=ts, team="platform", cost_usd=1.25)
        await store.insert_calls([late])
        assert await rollups.refresh(store, now=END + 3600) == 1
        again = await rollups.read(store, f)
        cost = sum(v[6] for v in again.calls.values()) - sum(v[6] for v in stored.calls.values())
        assert abs(cost - 1.25) < 1e-9
        spent = await rollups.spend(store, END - 86400 + 10.0, END - 60.0, {"team": "platform"})
        want = sum(r["cost_usd"] for r in [*tr.calls, late]
                   if r["team"] == "platform" and END - 86400 + 10.0 <= r["ts"] < END - 60.0)
        assert abs(spent - want) < 1e-6
        # rebuild rolls everything again from `calls`
        assert await rollups.rebuild(store, now=END + 3600) == rolled
        assert approx(await rollups.read(store, f)) == approx(again)
    finally:
        await store.close()


def test_the_prompt_sample_cut_is_a_hex_prefix_of_the_fraction() -> None:
    assert rollups.sample_cut(0.5) == "8000"
    assert rollups.sample_cut(1 / 16) == "1000"
    assert rollups.sample_cut(0.0) == "0001"


@pytest.mark.asyncio
async def test_session_summary_counts_every_session_once_stored_or_on_the_fly(
        tmp_path: Path) -> None:
    tr = generate(days=2, seed=4, end=END, sessions_per_day=30)
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        await write_traffic(store, (("call", r) for r in tr.calls))
        await write_traffic(store, (("outcome", r) for r in tr.outcomes))
        f = Filters(END - 2 * 86400 + 1234.5, END - 777.0)
        live = await rollups.session_summary(store, f)  # all on the fly
        await rollups.refresh(store, now=END + 3600)
        mixed = await rollups.session_summary(store, f)
        want: dict[str, list[Any]] = {}
        seen: dict[str, str] = {}
        for r in tr.calls:
            if f.since <= r["ts"] < f.until:
                seen.setdefault(r["session_id"], r["workflow_tag"] or "")
        for sid, tag in seen.items():
            w = want.setdefault(tag, [0, 0.0])
            w[0] += 1
            w[1] += sum(r["cost_usd"] for r in tr.calls
                        if r["session_id"] == sid and f.since <= r["ts"] < f.until)
        for got in (live, mixed):
            assert {t: v[0] for t, v in got.per_tag.items()} == {t: v[0] for t, v in want.items()}
            assert all(abs(got.per_tag[t][1] - v[1]) < 1e-6 for t, v in want.items())
        with_outcome = {o["session_id"] for o in tr.outcomes} & set(seen)
        assert with_outcome <= set(mixed.rows)
        for sid in with_outcome:
            a, b = live.rows[sid], mixed.rows[sid]
            assert a[:5] == b[:5] and abs(a[5] - b[5]) < 1e-9 and a[6:] == b[6:]
    finally:
        await store.close()
