"""The GenAI metrics' own aggregation: the conventions' buckets (upper bound inclusive), no
output tokens for embeddings, `error.type` only on failed calls, series bounded."""

from __future__ import annotations

from activities import genai_metrics
from activities.genai_metrics import DURATION, TOKEN, GenAIMetrics


def _points(g: GenAIMetrics) -> dict[str, list]:
    (rm,) = g.collect().resource_metrics
    (sm,) = rm.scope_metrics
    return {m.name: list(m.data.data_points) for m in sm.metrics}


def test_measurements_land_in_the_conventions_buckets_with_their_attributes() -> None:
    g = GenAIMetrics()
    g.record("chat", "openai", "support-cheap", "gpt-4o-mini", 4, 5, 0.02)
    g.record("chat", "openai", "vm-failing", "gpt-4o-mini", 100, 0, 0.5, "upstream_error")
    g.record("embeddings", "openai", "embed", "text-embedding-3-small", 16, 0, 0.01)
    pts = _points(g)
    by = {(p.attributes["gen_ai.request.model"], p.attributes.get("gen_ai.token.type"),
           p.attributes.get("error.type")): p for p in pts[TOKEN] + pts[DURATION]}
    tin = by[("support-cheap", "input", None)]
    assert tin.count == 1 and tin.sum == 4 and tin.bucket_counts[1] == 1  # (1, 4]
    assert by[("support-cheap", "output", None)].bucket_counts[2] == 1  # 5 in (4, 16]
    assert by[("support-cheap", None, None)].bucket_counts[1] == 1  # 0.02 in (0.01, 0.02]
    failed = by[("vm-failing", None, "upstream_error")]
    assert failed.count == 1 and failed.attributes["gen_ai.operation.name"] == "chat"
    assert ("embed", "output", None) not in by and by[("embed", "input", None)].sum == 16
    for p in pts[TOKEN] + pts[DURATION]:
        assert not any("session" in k or "user" in k for k in p.attributes)


def test_attribute_sets_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(genai_metrics, "MAX_SERIES", 3)
    g = GenAIMetrics()
    for i in range(10):
        g.record("chat", "openai", f"vm-{i}", f"m-{i}", 1, 1, 0.1)
    pts = _points(g)[DURATION]
    assert len(pts) == 4  # three series, then everything else as `other`
    other = [p for p in pts if p.attributes["gen_ai.request.model"] == "other"]
    assert len(other) == 1 and other[0].count == 7


def test_provider_names_follow_the_conventions_well_known_values() -> None:
    g = GenAIMetrics()
    g.record("chat", "bedrock", "vm", "claude-sonnet-4-5", 1, 1, 0.1)
    g.record("chat", "vertex", "vm", "gemini-2.5-pro", 1, 1, 0.1)
    g.record("chat", "my-gateway", "vm", "m", 1, 1, 0.1)
    names = {p.attributes["gen_ai.provider.name"] for p in _points(g)[DURATION]}
    assert names == {"aws.bedrock", "gcp.vertex_ai", "my-gateway"}
