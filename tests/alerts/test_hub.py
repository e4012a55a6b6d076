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


async def test_an_alertmanager_runaway_alert_is_confident_on_a_configured_baseline_only(
    tmp_path,
) -> None:
    """The Alertmanager path (no evidence label) judges like the detector: a rate above a
    baseline configured for the tag is trusted (the kill runs alone), the default is not, and
    a session repeating its prompt is confident whatever its tag."""
    import httpx

    from alerts.hub import AlertHub
    from policies.alerts import AlertRule
    from simulator.server import SimServer
    from tests.support.servers import EXAMPLES, InProcessProxy, make_config_dir

    settings = (EXAMPLES / "gateway.yaml").read_text().replace(
        "loop_baselines: {}", "loop_baselines: {vouched: 5000}")
    cfg = make_config_dir(tmp_path / "config", {"gateway.yaml": settings})
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
        try:
            assert p.gw is not None
            hub = AlertHub(p.gw, None, "unused")
            rule = AlertRule(name="runaway_agent", query="x")
            assert hub._confidence(rule, {"session_id": "s1", "workflow_tag": "vouched"})
            assert not hub._confidence(rule, {"session_id": "s2", "workflow_tag": "other"})
            assert not hub._confidence(rule, {"session_id": "s3"})
            async with httpx.AsyncClient(timeout=30) as c:
                for _ in range(5):  # the sample's repeat threshold
                    await c.post(p.base_url + "/v1/chat/completions", headers={
                        "Authorization": "Bearer gk-dev-developer",
                        "X-Governor-Session-ID": "s4"}, json={
                        "model": "support-cheap",
                        "messages": [{"role": "user", "content": "same again"}]})
            assert hub._confidence(rule, {"session_id": "s4", "workflow_tag": "other"})
        finally:
            await p.stop()
