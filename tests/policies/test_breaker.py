"""Circuit breaker transitions: open on a burst of failures, one probe when half-open."""

from __future__ import annotations

from policies.breaker import CLOSED, BreakerState, allows, on_attempt, on_failure, on_success, phase
from policies.config.models import CircuitBreakerConfig

CFG = CircuitBreakerConfig(failure_threshold=3, window_seconds=60, cooldown_seconds=30)


def fail_at(*times: float, state: BreakerState = CLOSED) -> BreakerState:
    for t in times:
        state = on_failure(state, CFG, t)
    return state


def test_a_fresh_breaker_is_closed_and_allows_calls() -> None:
    assert phase(CLOSED, CFG, 0) == "closed"
    assert allows(CLOSED, CFG, 0)


def test_threshold_failures_within_the_window_open_it() -> None:
    s = fail_at(100, 110)
    assert phase(s, CFG, 110) == "closed"
    s = fail_at(159, state=s)
    assert phase(s, CFG, 159) == "open"
    assert not allows(s, CFG, 159)
    assert s.opened_at == 159


def test_failures_spread_beyond_the_window_do_not_open_it() -> None:
    s = fail_at(0, 50, 100, 150, 200)
    assert phase(s, CFG, 200) == "closed"
    assert allows(s, CFG, 200)
    assert len(s.failures) == 2  # old failures are forgotten


def test_a_failure_exactly_window_seconds_old_no_longer_counts() -> None:
    assert phase(fail_at(0, 30, 60), CFG, 60) == "closed"
    assert phase(fail_at(0, 30, 59.999), CFG, 60) == "open"


def test_open_turns_half_open_after_exactly_the_cooldown() -> None:
    s = fail_at(0, 1, 2)
    assert phase(s, CFG, 31.999) == "open"
    assert not allows(s, CFG, 31.999)
    assert phase(s, CFG, 32) == "half_open"
    assert allows(s, CFG, 32)


def test_half_open_lets_only_one_probe_through() -> None:
    s = fail_at(0, 1, 2)
    assert allows(s, CFG, 40)
    probing = on_attempt(s, CFG, 40)
    assert probing.probing
    assert not allows(probing, CFG, 40)
    assert not allows(probing, CFG, 400)  # still waiting for the probe's outcome


def test_probe_success_closes_the_circuit() -> None:
    probing = on_attempt(fail_at(0, 1, 2), CFG, 40)
    s = on_success(probing)
    assert s == CLOSED
    assert phase(s, CFG, 41) == "closed" and allows(s, CFG, 41)


def test_probe_failure_reopens_for_a_full_cooldown_from_now() -> None:
    probing = on_attempt(fail_at(0, 1, 2), CFG, 40)
    s = on_failure(probing, CFG, 41)
    assert s.opened_at == 41 and not s.probing
    assert phase(s, CFG, 70.9) == "open"
    assert phase(s, CFG, 71) == "half_open"
    assert allows(s, CFG, 71)


def test_reopened_circuit_needs_only_one_failure_not_a_new_threshold() -> None:
    s = fail_at(0, 1, 2)
    s = on_failure(on_attempt(s, CFG, 32), CFG, 33)
    assert phase(s, CFG, 33) == "open"


def test_on_attempt_while_closed_or_open_changes_nothing() -> None:
    assert on_attempt(CLOSED, CFG, 5) == CLOSED
    s = fail_at(0, 1, 2)
    assert on_attempt(s, CFG, 10) == s


def test_success_while_closed_and_clean_keeps_the_same_state() -> None:
    assert on_success(CLOSED) is CLOSED


def test_a_failure_threshold_of_one_opens_on_the_first_failure() -> None:
    cfg = CircuitBreakerConfig(failure_threshold=1, window_seconds=10, cooldown_seconds=5)
    assert phase(on_failure(CLOSED, cfg, 0), cfg, 0) == "open"


def test_failures_within_the_window_open_it_even_with_successes_between() -> None:
    s = CLOSED
    for t in (0, 10, 20):
        s = on_failure(s, CFG, t)
        s = on_success(s)  # a flapping upstream: every other call fails
    assert phase(s, CFG, 20) == "open"
