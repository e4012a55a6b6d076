"""Prometheus metrics of governed calls, shared by the proxy and the workers.

Label sets are bounded by config (virtual models, targets, projects, teams, budgets), never by
session or user ids. A label value a caller chooses (the project header; the model version an
upstream reports; a virtual model name) passes only if the config names it (`bound_to`) or the
settings' `metrics_label_allowlist` lists it; anything else is `other`, so the series count is
bounded by configuration whatever callers send. Children are cached so the hot path does a dict
lookup, not a label parse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from policies.alerts import budget_scope_label as _scope_of_keys
from policies.budgets import BudgetKey
from policies.config.gateway import GatewayConfig
from policies.config.models import Budget
from policies.windows import calendar_window

_SCOPES: dict[int, tuple[Budget, str]] = {}


def budget_scope_label(b: Budget) -> str:
    """`project` for a project budget (what the seed's `scope='project'` selects). Cached per
    budget object: it is read on every governed call."""
    hit = _SCOPES.get(id(b))
    if hit is not None and hit[0] is b:
        return hit[1]
    label = _scope_of_keys(tuple(b.scope.metadata) + tuple(b.scope.subjects))
    if len(_SCOPES) > 4096:
        _SCOPES.clear()
    _SCOPES[id(b)] = (b, label)  # holding `b` keeps its id from being reused
    return label

MAX_UNLISTED_VERSIONS = 100
# Refusal codes are Governor's own fixed strings, plus the error type or code an upstream
# answered a request with (`invalid_request_error`, `context_length_exceeded`, ...): a label
# value the upstream chooses, so only the first this many distinct codes get a series.
MAX_REFUSAL_CODES = 200
MAX_CODE_CHARS = 64

LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "governor_requests_total",
            "Governed calls by decision and status",
            ["virtual_model", "decision", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "governor_tokens_total",
            "Tokens by class",
            ["project", "team", "model", "model_version", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "governor_cost_usd_total", "Spend in USD by model and the version that answered",
            ["project", "team", "model", "model_version"], registry=r
        )
        self.budget_used = Gauge(
            "governor_budget_used_pct",
            "Budget used in the current window",
            ["budget", "scope"],
            registry=r,
        )
        self.overhead = Histogram(
            "governor_gateway_overhead_seconds",
            "Time spent in the gateway itself (total minus upstream)",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            "governor_upstream_latency_seconds",
            "Upstream latency (to the response head when streaming)",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "governor_refusals_total", "Refused calls by code", ["code"], registry=r
        )
        self.kills = Counter("governor_session_kills_total", "Sessions killed", registry=r)
        self.http_refusals = Counter(
            "governor_http_refusals_total",
            "Requests the proxy answered with a refusal (4xx/5xx in the caller's protocol: "
            "auth, headers, body size or timeout, capacity such as gateway_busy, governance), "
            "by route, status and refusal code",
            ["route", "status", "code"],
            registry=r,
        )
        self.auth_refusals = Counter(
            "governor_auth_refusals_total",
            "Requests answered 401 or 403, or 400 for duplicated or contradicting identity "
            "headers, by route and refusal code",
            ["route", "status", "code"],
            registry=r,
        )
        self.loop_detections = Counter(
            "governor_loop_detections_total", "Runaway sessions detected, by signal and action",
            ["kind", "action"], registry=r)
        self.alerts_dropped = Counter(
            "governor_alerts_dropped_total",
            "Embedded alert firings not handed to Temporal: a new alert key while "
            "alert_max_queued of its rule (bound=rule) or alert_max_queued_total of all rules "
            "(bound=total) were already waiting",
            ["bound"],
            registry=r,
        )
        for bound in ("rule", "total"):
            self.alerts_dropped.labels(bound)
        self.ledger_pending = Gauge(
            "governor_ledger_pending_rows",
            "Ledger rows journaled but not yet in the database",
            registry=r,
        )
        self.guardrail_events = Counter(
            "governor_guardrail_events_total",
            "Guardrail events by class (secret, pii, injection), specific kind, hook and action",
            ["type", "kind", "hook", "action"],
            registry=r,
        )
        # The one exception to "never a session id on a metric": only the top N sessions above
        # their baseline (N = settings.alert_top_sessions, default 20), for the runaway_agent
        # alert in Prometheus; see alerts/README.md.
        self.session_rate = Gauge(
            "governor_session_tokens_per_hour",
            "Token rate of the top-N sessions above their workflow tag's baseline",
            ["session_id", "workflow_tag"],
            registry=r,
        )
        self.session_baseline = Gauge(
            "governor_session_baseline_tokens_per_hour",
            "The loop-detector baseline those sessions are compared with",
            ["session_id", "workflow_tag"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "governor_circuit_breaker_open",
            "1 while a target's circuit breaker is open for any virtual model",
            ["target"],
            registry=r,
        )
        self.ledger_up = Gauge(
            "governor_ledger_up", "1 while the ledger database answers", registry=r
        )
        self.ledger_up.set(1)
        self.outage_policy = Gauge(
            "governor_limits_outage_policy_active",
            "1 while shared limits are decided by limits_outage_policy (database unreachable)",
            registry=r,
        )
        # One series per virtual model: its latest version pair (controlroom.drift_watch).
        self.tokenizer_drift = Gauge(
            "governor_tokenizer_drift_pct",
            "Input tokens of a virtual model's newest model version vs the previous one on the "
            "same prompts, in % (the tokenizer_drift alert)",
            ["virtual_model", "from_version", "to_version"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "governor_breaker_state",
            "Circuit breaker of a target as routed by a virtual model: 0 closed, 1 half-open "
            "(probing), 2 open",
            ["virtual_model", "target"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "governor_breaker_transitions_total",
            "Circuit breaker transitions, by the phase entered",
            ["virtual_model", "target", "phase"],
            registry=r,
        )
        self._cache: dict[tuple[object, ...], object] = {}
        self._projects: frozenset[str] | None = None  # None: not bound to a config yet
        self._models: frozenset[str] = frozenset()
        self._unlisted: set[str] = set()
        self._codes: set[str] = set()

    def bound_to(self, config: GatewayConfig) -> None:
        """The label values callers may put on a series: those `config` names."""
        s = config.settings
        projects = {s.untagged_project, *s.metrics_label_allowlist}
        for k in config.keys_by_hash.values():
            projects.update(p for p in (k.project, k.default_project) if p)
        selectors = [b.scope.metadata for b in config.budgets]
        selectors += [r.when.metadata for r in config.rate_limits]
        projects.update(m["project"] for m in selectors if "project" in m)
        for docs in config.extra.values():
            for doc in docs:
                for rule in getattr(doc, "rules", ()):
                    when = getattr(getattr(rule, "when", None), "metadata", None) or {}
                    projects.update(when.get("project", ()))
        models = {*config.virtual_models, *s.metrics_label_allowlist}
        for price in config.prices.values():
            models.add(price.model)
            models.update(v.version for v in price.versions)
        self._projects, self._models = frozenset(projects), frozenset(models)

    def project(self, value: str) -> str:
        return value if self._projects is None or value in self._projects else "other"

    def model(self, value: str) -> str:
        """A virtual model: one the config names, else `other`."""
        return value if not self._models or value in self._models else "other"

    def version(self, value: str) -> str:
        """A model version an upstream reported: one the pricing catalog names, or one of the
        first `MAX_UNLISTED_VERSIONS` others seen (new versions appear before the catalog
        lists them); beyond that `other`."""
        if not self._models or value in self._models or value in self._unlisted:
            return value
        if len(self._unlisted) < MAX_UNLISTED_VERSIONS:
            self._unlisted.add(value)
            return value
        return "other"

    def code(self, value: str, upstream: bool = False) -> str:
        """A refusal code as a label: Governor's own codes as they are; one an upstream chose
        (`Refusal.upstream`), cut to `MAX_CODE_CHARS`, while it is one of the first
        `MAX_REFUSAL_CODES` distinct such codes, else `other`."""
        if not upstream:
            return value
        value = value[:MAX_CODE_CHARS]
        if value in self._codes:
            return value
        if len(self._codes) < MAX_REFUSAL_CODES:
            self._codes.add(value)
            return value
        return "other"

    def set_budgets(self, budgets: Sequence[Budget], spend: Mapping[BudgetKey, float],
                    now: float) -> None:
        """Every budget's gauge from the current windows' spend: present from start-up."""
        for b in budgets:
            key = (b.id, calendar_window(now, b.window)[0])
            self.child(self.budget_used, b.id, budget_scope_label(b)).set(
                100.0 * spend.get(key, 0.0) / b.ceiling_usd
            )

    def forget_breakers(self, pairs: set[tuple[str, str]]) -> None:
        """After a reload: drop the breaker series of (virtual model, target) pairs not in
        `pairs` (what the new config routes), and the per-target ones of targets it no longer
        routes, so reloads that rename targets do not add series for good."""
        targets = {t for _, t in pairs}
        by_pair = (id(self.breaker_state), id(self.breaker_transitions))
        for key in list(self._cache):
            metric: object
            if key[0] in by_pair:
                gone = (key[1], key[2]) not in pairs
                metric = self.breaker_state if key[0] == by_pair[0] else self.breaker_transitions
            elif key[0] == id(self.breaker_open):
                gone, metric = key[1] not in targets, self.breaker_open
            else:
                continue
            if gone:
                del self._cache[key]
                metric.remove(*key[1:])  # type: ignore[attr-defined]

    def child(self, metric: object, *labels: str):  # type: ignore[no-untyped-def]
        key = (id(metric), *labels)
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = metric.labels(*labels)  # type: ignore[attr-defined]
        return c
