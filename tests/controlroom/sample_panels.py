"""A hand-made list of the six panels (shapes of `controlroom.model`) for renderer tests."""

from __future__ import annotations

from controlroom.model import Action, Chart, Panel, Series, Table

HOSTILE = '<script>alert("pwned")</script>'
DAY = 86400.0
T0 = 1_764_000_000.0


def sample_panels() -> list[Panel]:
    return [
        Panel(1, "Adoption", "How many engineers use AI tools each day, by tool and team?",
              "executive", figures={"active_users_today": 42, "gap_pp": 26.0},
              tables=[Table("Active users by tool x team", ["tool", "team", "users"],
                            [["claude-code", "platform", 12], ["cursor", HOSTILE, 30]])],
              charts=[Chart("Active users per day", "line", "users", [
                  Series("claude-code", [(T0 + i * DAY, 10.0 + i) for i in range(7)]),
                  Series(HOSTILE, [(T0 + i * DAY, 20.0 - i) for i in range(7)])])]),
        Panel(2, "Project burn rate", "Where is the money going?", "executive",
              figures={"total_usd": 1234.5, "untagged_usd": 451.25},
              tables=[Table("Spend by project", ["project", "usd", "budget_used_pct"],
                            [["platform-search", 3100.0, 77.5], ["UNTAGGED", 451.25, None],
                             [HOSTILE, 1.0, 0.1]])],
              charts=[Chart("Spend by project", "bar", "USD", [
                  Series("spend", [("platform-search", 3100.0), ("UNTAGGED", 451.25),
                                   (HOSTILE, 1.0)])])]),
        Panel(3, "Runaway-agent detector", "Which agents are looping?", "oncall",
              figures={"live_sessions": 3, "runaway": 1},
              tables=[Table("Sessions over 3x p95", ["session", "tag", "tokens_per_hr", "ratio"],
                            [["sess-loop", "code-review", 900000.0, 6.2]])],
              actions=[Action("kill_session", "sess-loop", "6.2x the p95 of code-review"),
                       Action("kill_session", HOSTILE, "hostile id")]),
        Panel(4, "Premium-model review queue", "Which premium usage is decorative?",
              "engineering", figures={"premium_usd": 3200.0, "drift_pct": 25.0},
              actions=[Action("yaml", "virtual model code-review-fast",
                              "- model: claude-opus-4-7\n+ model: claude-opus-4-6\n# " + HOSTILE)]),
        Panel(5, "Safety review", "Which guardrail events are noise and which are risk?",
              "engineering", figures={"events": 120, "allowed_secrets": 1},
              tables=[Table("Events", ["hook", "detector", "action", "count", "flag"],
                            [["tool-output", "secrets", "allowed", 1, True]])]),
        Panel(6, "Outcome join", "Did it ship anything?", "executive",
              figures={"cost_per_outcome_usd": 2.21, "sessions_with_outcome": 17},
              tables=[Table("Leverage by workflow tag (top 10)", ["workflow_tag", "mean", "n"],
                            [["code-review", 61.2, 40]])]),
    ]
