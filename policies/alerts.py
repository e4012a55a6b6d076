"""Alert rules: the seed's `tfy-ai-alerts.yaml` shape plus machine-executable runbook steps.

A YAML document whose top level is `alerts:` (no `type:`) is this kind, so the seed's file loads
unchanged. Pure: models, the deduplication key, silence matching, default steps per well-known
rule, the query translation to Governor's metric names and the Prometheus rule file.

```yaml
alerts:
  - name: runaway_agent
    query: rate(tfy_gateway_tokens_total[5m]) > 3 * quantile(0.95, ...)
    labels: {severity: critical, team: platform}
    runbook: |
      1. ...
    # Governor extensions (all optional):
    identify: [session_id]            # labels of the deduplication key (default per rule)
    notify: [oncall-webhook]          # notification targets (gateway-notification-targets)
    promql: '...'                     # the Prometheus expression, when the translation will not do
    for: 1m                           # Prometheus `for:`
    embedded: {signal: budget_used_pct, threshold: 90}
    steps:
      - {action: notify}
      - {action: kill_session, approval: auto}     # auto: by itself on confident evidence
      - {action: approve, timeout: 15m, escalate_to: [pagerduty-primary]}
      - {action: set_guardrail_mode, detector: secrets, mode: mutate}
      - {action: open_incident}
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.config.models import Budget, window_seconds

KIND = "gateway-alert-rules"
TARGETS_KIND = "gateway-notification-targets"

_NAME = ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a Prometheus name
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Action = Literal[
    "notify",
    "kill_session",
    "set_guardrail_mode",
    "set_budget_behaviour",
    "require_project_header",
    "open_incident",
    "acknowledge",
    "approve",
]
HUMAN_ACTIONS = frozenset({"acknowledge", "approve"})
POLICY_ACTIONS = frozenset({"set_guardrail_mode", "set_budget_behaviour", "require_project_header"})
Signal = Literal[
    "loop_detector",
    "budget_used_pct",
    "guardrail_allowed",
    "untagged_spend",
    "breaker_open",
    "ledger_unreachable",
    "journal_backlog",
    "outage_policy",
    "tokenizer_drift",
    "none",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_QUERY_CHARS = 4096
MAX_LABELS = 64
MAX_STEPS = 32
MAX_TEXT_CHARS = 16384  # runbook text, one annotation
_CLOSE = {")": "(", "]": "[", "}": "{"}


def check_promql_shape(q: str) -> str:
    """Reject what can never be PromQL: unbalanced ( [ { or an unclosed quote (', ", `).

    Not a full parser (promtool is the judge of the exported file), but it catches at config time
    the typos that would make `governor alerts rules` fail `promtool check rules`. Raises
    ValueError naming the character and its 1-based column; returns the query unchanged."""
    if len(q) > MAX_QUERY_CHARS:
        raise ValueError(f"a query is at most {MAX_QUERY_CHARS} characters, not {len(q)}")
    stack: list[tuple[str, int]] = []
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c in "'\"`":
            j = i + 1
            while j < n and q[j] != c:
                j += 2 if c != "`" and q[j] == "\\" else 1
            if j >= n:
                raise ValueError(f"unclosed quote {c} at column {i + 1}")
            i = j + 1
            continue
        if c == "#":  # a comment runs to the end of the line
            nl = q.find("\n", i)
            i = n if nl < 0 else nl + 1
            continue
        if c in "([{":
            stack.append((c, i))
        elif c in _CLOSE:
            if not stack:
                raise ValueError(f"'{c}' without an opening '{_CLOSE[c]}' at column {i + 1}")
            opening, at = stack.pop()
            if opening != _CLOSE[c]:
                raise ValueError(f"'{c}' closes '{opening}' (column {at + 1}) at column {i + 1}")
        i += 1
    if stack:
        opening, at = stack[-1]
        raise ValueError(f"unclosed '{opening}' at column {at + 1}")
    return q


def _label_name(k: object) -> None:
    """A Prometheus label (or annotation) name; `__` names are Prometheus's own."""
    if not isinstance(k, str) or not _LABEL.match(k):
        raise ValueError(f"label name {k!r} must be letters, digits and _")
    if k.startswith("__"):
        raise ValueError(f"label name {k!r}: names starting with __ are reserved by Prometheus")


def _duration(v: str | None) -> str | None:
    if v is not None:
        window_seconds(v)
    return v


class Step(_Strict):
    """One runbook step. Action steps run as idempotent activities; `acknowledge`/`approve` wait
    for a person (an Update carrying the actor) up to `timeout`, then notify `escalate_to` and
    wait once more; `approval` puts a person in front of an action step."""

    action: Action
    # approval: none = run at once; required = wait for `approve`; auto = run at once when the
    # alert's evidence is confident (a repeated prompt or a trusted baseline), else wait.
    approval: Literal["none", "required", "auto"] = "none"
    timeout: str = "15m"
    escalate_to: tuple[str, ...] = Field(default=(), max_length=MAX_LABELS)
    # notify: these targets (default: the rule's `notify`)
    targets: tuple[str, ...] = Field(default=(), max_length=MAX_LABELS)
    detector: Literal["secrets", "pii", "prompt_injection"] = "secrets"
    mode: Literal["validate", "mutate"] = "mutate"
    budget: str | None = None  # set_budget_behaviour: budget id (default: the alert's label)
    on_exceed: str = "fallback_to_cheaper"

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str) -> str:
        _duration(v)
        return v

    @field_validator("on_exceed")
    @classmethod
    def _on_exceed(cls, v: str) -> str:
        if not re.match(r"^(hard_block|fallback_to_cheaper|fallback_to_[\w.\-]+)$", v):
            raise ValueError("on_exceed must be hard_block, fallback_to_cheaper or fallback_to_X")
        return v

    @property
    def timeout_seconds(self) -> int:
        return window_seconds(self.timeout)

    def needs_person(self, confident: bool) -> bool:
        if self.action in HUMAN_ACTIONS:
            return True
        return self.approval == "required" or (self.approval == "auto" and not confident)


class Embedded(_Strict):
    signal: Signal
    threshold: float | None = None


class AlertRule(_Strict):
    name: str
    query: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)
    runbook: str = Field(default="", max_length=MAX_TEXT_CHARS)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)
    identify: tuple[str, ...] | None = Field(default=None, max_length=MAX_LABELS)
    notify: tuple[str, ...] = Field(default=(), max_length=MAX_LABELS)
    promql: str | None = None
    for_: str | None = Field(default=None, alias="for")
    embedded: Embedded | None = None
    steps: tuple[Step, ...] | None = Field(default=None, max_length=MAX_STEPS)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"alert name {v!r} must be letters, digits and _ (a Prometheus name)")
        return v

    @field_validator("query", "promql")
    @classmethod
    def _query(cls, v: str | None) -> str | None:
        return None if v is None else check_promql_shape(v)

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _labels(cls, v: object) -> object:
        if isinstance(v, dict):
            for k in v:
                _label_name(k)
            return {k: str(val) for k, val in v.items()}
        return v

    @field_validator("identify")
    @classmethod
    def _identify(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for k in v or ():
            _label_name(k)
        return v

    @field_validator("for_")
    @classmethod
    def _for(cls, v: str | None) -> str | None:
        return _duration(v)

    @property
    def identifying_labels(self) -> tuple[str, ...]:
        if self.identify is not None:
            return self.identify
        return DEFAULT_IDENTIFY.get(self.name, ())

    @property
    def runbook_steps(self) -> tuple[Step, ...]:
        if self.steps is not None:
            return self.steps
        return DEFAULT_STEPS.get(self.name, (Step(action="notify"), Step(action="acknowledge")))

    @property
    def embedded_source(self) -> Embedded:
        if self.embedded is not None:
            return self.embedded
        signal = DEFAULT_SIGNAL.get(self.name, "none")
        return Embedded(signal=signal, threshold=query_threshold(self.query))


class ConfiguredAlertRule(AlertRule):
    """A rule from a config file. Every alert maps to a runbook: its `runbook` text (what the
    person paged reads and does) is required and not blank — a rule without one is a config
    error naming file, line and field, not a rule that pages with default steps only. (Rules
    Governor makes up itself, for an Alertmanager alert it has no rule for, are `AlertRule`.)"""

    runbook: str = Field(default="", max_length=MAX_TEXT_CHARS, validate_default=True)

    @field_validator("runbook")
    @classmethod
    def _runbook(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("every alert rule needs `runbook:` text, the steps the person "
                             "it pages follows (it is missing or empty)")
        return v


class AlertRulesConfig(_Strict):
    type: Literal["gateway-alert-rules"] = "gateway-alert-rules"
    name: str = "alerts"
    alerts: tuple[ConfiguredAlertRule, ...]

    @field_validator("alerts")
    @classmethod
    def _some(cls, v: tuple[AlertRule, ...]) -> tuple[AlertRule, ...]:
        # An after-validator (not min_length): it runs only when every rule is valid, so a bad
        # rule is reported once, not again as "at least 1 item".
        if not v:
            raise ValueError("at least one alert rule")
        return v

    @model_validator(mode="after")
    def _unique(self) -> AlertRulesConfig:
        seen: set[str] = set()
        for r in self.alerts:
            if r.name in seen:
                raise ValueError(f"duplicate alert name {r.name!r}")
            seen.add(r.name)
        return self


class NotificationTarget(_Strict):
    """A named destination. `url` is an Apprise URL (slack://, pagerduty://, workflows:// for Teams,
    json://, mailto://); put secrets in `url_env` (an environment variable holding the URL) or
    as `${VAR}` inside `url`, never in clear in the repository."""

    name: str = Field(min_length=1)
    url: str | None = None
    url_env: str | None = None
    # Alert rules this target hears without the rule naming it (`*`: every rule), so the seed's
    # rules page someone while its file stays unchanged.
    alerts: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one(self) -> NotificationTarget:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("a notification target needs exactly one of url or url_env")
        return self


class NotificationTargetsConfig(_Strict):
    type: Literal["gateway-notification-targets"]
    name: str = "notifications"
    targets: tuple[NotificationTarget, ...]


# Well-known rules of the seed: what identifies one alert, which embedded signal raises it, and
# the runbook steps a machine can take beside the human text.
DEFAULT_IDENTIFY: dict[str, tuple[str, ...]] = {
    "runaway_agent": ("session_id",),
    "budget_near_ceiling": ("budget",),
    "secret_leaked": ("project",),
    "untagged_spend_spike": (),
    "breaker_open": ("target",),
    "ledger_unreachable": (),
    "journal_backlog_growing": (),
    "outage_policy_in_force": (),
    "tokenizer_drift": ("virtual_model", "to_version"),
}
DEFAULT_SIGNAL: dict[str, Signal] = {
    "runaway_agent": "loop_detector",
    "budget_near_ceiling": "budget_used_pct",
    "secret_leaked": "guardrail_allowed",
    "untagged_spend_spike": "untagged_spend",
    "breaker_open": "breaker_open",
    "ledger_unreachable": "ledger_unreachable",
    "journal_backlog_growing": "journal_backlog",
    "outage_policy_in_force": "outage_policy",
    "tokenizer_drift": "tokenizer_drift",
}
DEFAULT_STEPS: dict[str, tuple[Step, ...]] = {
    "runaway_agent": (
        Step(action="notify"),
        Step(action="kill_session", approval="auto"),
        Step(action="open_incident"),
    ),
    "budget_near_ceiling": (
        Step(action="notify"),
        Step(action="set_budget_behaviour", approval="required"),
    ),
    "secret_leaked": (
        Step(action="notify"),
        Step(action="set_guardrail_mode", approval="required"),
        Step(action="open_incident"),
    ),
    "untagged_spend_spike": (
        Step(action="notify"),
        Step(action="require_project_header", approval="required"),
    ),
}

# Self-health rules Governor always has (embedded source), unless the config names them.
BUILTIN_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        name="breaker_open",
        query="governor_circuit_breaker_open > 0",
        labels={"severity": "warning", "team": "platform"},
        runbook="1. Check the provider's status page\n2. Traffic is on the fallbacks meanwhile",
        embedded=Embedded(signal="breaker_open"),
    ),
    AlertRule(
        name="ledger_unreachable",
        query="governor_ledger_up == 0",
        labels={"severity": "critical", "team": "platform"},
        runbook="1. Check the ledger database\n2. Calls are journaled locally until it is back",
        embedded=Embedded(signal="ledger_unreachable"),
    ),
    AlertRule(
        name="journal_backlog_growing",
        query="governor_ledger_pending_rows > 10000",
        labels={"severity": "warning", "team": "platform"},
        runbook="1. The ledger is slow or down: check the database",
        embedded=Embedded(signal="journal_backlog", threshold=10000),
    ),
    AlertRule(
        name="outage_policy_in_force",
        query="governor_limits_outage_policy_active == 1",
        labels={"severity": "critical", "team": "platform"},
        runbook="1. The ledger database is unreachable: shared limits follow "
        "limits_outage_policy\n2. Restore the database; replicas return to leases by themselves",
        embedded=Embedded(signal="outage_policy"),
    ),
    AlertRule(
        name="tokenizer_drift",
        query="governor_tokenizer_drift_pct > 10",
        labels={"severity": "warning", "team": "finance-ops"},
        runbook="1. A virtual model's new model version uses more tokens for the same prompts "
        "(labels: virtual_model, from_version, to_version, drift_pct)\n2. Review it in the "
        "premium-model panel (governor report --panel 4)\n3. If the new version is not worth "
        "the extra spend, apply the panel's YAML diff to roll the virtual model back",
        embedded=Embedded(signal="tokenizer_drift"),
    ),
)


