"""Rate limits: exact ceilings, scopes, and fixed windows keyed by their start."""

from __future__ import annotations

from typing import Any

import pytest

from policies.config.models import RateLimitRule
from policies.identity import Identity
from policies.ratelimits import applicable_keys, check_rate_limits, scope_value

HOUR_START = 1_800_000_000 - (1_800_000_000 % 3600)  # an epoch-aligned hour
NOW = HOUR_START + 600.0


def ident(**kw: str | None) -> Identity:
    base: dict[str, Any] = {
        "key_id": "k1",
        "user": "u_ada",
        "team": "search",
        "role": "developer",
        "subject_type": "user",
        "project": "platform-search",
        "session_id": "sess-1",
        "workflow_tag": "classify-intent",
    }
    base.update(kw)
    return Identity(**base)


def rule(**kw: Any) -> RateLimitRule:
    data: dict[str, Any] = {"id": "r", "limit": {"requests": 3, "window": "1h"}}
    data.update(kw)
    return RateLimitRule.model_validate(data)


def breaches_for(r: RateLimitRule, req: int, tok: int, est: int = 0, now: float = NOW) -> list[Any]:
    keyed = applicable_keys([r], ident(), "intent-fast", now)
    assert len(keyed) == 1
    key = keyed[0][1]
    return check_rate_limits(keyed, {key: [req, tok]}, now, est)


# --- exact ceilings ------------------------------------------------------------------------------


def test_the_nth_request_is_allowed_and_the_next_is_refused() -> None:
    r = rule(limit={"requests": 3, "window": "1h"})
    assert breaches_for(r, req=2, tok=0) == []  # this is request 3 of 3
    (b,) = breaches_for(r, req=3, tok=0)  # this would be request 4
    assert (b.what, b.used, b.limit) == ("requests", 3, 3)


def test_a_limit_of_one_allows_exactly_one_request() -> None:
    r = rule(limit={"requests": 1, "window": "1m"})
    assert breaches_for(r, req=0, tok=0) == []
    assert len(breaches_for(r, req=1, tok=0)) == 1


def test_tokens_used_plus_estimate_exactly_at_the_limit_is_allowed() -> None:
    r = rule(limit={"tokens": 1000, "window": "1h"})
    assert breaches_for(r, req=50, tok=900, est=100) == []


def test_one_token_over_the_limit_is_refused() -> None:
    r = rule(limit={"tokens": 1000, "window": "1h"})
    (b,) = breaches_for(r, req=50, tok=900, est=101)
    assert (b.what, b.used, b.limit) == ("tokens", 900, 1000)


def test_a_window_already_at_its_token_limit_refuses_even_a_zero_estimate() -> None:
    r = rule(limit={"tokens": 1000, "window": "1h"})
    assert len(breaches_for(r, req=1, tok=1000, est=0)) == 1
    assert len(breaches_for(r, req=1, tok=1200, est=0)) == 1  # overshoot by a call's output


def test_a_rule_with_both_limits_reports_requests_first_and_once() -> None:
    r = rule(limit={"requests": 2, "tokens": 10, "window": "1h"})
    (b,) = breaches_for(r, req=2, tok=50, est=5)
    assert b.what == "requests"
    (b,) = breaches_for(r, req=1, tok=8, est=5)
    assert b.what == "tokens"


def test_retry_after_is_the_time_to_the_window_end() -> None:
    (b,) = breaches_for(rule(), req=3, tok=0, now=HOUR_START + 600)
    assert b.retry_after == 3000


def test_every_breached_rule_is_reported_in_rule_order() -> None:
    rules = [
        rule(id="a", limit={"requests": 1, "window": "1h"}),
        rule(id="ok", limit={"requests": 100, "window": "1h"}),
        rule(id="b", limit={"tokens": 10, "window": "1m"}),
    ]
    keyed = applicable_keys(rules, ident(), "m", NOW)
    counts = {k: [5, 50] for _, k, _ in keyed}
    assert [b.rule.id for b in check_rate_limits(keyed, counts, NOW, 1)] == ["a", "b"]


def test_unknown_counters_start_at_zero() -> None:
    keyed = applicable_keys([rule(limit={"requests": 1, "window": "1h"})], ident(), "m", NOW)
    assert check_rate_limits(keyed, {}, NOW, 0) == []


# --- windows -------------------------------------------------------------------------------------


def test_counter_key_is_rule_scope_value_and_epoch_aligned_window_start() -> None:
    ((_, key, end),) = applicable_keys([rule(scope="session")], ident(), "m", NOW)
    assert key == ("r", "sess-1", float(HOUR_START))
    assert end == HOUR_START + 3600


def test_a_call_at_exactly_the_window_end_counts_in_a_fresh_window() -> None:
    r = rule(limit={"requests": 1, "window": "1h"})
    ((_, old_key, end),) = applicable_keys([r], ident(), "m", NOW)
    keyed = applicable_keys([r], ident(), "m", end)
    assert keyed[0][1] == ("r", "*", end)
    assert check_rate_limits(keyed, {old_key: [1, 0]}, end, 0) == []
    just_before = applicable_keys([r], ident(), "m", end - 0.001)
    assert len(check_rate_limits(just_before, {old_key: [1, 0]}, end - 0.001, 0)) == 1


