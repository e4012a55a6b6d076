"""The alert hub's pure pieces."""

from __future__ import annotations


def test_a_workflow_loop_kills_evidence_names_its_baselines_source() -> None:
    from alerts.hub import loop_evidence
    from policies.loops import rate_reason, repeat_reason

    def rate(source: str) -> str:
        return rate_reason(400_000, 600, 100_000, source, 3.0, "tag", 7)

    assert loop_evidence(repeat_reason(5, 5)) == "repeat"
    assert loop_evidence(rate("observed")) == "trusted_baseline"
    assert loop_evidence(rate("configured")) == "trusted_baseline"
    assert loop_evidence(rate("default")) == "default_baseline"
