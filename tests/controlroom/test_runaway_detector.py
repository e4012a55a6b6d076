"""Panel 3 finds the generator's looping session whatever the seed and traffic size, because a
tag's p95 baseline comes from sessions that were over before the live window: the session
being judged never sets its own bar (with it in, a small tag's p95 was the loop itself and the
loop passed unflagged at some sizes)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from activities.config_source import load_config_dir
from controlroom.model import Filters
from controlroom.panels import compute_panels
from examples.control_room_traffic import LOOP_SESSION, generate, write_traffic
from ledger.store import LedgerStore
from policies.loops import p95
from tests.controlroom.test_panels import session_rates, table, tokens

END = 1_764_460_800.0
CONFIG = load_config_dir(Path(__file__).resolve().parents[2] / "examples" / "config")
WINDOW = CONFIG.settings.loop_window_seconds


@pytest.mark.asyncio
@pytest.mark.parametrize(("seed", "days", "per_day"),
                         [(3, 2, 10), (7, 3, 40), (11, 3, 40), (19, 2, 80), (23, 4, 25)])
async def test_the_looping_session_is_the_one_runaway_across_seeds_and_sizes(
        tmp_path: Path, seed: int, days: int, per_day: int) -> None:
    traffic = generate(days=days, seed=seed, end=END, sessions_per_day=per_day)
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        await write_traffic(store, (("call", r) for r in traffic.calls))
        (panel,) = await compute_panels(store, Filters(END - days * 86400, END), [3],
                                        config=CONFIG)
    finally:
        await store.close()
    rows = {r["session_id"]: r for r in table(panel, "Live sessions")}
    assert {sid for sid, r in rows.items() if r["runaway"]} == {LOOP_SESSION}
    assert [(a.kind, a.target) for a in panel.actions] == [("kill_session", LOOP_SESSION)]
    # the loop's bar, recomputed without it: sessions whose last call is before the window
    last: dict[str, float] = defaultdict(float)
    for r in traffic.calls:
        last[r["session_id"]] = max(last[r["session_id"]], r["ts"])
    tag = rows[LOOP_SESSION]["workflow_tag"]
    before = [rate for sid, (t, rate) in session_rates(traffic.calls, WINDOW).items()
              if t == tag and last[sid] < END - WINDOW]
    assert LOOP_SESSION not in {sid for sid in last if last[sid] < END - WINDOW}
    if len(before) >= CONFIG.settings.loop_min_sessions:
        want = p95(before)
        assert rows[LOOP_SESSION]["baseline_source"] != "default"
    else:
        want = CONFIG.settings.loop_default_baseline_tokens_per_hour
    assert abs(rows[LOOP_SESSION]["p95_baseline"] - want) <= 0.11 + 1e-6 * want
    live = sum(tokens(r) for r in traffic.calls
               if r["session_id"] == LOOP_SESSION and r["ts"] >= END - WINDOW)
    assert rows[LOOP_SESSION]["tokens_in_window"] == live