# --- scopes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "value"),
    [
        ("global", "*"),
        ("session", "sess-1"),
        ("user", "u_ada"),
        ("team", "search"),
        ("project", "platform-search"),
        ("workflow_tag", "classify-intent"),
        ("model", "intent-fast"),
        ("key", "k1"),
    ],
)
def test_each_scope_keys_the_counter_on_its_own_value(scope: str, value: str) -> None:
    r = rule(scope=scope)
    assert scope_value(r, ident(), "intent-fast") == value
    ((_, key, _),) = applicable_keys([r], ident(), "intent-fast", NOW)
    assert key[1] == value


def test_two_sessions_get_separate_counters() -> None:
    r = rule(scope="session")
    (a,) = applicable_keys([r], ident(session_id="s-a"), "m", NOW)
    (b,) = applicable_keys([r], ident(session_id="s-b"), "m", NOW)
    assert a[1] != b[1]


def test_a_call_without_a_session_is_not_governed_by_a_session_rule() -> None:
    assert applicable_keys([rule(scope="session")], ident(session_id=None), "m", NOW) == []


def test_a_call_without_a_workflow_tag_is_not_governed_by_a_tag_rule() -> None:
    assert applicable_keys([rule(scope="workflow_tag")], ident(workflow_tag=None), "m", NOW) == []


def test_global_and_model_rules_govern_calls_without_a_session() -> None:
    rules = [rule(id="g"), rule(id="m", scope="model")]
    assert len(applicable_keys(rules, ident(session_id=None), "m", NOW)) == 2


# --- when ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-TFY-Environment", "X-Governor-Environment"])
def test_when_metadata_limits_the_rule_to_matching_calls(header: str) -> None:
    r = rule(when={"metadata": {header: "production"}}, scope="session")
    assert len(applicable_keys([r], ident(environment="production"), "m", NOW)) == 1
    assert applicable_keys([r], ident(environment="staging"), "m", NOW) == []
    assert applicable_keys([r], ident(), "m", NOW) == []


def test_when_subjects_type_user_skips_service_accounts() -> None:
    r = rule(when={"subjects": {"type": "user"}}, scope="user")
    assert len(applicable_keys([r], ident(), "m", NOW)) == 1
    robot = ident(role="service", subject_type="service")
    assert applicable_keys([r], robot, "m", NOW) == []


def test_when_workflow_tag_in_tfy_spelling() -> None:
    r = rule(when={"metadata": {"X-TFY-Workflow-Tag": "classify-intent"}})
    assert len(applicable_keys([r], ident(), "m", NOW)) == 1
    assert applicable_keys([r], ident(workflow_tag="summarise"), "m", NOW) == []


def test_a_key_scoped_rule_keeps_one_counter_per_api_key() -> None:
    r = rule(scope="key")
    (a,) = applicable_keys([r], ident(key_id="k-a"), "m", NOW)
    (b,) = applicable_keys([r], ident(key_id="k-b"), "m", NOW)
    assert a[1][1] == "k-a" and b[1][1] == "k-b"


def test_when_keys_limits_the_rule_to_the_listed_api_keys() -> None:
    r = rule(when={"keys": ["k-batch"]}, scope="key")
    assert len(applicable_keys([r], ident(key_id="k-batch"), "m", NOW)) == 1
    assert applicable_keys([r], ident(key_id="k1"), "m", NOW) == []


# --- reservations --------------------------------------------------------------------------------


def _reserved(r: RateLimitRule, req: int, tok: int, in_req: int, in_tok: int,
              est: int) -> list[Any]:
    keyed = applicable_keys([r], ident(), "m", NOW)
    key = keyed[0][1]
    return check_rate_limits(keyed, {key: [req, tok]}, NOW, est, {key: [in_req, in_tok]})


def test_requests_in_flight_count_against_the_limit() -> None:
    r = rule(limit={"requests": 3, "window": "1h"})
    assert _reserved(r, req=1, tok=0, in_req=1, in_tok=0, est=0) == []
    (b,) = _reserved(r, req=1, tok=0, in_req=2, in_tok=0, est=0)
    assert (b.used, b.in_flight, b.certain) == (3, 2, False)


def test_reserved_tokens_plus_estimate_must_fit_the_token_limit() -> None:
    r = rule(limit={"tokens": 1000, "window": "1h"})
    assert _reserved(r, req=0, tok=400, in_req=1, in_tok=300, est=300) == []
    (b,) = _reserved(r, req=0, tok=400, in_req=1, in_tok=300, est=301)
    assert b.what == "tokens" and b.used == 700 and not b.certain
    (c,) = _reserved(r, req=0, tok=800, in_req=1, in_tok=100, est=201)
    assert c.certain  # settled 800 + 201 is over even with nothing in flight
