"""`governor alerts rules`: a Prometheus rule file that promtool accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SEED = REPO.parent / "shared" / "seeds" / "yaml" / "tfy-ai-alerts.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "governor.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def promtool_accepts(tmp: Path, rules_text: str) -> None:
    """promtool (Debian's `prometheus` package) checks the exported rule file."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (.ci/run installs the Debian `prometheus` package)")
    out = tmp / "rules.yml"
    out.write_text(rules_text)
    checked = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_seed_rules_export_to_a_rule_file_promtool_accepts(tmp_path: Path) -> None:
    d = tmp_path / "config"
    shutil.copytree(REPO / "examples" / "config", d)
    if SEED.exists():  # the seed itself, unchanged, instead of the sample's copy of it
        (d / "alerts.yaml").unlink()
        shutil.copy(SEED, d / "tfy-ai-alerts.yaml")
    check = run("config", "check", str(d))
    assert check.returncode == 0, check.stderr
    assert "4 alert rule(s)" in check.stdout
    r = run("alerts", "rules", "--config", str(d))
    assert r.returncode == 0, r.stderr
    promtool_accepts(tmp_path, r.stdout)
    rules = {x["alert"]: x for x in yaml.safe_load(r.stdout)["groups"][0]["rules"]}
    assert {"runaway_agent", "budget_near_ceiling", "secret_leaked", "untagged_spend_spike",
            "ledger_unreachable", "breaker_open", "journal_backlog_growing"} <= set(rules)
    assert rules["budget_near_ceiling"]["expr"] == "governor_budget_used_pct{scope='project'} > 90"
    assert rules["runaway_agent"]["labels"]["governor_rule"] == "runaway_agent"
    assert "PUT /gateway/sessions/{id}/kill" in rules["runaway_agent"]["annotations"]["runbook"]


def test_rules_of_a_broken_config_exit_1_with_located_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("alerts:\n  - name: x\n")
    r = run("alerts", "rules", "--config", str(tmp_path))
    assert r.returncode == 1
    assert f"{tmp_path / 'a.yaml'}:2: alerts.0.query:" in r.stderr


def test_runbook_text_with_template_braces_stays_literal_and_passes_promtool(
    tmp_path: Path,
) -> None:
    """Prometheus renders annotations as Go templates; a runbook's text is copied, not a
    template, so `{{`/`}}` in it are escaped (promtool failed on an unclosed action before)."""
    text = "1. check {{ $value \n2. then }} and {{\"x\"}}\n"
    (tmp_path / "a.yaml").write_text(
        "alerts:\n  - name: x\n    query: up == 0\n    runbook: " + yaml.safe_dump(text).strip()
        + "\n    annotations: {summary: 'down: {{ $labels.job }}'}\n")
    r = run("alerts", "rules", "--config", str(tmp_path))
    assert r.returncode == 0, r.stderr
    promtool_accepts(tmp_path, r.stdout)
    (rule,) = [x for x in yaml.safe_load(r.stdout)["groups"][0]["rules"] if x["alert"] == "x"]
    assert rule["annotations"]["summary"] == "down: {{ $labels.job }}"  # a template, kept
    # What Prometheus renders back: the text as written (each escaped brace pair is a string
    # literal action).
    rendered = rule["annotations"]["runbook"].replace('{{"{{"}}', "{{").replace('{{"}}"}}', "}}")
    assert rendered == text.strip()


def test_config_check_warns_of_notification_targets_no_file_defines(tmp_path: Path) -> None:
    """The seed's files still load (exit 0), but an alert or budget that would page nobody is
    named, with the field, so the on-call finds out before the alert does."""
    (tmp_path / "a.yaml").write_text(
        "alerts:\n  - name: x\n    query: up == 0\n    runbook: r\n"
        "    notify: [ops-hook, no-such-target]\n"
        "    steps:\n      - {action: notify, targets: [ops-hook]}\n"
        "      - {action: approve, escalate_to: [nobody]}\n")
    (tmp_path / "b.yaml").write_text(
        "type: gateway-budget-config\nname: b\nbudgets:\n  - id: b1\n    ceiling_usd: 10\n"
        "    window: monthly\n    alerts: [{at_pct: 90, notify: ['slack:#nowhere']}]\n")
    (tmp_path / "n.yaml").write_text(
        "type: gateway-notification-targets\ntargets:\n"
        "  - {name: ops-hook, url: 'json://127.0.0.1:9/x'}\n")
    r = run("config", "check", str(tmp_path))
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 3, r.stderr
    assert any("alert rule 'x' notify: 'no-such-target'" in w for w in warnings), warnings
    assert any("alert rule 'x' steps.1.escalate_to: 'nobody'" in w for w in warnings), warnings
    assert any("budget 'b1' alerts.0.notify: 'slack:#nowhere'" in w for w in warnings), warnings
    assert not any("ops-hook" in w for w in warnings)
