"""Prometheus metrics of governed calls, shared by the proxy and the workers.

Label sets are bounded by config (virtual models, targets, projects, teams, budgets), never by
session or user ids. Children are cached so the hot path does a dict lookup, not a label parse.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
            "governor_cost_usd_total", "Spend in USD", ["project", "team", "model"], registry=r
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
        self.loop_detections = Counter(
            "governor_loop_detections_total", "Runaway sessions detected, by signal and action",
            ["kind", "action"], registry=r)
        self.ledger_pending = Gauge(
            "governor_ledger_pending_rows",
            "Ledger rows journaled but not yet in the database",
            registry=r,
        )
        self.guardrail_events = Counter(
            "governor_guardrail_events_total",
            "Guardrail events by type, hook and action",
            ["type", "hook", "action"],
            registry=r,
        )
        self._cache: dict[tuple[object, ...], object] = {}

    def child(self, metric: object, *labels: str):  # type: ignore[no-untyped-def]
        key = (id(metric), *labels)
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = metric.labels(*labels)  # type: ignore[attr-defined]
        return c
