"""Panel 2's budget forecast mid-window: spend so far in the budget's current calendar window,
extrapolated linearly to the window's end (a range ending at midnight only checks forecast =
spent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.config_source import load_config_dir
from controlroom.model import Filters
from controlroom.panels import compute_panels
from examples.control_room_traffic import generate, write_traffic
from ledger.store import LedgerStore
from tests.controlroom.test_panels import close, table

END = 1_764_460_800.0  # midnight UTC
CONFIG = load_config_dir(Path(__file__).resolve().parents[2] / "examples" / "config")


@pytest.mark.asyncio
@pytest.mark.parametrize("hours_into_day", [10, 15.5])
async def test_the_daily_budget_is_forecast_to_the_end_of_its_day(
        tmp_path: Path, hours_into_day: float) -> None:
    traffic = generate(days=2, seed=5, end=END, sessions_per_day=40)
    until = END - 86400 + hours_into_day * 3600  # mid-way through the last day
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        await write_traffic(store, (("call", r) for r in traffic.calls))
        (panel,) = await compute_panels(store, Filters(END - 2 * 86400, until), [2],
                                        config=CONFIG)
    finally:
        await store.close()
    day_start = END - 86400
    spent = sum(r["cost_usd"] for r in traffic.calls
                if r["project"] == "UNTAGGED" and day_start <= r["ts"] < until)
    assert spent > 0
    row = {r["budget"]: r for r in table(panel, "Budgets")}["untagged-daily"]
    assert close(row["spent_usd"], spent, 1e-3)
    forecast = spent * 24 / hours_into_day
    assert close(row["forecast_usd"], forecast, 1e-3)
    assert close(row["forecast_pct"], 100 * forecast / 50.0, 1e-2)
    assert close(row["used_pct"], 100 * spent / 50.0, 1e-2)


@pytest.mark.asyncio
async def test_a_sub_cent_ceiling_reads_as_configured_not_zero(tmp_path: Path) -> None:
    # The sample's demo-budget-daily ceiling is $0.0001: panel 2 showed ceiling_usd 0 and
    # "forecast at 3373% of its $0 daily ceiling".
    traffic = generate(days=1, seed=5, end=END, sessions_per_day=10)
    for r in traffic.calls[:3]:
        r["project"] = "demo-budget"
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        await write_traffic(store, (("call", r) for r in traffic.calls))
        (panel,) = await compute_panels(store, Filters(END - 86400, END), [2], config=CONFIG)
    finally:
        await store.close()
    row = {r["budget"]: r for r in table(panel, "Budgets")}["demo-budget-daily"]
    assert row["ceiling_usd"] == 0.0001 and row["spent_usd"] > 0.0001
    (review,) = [a for a in panel.actions if a.target == "demo-budget-daily"]
    assert "of its $0.0001 daily ceiling" in review.detail
    untagged = [a for a in panel.actions if a.target == "untagged-daily"]
    assert all("$50.00 daily ceiling" in a.detail for a in untagged)
