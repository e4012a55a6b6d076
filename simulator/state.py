"""Per-app simulator state: catalog index, faults, prompt cache, request counters."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from typing import Any

from aiohttp import web

from simulator.faults import FaultBook
from simulator.models import ModelSpec, SimConfig, model_index
from simulator.prompt_cache import PromptCache


class SimState:
    """Everything a simulator app remembers between requests."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.index: dict[str, ModelSpec] = model_index(config.models)
        self.faults = FaultBook(config)
        self.cache = PromptCache()
        self.requests: Counter[str] = Counter()
        self.by_endpoint: Counter[str] = Counter()
        self.faulted: Counter[str] = Counter()
        # Requests being answered right now (a disconnected client's request leaves at once).
        self.in_flight = 0
        # Streams whose client closed the request before the last event (newest last).
        self.cancelled: list[dict[str, Any]] = []  # the last 100
        self.cancelled_total = 0
        # The last request body each model received, as sent (what a proxy forwarded): one per
        # model, so bounded by the catalog.
        self.last_request: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()

    def new_id(self, prefix: str) -> str:
        """Unique per process and app: `chatcmpl-sim...`, `msg_sim...`, `toolu_sim...`."""
        return f"{prefix}sim{self._prefix}{next(self._ids):012x}"

    def count(self, spec: ModelSpec, endpoint: str) -> None:
        self.requests[spec.name] += 1
        self.by_endpoint[endpoint] += 1

    def record_cancel(self, path: str, events_sent: int, events_total: int, at: float) -> None:
        self.cancelled.append(
            {"path": path, "events_sent": events_sent, "events_total": events_total, "at": at}
        )
        del self.cancelled[:-100]
        self.cancelled_total += 1

    def stats(self) -> dict[str, Any]:
        return {
            "simulated": True,
            "total": sum(self.requests.values()),
            "requests": dict(self.requests),
            # Same counts under a self-describing name (callers outside this package use it).
            "requests_by_model": dict(self.requests),
            "by_endpoint": dict(self.by_endpoint),
            "faults_injected": dict(self.faulted),
            "in_flight": self.in_flight,
            "cancelled": self.cancelled_total,
            "cancelled_requests": list(self.cancelled),
            "active_fault_rules": [rule.to_json() for rule in self.faults.rules],
        }

    def reset_stats(self) -> None:
        self.requests.clear()
        self.by_endpoint.clear()
        self.faulted.clear()
        self.cancelled.clear()
        self.cancelled_total = 0


STATE_KEY: web.AppKey[SimState] = web.AppKey("governor_sim_state", SimState)
