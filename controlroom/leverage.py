"""The seed's `ai_leverage_score(session)`, exactly: same weights, clamp and cost dampener.

Per SESSION, never per person; reports aggregate it by workflow tag (`by_workflow_tag`).
The inputs (`SessionInputs`, computed from the ledger by `controlroom.queries`):

- `incidents_resolved`, `prs_merged`, `tickets_closed`: outcome events of that kind joined to
  the session by session id (`outcomes` table).
- `eval_pass_rate`: mean `pass_rate` of the session's `eval` outcomes (0.0-1.0), 0 when none.
- `budget_limit_hits`: the session's calls refused with `budget_exceeded` or moved by a budget
  fallback (`fallback_reason` starting with `budget`).
- `rate_limit_hits`: the session's calls refused with `rate_limited`, `session_throttled` or
  `session_ceiling`.
- `guardrail_blocks`: the session's guardrail events with action `blocked`.
- `retry_token_count`: tokens (input + output + cache) of calls repeating a prompt already sent
  in the session (same prompt fingerprint; the cheapest occurrence counts as the original).
  Retried attempts of one call carry the same fingerprint, so they count here.
- `unused_context_ratio`: in a session of 2+ calls, the share of its prompt tokens sent at full
  price instead of read from the prompt cache, `input / (input + cache_read)` summed over its
  calls (0 for a one-call session). Governor keeps sizes and hashes, not prompts: context
  re-sent uncached on every turn is the part of "unused context" the counters can measure.
- `tokens_per_hr`: the session's tokens / its active span (first to last call, at least the loop
  detector's window `loop_window_seconds`) in hours.
- `p95_baseline`: the loop detector's baseline for the session's workflow tag
  (`policies.loops.rate_baseline`): a configured `loop_baselines` value, else the p95 of
  `tokens_per_hr` over the tag's sessions that ended in the 7 days before the loop
  detector's window (the sessions being judged never set their own bar) when at least
  `loop_min_sessions` back it, else `loop_default_baseline_tokens_per_hour`.
- `total_cost_usd`: the session's call costs (USD).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def ai_leverage_score(session: Mapping[str, Any]) -> float:
    """The seed's function, unchanged in arithmetic. 0-100; higher is more outcome per dollar.

    Every penalty is non-negative and the dampener positive, so a session without outcomes
    (all four outcome inputs 0) scores exactly 0: the panels score only sessions with an
    outcome and count the others (`controlroom.panels.tag_leverage`)."""
    # OUTCOME SIGNALS (weighted heaviest)
    outcome_score = (
        session.get("incidents_resolved", 0) * 25
        + session.get("prs_merged", 0) * 15
        + session.get("tickets_closed", 0) * 10
        + session.get("eval_pass_rate", 0) * 20  # float 0.0-1.0
    )
    # GOVERNANCE HITS (small penalty: information, not moral failing)
    governance_penalty = (
        session.get("budget_limit_hits", 0) * 2
        + session.get("rate_limit_hits", 0) * 1
        + session.get("guardrail_blocks", 0) * 3
    )
    # WASTE SIGNALS (penalise shape, not raw volume)
    retry_tokens = session.get("retry_token_count", 0)
    context_waste = session.get("unused_context_ratio", 0.0)
    loop_flag = 1 if session.get("tokens_per_hr", 0) > 3 * session.get("p95_baseline", 1) else 0
    waste_penalty = (retry_tokens / 10000) + (context_waste * 10) + (loop_flag * 15)
    # COST DAMPENER (sub-linear: expensive sessions aren't punished)
    cost_usd = session.get("total_cost_usd", 0.01)
    cost_dampener = cost_usd**0.4
    raw = (outcome_score - governance_penalty - waste_penalty) / max(cost_dampener, 0.01)
    return max(0.0, min(100.0, raw))


@dataclass(frozen=True)
class TagLeverage:
    """Leverage of one workflow tag's sessions: mean score, sessions, cost, outcomes."""

    workflow_tag: str
    mean_score: float
    sessions: int
    cost_usd: float
    outcomes: int


def by_workflow_tag(sessions: Iterable[Mapping[str, Any]], top: int = 10) -> list[TagLeverage]:
    """Mean score per workflow tag (sessions without a tag under `(untagged)`), best first,
    ties by tag name; at most `top`. Input mappings carry `workflow_tag` and the score inputs
    (or the score itself as `score`, when already computed)."""
    acc: dict[str, list[float]] = {}
    for s in sessions:
        tag = s.get("workflow_tag") or "(untagged)"
        a = acc.setdefault(tag, [0.0, 0, 0.0, 0])
        score = s.get("score")
        a[0] += ai_leverage_score(s) if score is None else score
        a[1] += 1
        a[2] += float(s.get("total_cost_usd", 0.0))
        a[3] += int(s.get("incidents_resolved", 0) + s.get("prs_merged", 0)
                    + s.get("tickets_closed", 0) + s.get("evals", 0))
    rows = [TagLeverage(t, a[0] / a[1], int(a[1]), a[2], int(a[3])) for t, a in acc.items()]
    rows.sort(key=lambda r: (-r.mean_score, r.workflow_tag))
    return rows[:top]
