"""Label values that someone other than the config chooses are bounded (`activities.metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from activities.metrics import MAX_CODE_CHARS, MAX_REFUSAL_CODES, Metrics


def test_upstream_refusal_codes_past_the_bound_are_other_and_governors_own_stay() -> None:
    """An upstream's error code is a refusal code of its choosing: 5,000 distinct ones make at
    most `MAX_REFUSAL_CODES` + 1 series, each cut to `MAX_CODE_CHARS`; one already seen keeps
    its own; Governor's own codes never take a slot, so one seen first after the flood still
    gets its own series (a dashboard on `budget_exceeded` must not see `other`)."""
    m = Metrics(CollectorRegistry())
    first = m.code("invalid_request_error", upstream=True)
    labels = {m.code(f"upstream_code_{i}", upstream=True) for i in range(5000)}
    assert m.code("invalid_request_error", upstream=True) == first == "invalid_request_error"
    assert len(labels) == MAX_REFUSAL_CODES  # 199 of the flood, then `other`
    assert "other" in labels
    assert m.code("budget_exceeded") == "budget_exceeded"  # after the flood: its own
    assert m.code("session_killed") == "session_killed"
    assert len(m.code("x" * 10_000, upstream=True)) <= MAX_CODE_CHARS
    for code in labels:
        m.child(m.refusals, code).inc()
    series = [s for f in m.registry.collect() if f.name == "governor_refusals"
              for s in f.samples if s.name == "governor_refusals_total"]  # fmt: skip
    assert len(series) == MAX_REFUSAL_CODES