def effective_rules(configs: Sequence[AlertRulesConfig]) -> tuple[AlertRule, ...]:
    rules = [r for c in configs for r in c.alerts]
    names = {r.name for r in rules}
    return (*rules, *(b for b in BUILTIN_RULES if b.name not in names))


_THRESHOLD = re.compile(r">=?\s*([0-9]+(?:\.[0-9]+)?)\s*$")


def query_threshold(query: str) -> float | None:
    """`... > 90` -> 90.0: the number an embedded signal compares against."""
    m = _THRESHOLD.search(query.strip())
    return float(m.group(1)) if m else None


# Deduplication and silences -------------------------------------------------------------------


def dedup_key(rule: AlertRule, labels: Mapping[str, str]) -> str:
    """The alert's identity in both sources: rule name + its identifying labels (never
    Alertmanager's fingerprint, which hashes `instance`, `job` and external labels)."""
    parts = [rule.name]
    for k in rule.identifying_labels:
        v = labels.get(k, "")
        parts.append(f"{k}={v}")
    key = "alert-" + ",".join(parts)
    return re.sub(r"[^A-Za-z0-9_=,.:@\-]", "_", key)[:250]


class Silence(_Strict):
    id: int = 0
    rule: str | None = None  # alert name, or None for any
    matchers: dict[str, str] = Field(default_factory=dict)
    expires_ts: float
    actor: str
    comment: str = ""


