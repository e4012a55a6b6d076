"""Label values that someone other than the config chooses are bounded (`activities.metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from activities.metrics import MAX_REFUSAL_CODES, Metrics


def test_refusal_codes_past_the_bound_are_other() -> None:
    """An upstream's error code is a refusal code of its choosing: 5,000 distinct ones make at
    most `MAX_REFUSAL_CODES` + 1 series, and a code already seen keeps its own."""
    m = Metrics(CollectorRegistry())
    first = m.code("budget_exceeded")
    labels = {m.code(f"upstream_code_{i}") for i in range(5000)}
    assert first == "budget_exceeded" and m.code("budget_exceeded") == "budget_exceeded"
    assert len(labels) == MAX_REFUSAL_CODES  # 199 of the upstream's, then `other`
    assert "other" in labels
    for code in labels:
        m.child(m.refusals, code).inc()
    series = [s for f in m.registry.collect() if f.name == "governor_refusals"
              for s in f.samples if s.name == "governor_refusals_total"]  # fmt: skip
    assert len(series) == MAX_REFUSAL_CODES
