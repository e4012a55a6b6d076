"""Apply a guardrails config at one hook: the decision the proxy and workflows act on.

One event per finding, with the strongest action any matching rule gives it
(blocked > redacted > flagged > allowed); the hook's action is the strongest event's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.guardrails.config import GuardrailRule, GuardrailsConfig
from policies.guardrails.engine import Finding, redact, scan
from policies.guardrails.spans import Span

_RANK = {"allowed": 0, "flagged": 1, "redacted": 2, "blocked": 3}
MAX_EVENTS = 100  # events recorded per hook and text; findings beyond still act, unrecorded


@dataclass(frozen=True, slots=True)
class GuardrailEvent:
    hook: str
    detector: str
    type: str
    action: str
    rule_id: str
    fingerprint: str
    verdict: str | None = None  # a classifier's verdict JSON (`policies.guardrails.classifiers`)


@dataclass(frozen=True, slots=True)
class HookResult:
    action: str  # allowed | flagged | redacted | blocked
    text: str
    events: list[GuardrailEvent] = field(default_factory=list)
    blocking_event: GuardrailEvent | None = None
    redactions: tuple[Finding, ...] = ()  # the findings replaced in `text`, in text order


def detectors_of(rules: tuple[GuardrailRule, ...]) -> frozenset[str]:
    return frozenset(d for r in rules for d in r.detectors)


def decide(
    hook: str, rules: tuple[GuardrailRule, ...], findings: list[Finding]
) -> tuple[list[tuple[Finding, GuardrailEvent]], str]:
    """Pair each finding a rule covers with its event; return them and the hook's action."""
    out: list[tuple[Finding, GuardrailEvent]] = []
    overall = "allowed"
    for f in findings:
        best: GuardrailRule | None = None
        for r in rules:
            if r.covers(f.detector, f.type) and (
                best is None or _RANK[r.action] > _RANK[best.action]
            ):
                best = r
        if best is None:
            continue
        action = best.action
        out.append((f, GuardrailEvent(hook, f.detector, f.type, action, best.id, f.fingerprint)))
        if _RANK[action] > _RANK[overall]:
            overall = action
    return out, overall


def evaluate(
    config: GuardrailsConfig,
    hook: str,
    text: str,
    metadata: dict[str, str],
    salt: bytes,
    spans: list[Span] | None = None,
) -> HookResult:
    """Run the rules for `hook` and `metadata` (canonical keys: project, workflow_tag, ...).

    `spans`: the detector hits of `text` for this hook's detectors, when already computed."""
    rules = config.rules_for(hook, metadata)
    if not rules:
        return HookResult("allowed", text)
    findings = scan(text, detectors_of(rules), salt, spans)
    if not findings:
        return HookResult("allowed", text)
    pairs, action = decide(hook, rules, findings)
    events = [e for _, e in pairs]
    to_redact = [f for f, e in pairs if e.action == "redacted"]
    out_text = redact(text, to_redact) if to_redact else text
    blocking = next((e for e in events if e.action == "blocked"), None)
    if len(events) > MAX_EVENTS:
        # A text full of findings must not become a ledger full of events: the action and the
        # redactions still count every finding, the events record the first ones (and the block).
        events = events[:MAX_EVENTS]
        if blocking is not None and blocking not in events:
            events[-1] = blocking
    return HookResult(action, out_text, events, blocking, tuple(to_redact))