def silenced(silences: Sequence[Silence], name: str, labels: Mapping[str, str], now: float) -> (
    Silence | None
):
    for s in silences:
        if s.expires_ts <= now:
            continue
        if s.rule is not None and s.rule != name:
            continue
        if all(labels.get(k) == v for k, v in s.matchers.items()):
            return s
    return None


# Prometheus translation -----------------------------------------------------------------------

# Seed metric -> Governor metric (documented in alerts/README.md).
METRIC_MAP: dict[str, str] = {
    "tfy_gateway_tokens_total": "governor_tokens_total",
    "tfy_budget_used_pct": "governor_budget_used_pct",
    "tfy_guardrail_events_total": "governor_guardrail_events_total",
    "tfy_cost_usd_total": "governor_cost_usd_total",
    "tfy_gateway_requests_total": "governor_requests_total",
}
# The literal runaway_agent query compares each labelled series with an unlabelled quantile, so
# it cannot name a session; Governor exports the top-N sessions above their baseline instead.
RUNAWAY_PROMQL = (
    "governor_session_tokens_per_hour > 3 * governor_session_baseline_tokens_per_hour"
)
_RUNAWAY_SEED = re.compile(r"quantile\s*\(\s*0\.95\s*,\s*rate\(\s*tfy_gateway_tokens_total")
_METRIC = re.compile(r"\btfy_[a-z_]+\b")


