"""The router's retry policy: the provider's Retry-After (seconds, ms, HTTP date) is honoured when
the call can afford it, else the next target; otherwise exponential backoff with jitter."""

from __future__ import annotations

import time
from email.utils import formatdate

from activities.router import _retry_wait, retry_after_seconds
from policies.config.models import RoutingConfig

VM = RoutingConfig.model_validate({
    "type": "gateway-load-balancing-config", "name": "v", "retry_backoff_ms": 100,
    "retry_max_wait_ms": 3000,
    "rules": [{"id": "a", "target": {"provider": "p", "model": "m"}}]})


def test_retry_after_in_seconds_ms_and_http_date() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = retry_after_seconds({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert when is not None and 28 <= when <= 31
    assert retry_after_seconds({}) is None


def test_garbage_or_hostile_retry_after_is_ignored_or_bounded() -> None:
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "nan"}) is None
    assert retry_after_seconds({"retry-after": "-5"}) == 0.0
    assert retry_after_seconds({"retry-after": "1e30"}) == 86400.0


def test_a_retry_after_the_call_can_afford_is_waited_exactly() -> None:
    assert _retry_wait(VM, 0, 2.0) == 2.0


def test_a_retry_after_longer_than_the_call_can_wait_moves_to_the_next_target() -> None:
    assert _retry_wait(VM, 0, 7.0) is None


def test_without_a_hint_the_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    for n, base in ((0, 0.1), (1, 0.2), (2, 0.4)):
        waits = [_retry_wait(VM, n, None) for _ in range(200)]
        assert all(w is not None and base / 2 <= w <= base for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert all(w is not None and w <= 3.0 for w in (_retry_wait(VM, 10, None),))
