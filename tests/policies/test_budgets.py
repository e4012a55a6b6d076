"""Budgets: exact ceilings, calendar-window keys, and alert thresholds that fire once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from policies.budgets import budget_statuses, crossed_alerts, window_key_label
from policies.config.models import Budget
from policies.identity import Identity


def ts(y: int, mo: int, d: int, h: int = 0) -> float:
    return datetime(y, mo, d, h, tzinfo=UTC).timestamp()


NOW = ts(2026, 5, 20, 12)
MAY = ts(2026, 5, 1)
JUNE = ts(2026, 6, 1)


def ident(**kw: Any) -> Identity:
    base: dict[str, Any] = {
        "key_id": "k1",
        "user": "u_ada",
        "team": "search",
        "role": "developer",
        "subject_type": "user",
        "project": "platform-search",
    }
    base.update(kw)
    return Identity(**base)


def budget(**kw: Any) -> Budget:
    data: dict[str, Any] = {
        "id": "b",
        "scope": {"metadata": {"X-TFY-Project": "platform-search"}},
        "ceiling_usd": 100,
        "window": "monthly",
        "alerts": [{"at_pct": 80}, {"at_pct": 100}],
    }
    data.update(kw)
    return Budget.model_validate(data)


def status(b: Budget, spent: float) -> Any:
    (st,) = budget_statuses([b], ident(), {(b.id, MAY): spent}, NOW)
    return st


# --- ceilings ------------------------------------------------------------------------------------


def test_spent_equal_to_the_ceiling_is_exceeded() -> None:
    st = status(budget(), 100.0)
    assert st.exceeded
    assert st.remaining == 0.0
    assert st.used_pct == 100.0


def test_spent_just_below_the_ceiling_is_not_exceeded() -> None:
    st = status(budget(), 99.9999)
    assert not st.exceeded
    assert abs(st.remaining - 0.0001) < 1e-9


def test_overspend_leaves_zero_remaining_not_negative() -> None:
    st = status(budget(), 130.0)
    assert st.exceeded and st.remaining == 0.0 and st.used_pct == 130.0


# --- windows and scope ---------------------------------------------------------------------------


def test_status_is_keyed_on_budget_id_and_calendar_window_start() -> None:
    st = status(budget(), 10.0)
    assert st.key == ("b", MAY)
    assert st.window_end == JUNE
    assert window_key_label(st.key) == f"b@{int(MAY)}"


def test_last_months_spend_does_not_count_this_month() -> None:
    b = budget()
    (st,) = budget_statuses([b], ident(), {("b", ts(2026, 4, 1)): 500.0}, NOW)
    assert st.spent == 0.0 and not st.exceeded


def test_daily_and_weekly_budgets_use_their_own_windows() -> None:
    daily, weekly = budget(id="d", window="daily"), budget(id="w", window="weekly")
    d, w = budget_statuses([daily, weekly], ident(), {}, NOW)
    assert d.key == ("d", ts(2026, 5, 20)) and d.window_end == ts(2026, 5, 21)
    assert w.key == ("w", ts(2026, 5, 18)) and w.window_end == ts(2026, 5, 25)  # Mon..Mon


def test_budget_scoped_to_another_project_does_not_apply() -> None:
    b = budget(scope={"metadata": {"X-Governor-Project": "intern-sandbox"}})
    assert budget_statuses([b], ident(), {}, NOW) == []
    assert len(budget_statuses([b], ident(project="intern-sandbox"), {}, NOW)) == 1


def test_untagged_budget_catches_calls_without_a_project() -> None:
    b = budget(scope={"metadata": {"X-Governor-Project": "UNTAGGED"}}, window="daily")
    assert len(budget_statuses([b], ident(project="UNTAGGED"), {}, NOW)) == 1


def test_budget_scoped_by_team_and_tag() -> None:
    b = budget(scope={"metadata": {"X-TFY-Team": "search", "X-TFY-Workflow-Tag": "nightly"}})
    assert budget_statuses([b], ident(), {}, NOW) == []
    assert len(budget_statuses([b], ident(workflow_tag="nightly"), {}, NOW)) == 1


def test_unscoped_budget_applies_to_everyone() -> None:
    assert len(budget_statuses([budget(scope={})], ident(project="x"), {}, NOW)) == 1


# --- alerts --------------------------------------------------------------------------------------


def test_crossing_a_threshold_fires_its_alert() -> None:
    assert crossed_alerts(budget(), 70.0, 85.0) == [80]


def test_reaching_a_threshold_exactly_fires_it() -> None:
    assert crossed_alerts(budget(), 79.0, 80.0) == [80]
    assert crossed_alerts(budget(), 99.0, 100.0) == [100]


def test_a_threshold_already_reached_does_not_fire_again() -> None:
    b = budget()
    assert crossed_alerts(b, 80.0, 85.0) == []
    assert crossed_alerts(b, 85.0, 90.0) == []


def test_one_big_step_fires_every_threshold_it_crosses() -> None:
    assert crossed_alerts(budget(), 10.0, 150.0) == [80, 100]


def test_a_step_below_any_threshold_fires_nothing() -> None:
    assert crossed_alerts(budget(), 0.0, 79.99) == []


def test_successive_steps_fire_each_alert_exactly_once() -> None:
    b = budget(ceiling_usd=4000)
    fired: list[float] = []
    spent = 0.0
    for _ in range(50):
        before, spent = spent, spent + 100.0
        fired += crossed_alerts(b, before, spent)
    assert fired == [80, 100]


def test_alerts_above_one_hundred_percent_are_allowed() -> None:
    b = budget(alerts=[{"at_pct": 150}])
    assert crossed_alerts(b, 140.0, 151.0) == [150]


def test_selector_dims_are_the_identity_fields_the_budget_scopes_read() -> None:
    from policies.matching import selector_dims

    def budget_dims(budgets: list[Budget]) -> set[str]:
        return set().union(*(selector_dims(x.scope) for x in budgets))

    def b(**scope: object) -> Budget:
        return Budget.model_validate({"id": "b", "scope": scope, "ceiling_usd": 1,
                                      "window": "daily"})  # fmt: skip

    assert budget_dims([]) == set()
    scoped = [b(metadata={"X-TFY-Project": "p"}), b(subjects={"team": "t", "type": "user"}),
              b(keys=["k1"]), b(metadata={"X-Governor-Session-ID": "s"})]  # fmt: skip
    assert budget_dims(scoped) == {"project", "team", "key_id", "session_id"}