def promql(rule: AlertRule) -> str:
    if rule.promql:
        return rule.promql
    q = " ".join(rule.query.split())
    if _RUNAWAY_SEED.search(q):
        m = re.search(r">\s*([0-9.]+)\s*\*", q)
        mult = m.group(1) if m else "3"
        return RUNAWAY_PROMQL.replace("> 3 *", f"> {mult} *")
    return _METRIC.sub(lambda m: METRIC_MAP.get(m.group(0), m.group(0)), q)


_BRACES = re.compile(r"\{\{|\}\}")


def template_literal(text: str) -> str:
    """Text Prometheus's Go templating renders back unchanged: each `{{` / `}}` becomes an
    action printing it as a string literal. The runbook is copied text, not a template (the
    embedded source shows it as written too)."""
    return _BRACES.sub(lambda m: '{{"' + m.group(0) + '"}}', text)


def prometheus_rules(rules: Sequence[AlertRule], group: str = "governor") -> dict[str, object]:
    """A Prometheus rule file (as data): one alerting rule per Governor rule."""
    out = []
    for r in rules:
        item: dict[str, object] = {"alert": r.name, "expr": promql(r)}
        if r.for_:
            item["for"] = r.for_
        labels = {**r.labels, "governor_rule": r.name}
        item["labels"] = labels
        ann = {**r.annotations}
        if r.runbook:
            ann.setdefault("runbook", template_literal(r.runbook.strip()))
        ann.setdefault("summary", f"Governor alert {r.name}")
        item["annotations"] = ann
        out.append(item)
    return {"groups": [{"name": group, "rules": out}]}


