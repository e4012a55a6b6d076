"""The auditor's timeline from a session's record (pure: rows in, lines out)."""

from __future__ import annotations

from audit.timeline import render, summary, timeline

T = 1_800_000_000.0


def _sections() -> dict[str, list[dict[str, object]]]:
    return {
        "session": [{"session_id": "s1", "kind": "proxy", "status": "killed", "user": "u",
                     "team": "t", "project": "p", "workflow_tag": "w"}],
        "calls": [
            {"call_id": "c1", "ts": T, "virtual_model": "vm", "provider": "openai",
             "model": "gpt-4o", "decision": "fallback", "fallback_reason": "budget 90% spent",
             "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.00123,
             "config_version": "cv-1", "decision_record": '{"o":["fallback"]}'},
            {"call_id": "c2", "ts": T + 1, "virtual_model": "vm", "decision": "blocked",
             "error_code": "budget_exceeded", "status_code": 429},
        ],
        "guardrail_events": [{"ts": T + 0.5, "call_id": "c1", "hook": "request-input",
                              "detector": "secrets", "type": "aws_access_key",
                              "action": "redacted", "fingerprint": "hmac:abcdef"}],
        "kills": [{"session_id": "s1", "actor": "oncall", "reason": "runaway", "ts": T + 3}],
        "alerts": [{"run_id": "r1", "name": "runaway_agent", "status": "resolved",
                    "severity": "page", "opened_ts": T + 2, "summary": ""}],
        "runbook_steps": [{"run_id": "r1", "step": 1, "action": "kill_session",
                           "phase": "done", "actor": "runbook", "result": "killed", "ts": T + 3}],
        "outcomes": [{"event_id": "e1", "kind": "pr_merged", "source": "github",
                      "url": "https://x.test/pr/1", "ts": T + 86400}],
        "config_versions": [{"version_id": "cv-1"}],
    }


def test_every_kind_of_event_is_one_line_in_time_order() -> None:
    entries = timeline(_sections())
    assert [e.kind for e in entries] == [
        "call", "guardrail", "refusal", "alert", "kill", "runbook_step", "outcome"]
    text = render(summary("s1", _sections()), entries, "archive")
    assert "call vm -> openai/gpt-4o 10+5 tokens $0.001230 fallback: budget 90% spent" in text
    assert '[config cv-1; inputs {"o":["fallback"]}]' in text
    assert "refused vm -> -/-: budget_exceeded (429)" in text
    assert "guardrail request-input secrets/aws_access_key redacted fingerprint hmac:abcdef" in text
    assert "killed by oncall: runaway" in text
    assert "runbook step 1 kill_session done by runbook: killed" in text
    assert "outcome pr_merged from github https://x.test/pr/1" in text
    assert "usage     2 calls (1 refused), 15 tokens, $0.001230" in text
    assert "2027-01-15 08:00:00.000Z" in text  # times are UTC


def test_a_long_decision_record_is_cut_and_a_close_is_not_a_kill() -> None:
    s = _sections()
    s["calls"][0]["decision_record"] = "x" * 5000
    s["kills"] = [{"session_id": "s1", "actor": "governor:close", "reason": "", "ts": T + 3}]
    lines = render(summary("s1", s), timeline(s), "ledger").splitlines()
    assert max(len(line) for line in lines) < 500
    assert any(line.endswith("closed by its owner") for line in lines)
    assert not any("killed by" in line for line in lines)
