"""Circuit breaker transitions as pure functions over an immutable state.

`failure_threshold` failures within `window_seconds` open the circuit for `cooldown_seconds`;
then it is half-open: one probe call is let through, its success closes the circuit, its failure
opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from policies.config.models import CircuitBreakerConfig

BreakerPhase = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerState:
    failures: tuple[float, ...] = ()
    opened_at: float | None = None
    probing: bool = False


CLOSED = BreakerState()


def phase(state: BreakerState, cfg: CircuitBreakerConfig, now: float) -> BreakerPhase:
    if state.opened_at is None:
        return "closed"
    if now - state.opened_at < cfg.cooldown_seconds:
        return "open"
    return "half_open"


def allows(state: BreakerState, cfg: CircuitBreakerConfig, now: float) -> bool:
    p = phase(state, cfg, now)
    return p == "closed" or (p == "half_open" and not state.probing)


def on_attempt(state: BreakerState, cfg: CircuitBreakerConfig, now: float) -> BreakerState:
    """Mark the half-open probe as taken, so concurrent calls don't all probe at once."""
    if phase(state, cfg, now) == "half_open":
        return replace(state, probing=True)
    return state


def on_success(state: BreakerState) -> BreakerState:
    """A probe's success closes the circuit. While closed, a success forgets nothing: the
    threshold counts failures within the window, so a flapping upstream still trips it."""
    if state.opened_at is not None:
        # Only the half-open probe's success closes it; a late success of a call that started
        # before the circuit opened says nothing about the upstream now.
        return CLOSED if state.probing else state
    return state


def on_failure(state: BreakerState, cfg: CircuitBreakerConfig, now: float) -> BreakerState:
    if state.opened_at is not None:
        # A failed half-open probe (or a late failure while open) re-opens from now.
        return BreakerState(failures=(), opened_at=now, probing=False)
    recent = (*tuple(t for t in state.failures if now - t < cfg.window_seconds), now)
    if len(recent) >= cfg.failure_threshold:
        return BreakerState(failures=(), opened_at=now, probing=False)
    return BreakerState(failures=recent)
