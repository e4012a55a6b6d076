"""Idempotency-Key records are bounded: count, lifetime and size of a kept answer."""

from __future__ import annotations

import pytest

from activities.idempotency import IdempotencyRecords, StoredResponse, TurnKeys
from policies.refusals import Refusal


def _done(rec: IdempotencyRecords, key: str, now: float, body: bytes = b"{}") -> None:
    slot = rec.begin("k1", key, b"body", now=now)
    rec.finish(slot, StoredResponse(200, [], body))


def test_at_most_max_records_are_kept_oldest_first_out() -> None:
    rec = IdempotencyRecords(max_records=100)
    for i in range(1_000):
        _done(rec, f"key-{i}", now=1000.0 + i)
    assert len(rec.records) == 100
    assert rec.begin("k1", "key-999", b"body", now=2000.0).replay is not None
    assert rec.begin("k1", "key-0", b"body", now=2000.0).replay is None  # evicted: runs again


def test_expired_records_are_swept_without_being_looked_up() -> None:
    rec = IdempotencyRecords(ttl=10)
    for i in range(50):
        _done(rec, f"old-{i}", now=0.0)
    _done(rec, "new", now=100.0)
    assert len(rec.records) == 1


def test_an_answer_larger_than_the_bound_is_not_kept_and_never_run_again() -> None:
    rec = IdempotencyRecords(max_response_bytes=1024)
    slot = rec.begin("k1", "big", b"body", now=0.0)
    rec.finish(slot, StoredResponse(200, [], chunks=[b"x" * 600, b"y" * 600]))
    assert all(r.response is None for r in rec.records.values())
    with pytest.raises(Refusal) as again:
        rec.begin("k1", "big", b"body", now=1.0)
    assert (again.value.status, again.value.code) == (409, "idempotency_key_already_used")


def test_records_are_keyed_by_a_fixed_length_hash_never_the_key() -> None:
    rec = IdempotencyRecords()
    long_key = "k" * 255
    rec.begin("k1", long_key, b"body", now=0.0)
    (stored,) = rec.records
    assert len(stored) == 64 and long_key not in stored


def test_session_turn_keys_are_bounded_hashed_and_checked_against_the_body() -> None:
    keys = TurnKeys(max_records=100)
    first = keys.update_id("k1", "s1", "key-x", "a" * 64, now=0.0)
    assert first == keys.update_id("k1", "s1", "key-x", "a" * 64, now=1.0)  # one update
    assert len(first) == len("turn-") + 40 + 1 + 16 and "key-x" not in first
    assert first != keys.update_id("k2", "s1", "key-x", "a" * 64, now=1.0)  # per API key
    assert first != keys.update_id("k1", "s2", "key-x", "a" * 64, now=1.0)  # per session
    with pytest.raises(Refusal) as other:
        keys.update_id("k1", "s1", "key-x", "b" * 64, now=2.0)
    assert (other.value.status, other.value.code) == (422, "idempotency_key_reused")
    keys.refused("k1", "s1", "key-x")  # a refusal keeps nothing: the retry is a new update
    retry = keys.update_id("k1", "s1", "key-x", "a" * 64, now=3.0)
    assert retry not in (first, keys.update_id("k1", "s1", "key-y", "a" * 64, now=3.0))
    for i in range(1_000):
        keys.update_id("k1", "s1", f"key-{i}", "a" * 64, now=10.0 + i)
    assert len(keys.records) == 100
    assert all(len(k) == 64 for k in keys.records)