def budget_scope_label(metadata_keys: Sequence[str]) -> str:
    """`scope` label of a budget gauge: `project` for a project budget (the seed's filter),
    the one metadata key otherwise, `global` for none, keys joined by `+` for several."""
    keys = sorted(metadata_keys)
    if not keys:
        return "global"
    return "+".join(keys)


GUARDRAIL_CLASS = {"secrets": "secret", "pii": "pii", "prompt_injection": "injection"}


def guardrail_class(detector: str) -> str:
    return GUARDRAIL_CLASS.get(detector, detector)


def rules_of(extra: Mapping[str, Sequence[BaseModel]]) -> tuple[AlertRule, ...]:
    """Every alert rule of a config (`GatewayConfig.extra`), plus the built-in self-health rules."""
    docs = [d for d in extra.get(KIND, ()) if isinstance(d, AlertRulesConfig)]
    return effective_rules(docs)


def subscribed_targets(extra: Mapping[str, Sequence[BaseModel]], rule: str) -> tuple[str, ...]:
    return tuple(t.name for t in targets_of(extra).values() if rule in t.alerts or "*" in t.alerts)


def targets_of(extra: Mapping[str, Sequence[BaseModel]]) -> dict[str, NotificationTarget]:
    out: dict[str, NotificationTarget] = {}
    for d in extra.get(TARGETS_KIND, ()):
        if isinstance(d, NotificationTargetsConfig):
            out.update({t.name: t for t in d.targets})
    return out


def undefined_targets(
    extra: Mapping[str, Sequence[BaseModel]], budgets: Sequence[Budget]
) -> list[str]:
    """Notification targets that alert rules (`notify`, a step's `targets`/`escalate_to`) or
    budget alerts (`notify`) name but no `gateway-notification-targets` file defines: nothing
    is ever sent to them. One sentence each ("alert rule 'x' notify: 't' ..."); not an error,
    so the seed's files load unchanged."""
    known = set(targets_of(extra))
    out: list[str] = []

    def check(owner: str, field: str, names: Sequence[str]) -> None:
        out.extend(f"{owner} {field}: {n!r} is not defined in any gateway-notification-targets "
                   "file; nothing is sent to it" for n in names if n not in known)

    for doc in extra.get(KIND, ()):
        for r in getattr(doc, "alerts", ()):
            check(f"alert rule {r.name!r}", "notify", r.notify)
            for i, st in enumerate(r.steps or ()):
                check(f"alert rule {r.name!r}", f"steps.{i}.targets", st.targets)
                check(f"alert rule {r.name!r}", f"steps.{i}.escalate_to", st.escalate_to)
    for b in budgets:
        for i, a in enumerate(b.alerts):
            check(f"budget {b.id!r}", f"alerts.{i}.notify", a.notify)
    return out
