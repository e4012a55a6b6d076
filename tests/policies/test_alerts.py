"""Alert rules: the seed's file loads unchanged, steps validate with file/line/field errors,
deduplication keys ignore what only Prometheus sees, silences match, queries translate."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from activities.config_source import load_config_dir
from policies.alerts import (
    AlertRule,
    Silence,
    dedup_key,
    promql,
    query_threshold,
    rules_of,
    silenced,
)
from policies.config.yamlsource import ConfigErrors

REPO = Path(__file__).resolve().parents[2]
SEED = REPO.parent / "shared" / "seeds" / "yaml" / "tfy-ai-alerts.yaml"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    shutil.copytree(REPO / "examples" / "config", d)
    return d


def test_the_seed_alerts_file_loads_unchanged_beside_the_sample_config(config_dir: Path) -> None:
    if not SEED.exists():
        pytest.skip("seed file not present")
    (config_dir / "alerts.yaml").unlink()  # the sample's copy of the seed
    shutil.copy(SEED, config_dir / "tfy-ai-alerts.yaml")
    cfg = load_config_dir(config_dir)
    names = [r.name for r in rules_of(cfg.extra)]
    assert names[:4] == ["runaway_agent", "budget_near_ceiling", "secret_leaked",
                         "untagged_spend_spike"]
    runaway = rules_of(cfg.extra)[0]
    assert runaway.labels == {"severity": "critical", "team": "platform"}
    assert "PUT /gateway/sessions/{id}/kill" in runaway.runbook
    assert [s.action for s in runaway.runbook_steps] == ["notify", "kill_session", "open_incident"]
    assert runaway.runbook_steps[1].approval == "auto"


def test_the_runaway_kills_approval_is_configurable(config_dir: Path) -> None:
    """`auto` (the default) kills at once on confident evidence (a repeated prompt, a trusted
    baseline) and waits for a person otherwise; `required` always waits; `none` never does."""
    (config_dir / "alerts.yaml").write_text(textwrap.dedent("""\
        alerts:
          - name: runaway_agent
            query: governor_session_tokens_per_hour > 1
            runbook: kill it
          - name: runaway_careful
            query: governor_session_tokens_per_hour > 1
            runbook: ask first
            steps: [{action: kill_session, approval: required}]
          - name: runaway_trusting
            query: governor_session_tokens_per_hour > 1
            runbook: just kill
            steps: [{action: kill_session, approval: none}]
        """))
    rules = {r.name: r for r in rules_of(load_config_dir(config_dir).extra)}

    def kill_waits(rule: str, confident: bool) -> bool:
        (kill,) = [s for s in rules[rule].runbook_steps if s.action == "kill_session"]
        return kill.needs_person(confident)

    assert (kill_waits("runaway_agent", True), kill_waits("runaway_agent", False)) == (
        False, True)
    assert (kill_waits("runaway_careful", True), kill_waits("runaway_careful", False)) == (
        True, True)
    assert (kill_waits("runaway_trusting", True), kill_waits("runaway_trusting", False)) == (
        False, False)


def test_a_bad_step_is_reported_with_file_line_and_field(config_dir: Path) -> None:
    (config_dir / "alerts.yaml").write_text(textwrap.dedent("""\
        alerts:
          - name: runaway_agent
            query: governor_session_tokens_per_hour > 1
            steps:
              - action: notify
              - action: reboot_the_world
              - action: approve
                timeout: soon
        """))
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    text = [str(e) for e in exc.value.errors]
    assert any(f"{config_dir / 'alerts.yaml'}:6: alerts.0.steps.1.action:" in t for t in text), text
    assert any(":8: alerts.0.steps.2.timeout:" in t and "soon" in t for t in text), text


def test_a_rule_defined_in_two_files_is_an_error_naming_both(config_dir: Path) -> None:
    (config_dir / "more-alerts.yaml").write_text(
        "alerts:\n  - {name: other, query: up > 0, runbook: r}\n"
        "  - {name: runaway_agent, query: up > 0, runbook: r}\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    (err,) = exc.value.errors
    assert str(err).startswith(f"{config_dir / 'more-alerts.yaml'}:3: alerts.1.name:")
    assert "duplicate alert name 'runaway_agent'" in str(err) and "alerts.yaml" in str(err)


def test_duplicate_and_unnamed_rules_are_errors(config_dir: Path) -> None:
    (config_dir / "alerts.yaml").write_text(
        "alerts:\n  - {name: a, query: up > 0, runbook: r}\n"
        "  - {name: a, query: up > 1, runbook: r}\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    assert "duplicate alert name 'a'" in str(exc.value)
    (config_dir / "alerts.yaml").write_text("alerts:\n  - {name: 'bad name', query: up > 0}\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    assert ":2: alerts.0.name:" in str(exc.value) and "bad name" in str(exc.value)


def test_dedup_key_is_name_plus_identifying_labels_not_prometheus_labels() -> None:
    rule = AlertRule(name="runaway_agent", query="x > 1")
    embedded = {"session_id": "s-1", "workflow_tag": "triage"}
    from_am = {**embedded, "instance": "10.0.0.7:8080", "job": "governor", "cluster": "eu-1",
               "alertname": "runaway_agent", "severity": "critical"}
    assert dedup_key(rule, embedded) == dedup_key(rule, from_am)
    assert dedup_key(rule, embedded) != dedup_key(rule, {"session_id": "s-2"})
    budget = AlertRule(name="budget_near_ceiling", query="x > 90")
    assert "budget=b1" in dedup_key(budget, {"budget": "b1", "scope": "project"})


def test_a_silence_matches_by_rule_and_labels_until_it_expires() -> None:
    s = Silence(rule="runaway_agent", matchers={"workflow_tag": "triage"}, expires_ts=100,
                actor="u_oncall")
    assert silenced([s], "runaway_agent", {"workflow_tag": "triage", "x": "y"}, 50) is s
    assert silenced([s], "runaway_agent", {"workflow_tag": "other"}, 50) is None
    assert silenced([s], "secret_leaked", {"workflow_tag": "triage"}, 50) is None
    assert silenced([s], "runaway_agent", {"workflow_tag": "triage"}, 100) is None
    anyrule = Silence(matchers={"project": "p"}, expires_ts=100, actor="a")
    assert silenced([anyrule], "secret_leaked", {"project": "p"}, 1) is anyrule


def test_seed_queries_translate_to_governor_metrics() -> None:
    def q(text: str) -> str:
        return promql(AlertRule(name="r", query=text))

    assert q("tfy_budget_used_pct{scope='project'} > 90") == (
        "governor_budget_used_pct{scope='project'} > 90")
    assert q("sum(tfy_cost_usd_total{project='UNTAGGED'}) > 50") == (
        "sum(governor_cost_usd_total{project='UNTAGGED'}) > 50")
    assert "governor_guardrail_events_total{type='secret'" in q(
        "increase(tfy_guardrail_events_total{type='secret',action='allowed'}[1h]) > 0")
    runaway = q("rate(tfy_gateway_tokens_total[5m]) > 4 * quantile(0.95, "
                "rate(tfy_gateway_tokens_total[7d]))")
    assert runaway == ("governor_session_tokens_per_hour > 4 * "
                       "governor_session_baseline_tokens_per_hour")
    own = AlertRule(name="r", query="whatever > 1", promql="up == 0")
    assert promql(own) == "up == 0"


def test_threshold_of_a_query_feeds_the_embedded_source() -> None:
    assert query_threshold("tfy_budget_used_pct{scope='project'} > 90") == 90
    assert query_threshold("sum(x) >= 50.5") == 50.5
    assert query_threshold("rate(x[5m])") is None
    rule = AlertRule(name="budget_near_ceiling", query="tfy_budget_used_pct > 75")
    assert rule.embedded_source.signal == "budget_used_pct"
    assert rule.embedded_source.threshold == 75


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("rate(foo[5m] > (", "unclosed '('"),
        ("up{job='x' > 0", "unclosed '{'"),
        ("rate(up[5m)) > 0", "')' closes '['"),
        ("up{job='x} > 0", "unclosed quote"),
        ("up > 0)", "')' without an opening '('"),
    ],
)
def test_a_query_that_is_not_balanced_promql_is_an_error_naming_file_line_field(
    config_dir: Path, query: str, why: str
) -> None:
    (config_dir / "alerts.yaml").write_text(
        f"alerts:\n  - name: x\n    runbook: r\n    query: \"{query}\"\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    (err,) = exc.value.errors  # only the query's error, not a follow-on "at least 1 item"
    assert str(err).startswith(f"{config_dir / 'alerts.yaml'}:4: alerts.0.query:"), str(err)
    assert why in str(err)


def test_a_bad_promql_override_is_an_error_too(config_dir: Path) -> None:
    (config_dir / "alerts.yaml").write_text(
        "alerts:\n  - name: x\n    query: up > 0\n    promql: 'sum(rate(up[5m]) > 0'\n"
        "    runbook: r\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    (err,) = exc.value.errors
    assert ":4: alerts.0.promql:" in str(err) and "unclosed '('" in str(err)


def test_an_invalid_rule_reports_only_its_own_error(config_dir: Path) -> None:
    (config_dir / "alerts.yaml").write_text(
        "alerts:\n  - name: x\n    query: up > 0\n    steps: [{action: reboot}]\n    runbook: r\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    (err,) = exc.value.errors
    assert ":4: alerts.0.steps.0.action:" in str(err)
    (config_dir / "alerts.yaml").write_text("alerts: []\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    assert "alerts:" in str(exc.value) and "at least one alert rule" in str(exc.value)


def test_rule_sizes_are_bounded(config_dir: Path) -> None:
    labels = "".join(f"      l{i}: v\n" for i in range(65))
    (config_dir / "alerts.yaml").write_text(
        "alerts:\n  - name: x\n    query: up > 0\n    labels:\n" + labels)
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    assert "alerts.0.labels:" in str(exc.value) and "at most 64" in str(exc.value)
    (config_dir / "alerts.yaml").write_text(
        "alerts:\n  - name: x\n    query: up > " + "1" * 5000 + "\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    assert ":3: alerts.0.query:" in str(exc.value) and "4096" in str(exc.value)
    steps = "".join("      - action: notify\n" for _ in range(33))
    (config_dir / "alerts.yaml").write_text(
        "alerts:\n  - name: x\n    query: up > 0\n    steps:\n" + steps)
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    assert "alerts.0.steps:" in str(exc.value) and "at most 32" in str(exc.value)


def test_queries_with_brackets_inside_quotes_are_fine() -> None:
    rule = AlertRule(name="x", query="sum(rate(up{path=~'/a(b[c'}[5m])) by (job) > 0")
    assert promql(rule).startswith("sum(")


def test_the_top_n_session_gauges_default_to_20_and_are_bounded() -> None:
    from pydantic import ValidationError

    from policies.config.models import Settings

    assert Settings().alert_top_sessions == 20
    assert Settings(alert_top_sessions=1000).alert_top_sessions == 1000
    with pytest.raises(ValidationError):
        Settings(alert_top_sessions=1001)


def test_waiting_alert_firings_have_a_total_bound_with_a_default_and_a_ceiling() -> None:
    from pydantic import ValidationError

    from policies.config.models import Settings

    assert Settings().alert_max_queued_total == 5000
    assert Settings(alert_max_queued_total=100_000).alert_max_queued_total == 100_000
    assert Settings(alert_max_queued_total=0).alert_max_queued_total == 0
    for bad in (-1, 100_001):
        with pytest.raises(ValidationError):
            Settings(alert_max_queued_total=bad)


@pytest.mark.parametrize(
    ("field", "yaml_value", "line"),
    [
        ("annotations", "{'bad key': v}", 4),
        ("labels", "{__name__: v}", 4),
        ("identify", "['bad key']", 4),
    ],
)
def test_names_promtool_would_refuse_are_config_errors(
    config_dir: Path, field: str, yaml_value: str, line: int
) -> None:
    (config_dir / "alerts.yaml").write_text(
        f"alerts:\n  - name: x\n    query: up > 0\n    {field}: {yaml_value}\n    runbook: r\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    (err,) = exc.value.errors
    assert str(err).startswith(f"{config_dir / 'alerts.yaml'}:{line}: alerts.0.{field}:"), str(err)


@pytest.mark.parametrize(
    ("rule", "line"),
    [
        ("  - name: x\n    query: up > 0\n", 3),  # missing: the rule's line
        ("  - name: x\n    query: up > 0\n    runbook: ''\n", 5),  # empty: its own line
        ("  - name: x\n    query: up > 0\n    runbook: |\n      \n", 5),  # blank
    ],
)
def test_a_rule_without_runbook_text_is_an_error_naming_file_line_field(
    config_dir: Path, rule: str, line: int
) -> None:
    """Every alert maps to a runbook: a rule whose `runbook:` is missing or blank is refused,
    not accepted with default steps only."""
    (config_dir / "alerts.yaml").write_text(
        "alerts:\n  - {name: ok, query: up > 0, runbook: r}\n" + rule)
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(config_dir)
    (err,) = exc.value.errors
    assert str(err).startswith(f"{config_dir / 'alerts.yaml'}:{line}: alerts.1.runbook:"), str(err)
    assert "runbook" in str(err) and "missing or empty" in str(err)
    # a rule Governor makes up for an Alertmanager alert it has no rule for needs none
    assert AlertRule(name="external", query="(external)").runbook == ""
