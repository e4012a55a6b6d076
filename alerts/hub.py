"""Where alerts from both sources meet: silences, deduplication, the runbook workflow.

The embedded source (Governor's own signals: loop detector, budget thresholds, guardrail events,
untagged spend, breakers, ledger health) calls the `on_*` methods on the request path: each is a
few dict operations, and any Temporal call happens in a background task. Alertmanager's webhook
calls `fire_async` / `resolve_async`. Both compute the same deduplication key and
signal-with-start the `RunbookWorkflow` whose id is that key, so one alert runs one runbook
however many times and from however many sources it fires.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from activities.metrics import budget_scope_label
from ledger.alert_store import (
    active_silences,
    add_silence,
    add_to_counter,
    budget_alerts_since,
    notification_keys_since,
    prune_counters,
)
from policies.alerts import (
    AlertRule,
    Silence,
    dedup_key,
    guardrail_class,
    rules_of,
    silenced,
    subscribed_targets,
)
from policies.loops import rate_baseline, token_rate

if TYPE_CHECKING:
    from activities.gateway import Gateway
    from activities.loop_guard import LoopVerdict
    from controlroom.drift import Drift
    from policies.config.models import Budget
    from policies.identity import Identity

log = logging.getLogger("governor.alerts")

COALESCE_SECONDS = 5.0  # one signal per alert key per this many seconds from the hot path
DRIFT_EVERY = 300  # ticks (seconds) between tokenizer-drift checks (controlroom.drift_watch)
HEALTH_KEEPALIVE_SECONDS = 60.0  # a self-health alert that lasts signals its runbook this often
SWEEP_EVERY_TICKS = 30  # budget notifications never handed to Temporal: looked for this often
SWEEP_SINCE_SECONDS = 2 * 86400.0
SWEEP_GRACE_SECONDS = 60.0  # a crossing this recent is still being handed over by its call
UNTAGGED_PUSH_SECONDS = 1.0  # a replica adds its untagged spend to the shared total this often
PENDING_WAIT_SECONDS = 5.0  # an Alertmanager delivery waits at most this for the same key's
# embedded hand-overs (Alertmanager's webhook timeout is 10 s by default)
DROP_LOG_SECONDS = 10.0  # dropped firings are logged at most this often (with their count)
HANDOVER_RETRY_FIRST = 2.0  # a hand-over the Temporal server did not take: retried after this,
HANDOVER_RETRY_SECONDS = 3600.0  # doubling to 30 s, for up to an hour
_TYPE_FILTER = re.compile(r"""type\s*=\s*['"](\w+)['"]""")


@dataclass
class FireResult:
    key: str
    run_id: str | None = None
    silenced_by: int | None = None
    rule_known: bool = True


@dataclass
class AlertHub:
    gw: Gateway
    client: Any  # temporalio.client.Client
    task_queue: str
    auto_resolve_seconds: float = 3600.0
    silences: list[Silence] = field(default_factory=list)
    _rules_for: object = None
    _rules: dict[str, AlertRule] = field(default_factory=dict)
    _by_signal: dict[str, list[AlertRule]] = field(default_factory=dict)
    _recent: dict[str, float] = field(default_factory=dict)
    _budget_fired: set[tuple[str, str, float]] = field(default_factory=set)
    _untagged_pending: dict[tuple[str, int], float] = field(default_factory=dict)
    _untagged_fired: set[tuple[str, str, int, float]] = field(default_factory=set)
    _untagged_task: asyncio.Task[None] | None = None
    _pruned_day: int = -1
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Keyed hand-overs to Temporal ((op, alert key) -> how to start it): those running, bounded
    # by `alert_max_running`, and those waiting, in order, bounded by `alert_max_queued`.
    _running: dict[tuple[str, str], asyncio.Task[Any]] = field(default_factory=dict)
    _waiting: dict[tuple[str, str], Callable[[], Coroutine[Any, Any, Any]]] = field(
        default_factory=dict)
    # Waiting hand-overs of caller-chosen keys by the rule (group) they belong to: the queue's
    # bound applies per rule, so one rule's flood (runaway sessions) cannot crowd out another's
    # (a leaked secret), and to all rules together (`alert_max_queued_total`, so the number of
    # rules does not multiply it): `len(_group_of)` is that total.
    _group_of: dict[tuple[str, str], str] = field(default_factory=dict)
    _queued_in: dict[str, int] = field(default_factory=dict)
    # How long an Alertmanager delivery waits, in all, for its alerts' embedded hand-overs.
    pending_wait_seconds: float = PENDING_WAIT_SECONDS
    dropped: int = 0  # firings of a new alert key refused because the queue was full
    # Per bound ('rule', 'total'): drops since its last warning, and when that was.
    _dropped_unlogged: dict[str, int] = field(default_factory=dict)
    _dropped_logged_at: dict[str, float] = field(default_factory=dict)
    _backlog: list[int] = field(default_factory=list)
    _health: dict[str, float] = field(default_factory=dict)  # firing self-health rule -> last fire
    _health_seen: set[str] = field(default_factory=set)  # self-health rules checked once
    _gauged: set[tuple[str, str]] = field(default_factory=set)
    _silences_at: float = -1e9

    # Rules -----------------------------------------------------------------------------------

    def rules(self) -> dict[str, AlertRule]:
        cfg = self.gw.base_config or self.gw.config
        if self._rules_for is not cfg.extra:
            rules = rules_of(cfg.extra)
            self._rules = {r.name: r for r in rules}
            by: dict[str, list[AlertRule]] = {}
            for r in rules:
                by.setdefault(r.embedded_source.signal, []).append(r)
            self._by_signal = by
            self._rules_for = cfg.extra
        return self._rules

    def _signal(self, name: str) -> list[AlertRule]:
        self.rules()
        return self._by_signal.get(name, [])

    # Firing ----------------------------------------------------------------------------------

    def fire(self, name: str, labels: dict[str, str], source: str = "embedded",
             confident: bool | None = None, *, droppable: bool = True) -> bool:
        """Non-blocking (request path): coalesced per key, started in the background. False
        when it was dropped (`_submit`): not coalesced then, its next firing tries again."""
        rule = self.rules().get(name)
        if rule is None:
            return True
        key = dedup_key(rule, labels)
        now = time.monotonic()
        last = self._recent.get(key)
        if last is not None and now - last < COALESCE_SECONDS:
            return True
        if len(self._recent) > 10_000:
            self._recent.clear()
        self._recent[key] = now
        if self._submit("fire", key, lambda: self.fire_async(name, labels, source, confident),
                        droppable=droppable, group=rule.name):
            return True
        del self._recent[key]
        return False

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _submit(self, op: str, key: str, start: Callable[[], Coroutine[Any, Any, Any]], *,
                droppable: bool = True, group: str = "") -> bool:
        """Hand `op` ('fire' or 'resolve') of alert `key` to Temporal in the background, within
        bounds: at most `alert_max_running` at once; then up to `alert_max_queued` wait, run in
        order, one op of one key at a time. The same op of a key already waiting merges into
        it (its latest arguments win: one signal-with-start delivers both); after the opposite
        op of that key it waits anew, behind it. Past the queue's bound an alert whose key runs
        or waits still waits (a firing of an alert already in hand is never lost), and so does
        one not `droppable`: alerts whose keys the config bounds (budgets, breakers, tokenizer
        drift, self-health, untagged spend). A new key callers choose (a runaway session, a
        leaked secret's project) waits while fewer than `alert_max_queued` of its `group` (its
        rule) and fewer than `alert_max_queued_total` of all groups wait; past either it is
        dropped, logged and counted (`governor_alerts_dropped_total{bound}`): returns False.
        So waiting hand-overs number at most `min(alert_max_queued per rule,
        alert_max_queued_total)` plus the config-bounded keys."""
        k = (op, key)
        other = ("resolve" if op == "fire" else "fire", key)
        if k in self._waiting and other not in self._waiting:
            self._waiting[k] = start  # merged: keeps its place
            return True
        self._unwait(k)
        settings = self.gw.config.settings
        known = other in self._waiting or k in self._running or other in self._running
        if droppable and not known and len(self._running) >= settings.alert_max_running:
            if self._queued_in.get(group, 0) >= settings.alert_max_queued:
                self._drop(key, "rule")
                return False
            if len(self._group_of) >= settings.alert_max_queued_total:
                self._drop(key, "total")
                return False
            self._group_of[k] = group
            self._queued_in[group] = self._queued_in.get(group, 0) + 1
        self._waiting[k] = start
        self._pump()
        return True

    def _unwait(self, k: tuple[str, str]) -> Callable[[], Coroutine[Any, Any, Any]] | None:
        """Take `k` off the waiting queue (and its rule's count); its start, if it waited."""
        group = self._group_of.pop(k, None)
        if group is not None:
            left = self._queued_in[group] - 1
            if left:
                self._queued_in[group] = left
            else:
                del self._queued_in[group]
        return self._waiting.pop(k, None)

    def _pump(self) -> None:
        """Start waiting hand-overs, oldest first, while fewer than `alert_max_running` run
        (never two of one key at once: a fire and a resolve keep their order)."""
        limit = self.gw.config.settings.alert_max_running
        if len(self._running) >= limit or not self._waiting:
            return
        busy = {key for _, key in self._running}
        for k in list(self._waiting):
            if len(self._running) >= limit:
                break
            if k[1] in busy:
                continue
            start = self._unwait(k)
            assert start is not None
            busy.add(k[1])
            task = self._spawn(self._handover(k, start))
            self._running[k] = task
            task.add_done_callback(lambda _t, k=k: self._finished(k))

    async def _handover(self, k: tuple[str, str],
                        start: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run one hand-over; while the Temporal server does not answer (beyond the client's
        own RPC retries, about 10 s), try again (2 s doubling to 30 s, for up to
        HANDOVER_RETRY_SECONDS): many embedded signals fire once (a breaker's transition, a
        budget threshold, untagged spend claimed in the ledger), so giving up at the first
        failure lost them. The key stays in hand meanwhile: later firings merge behind it and
        a resolution keeps its order."""
        from temporalio.service import RPCError, RPCStatusCode

        # The server is away or overloaded (not an answer about the alert): worth retrying.
        away = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
                RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED,
                RPCStatusCode.INTERNAL, RPCStatusCode.UNKNOWN}
        delay, end = HANDOVER_RETRY_FIRST, time.monotonic() + HANDOVER_RETRY_SECONDS
        while True:
            try:
                return await start()
            except RPCError as exc:
                if exc.status not in away or time.monotonic() + delay > end:
                    raise
                log.warning("alert %s of %.200s not handed to Temporal (%s); retrying in "
                            "%.0f s", k[0], k[1], exc.status.name if exc.status else "error",
                            delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 30.0)

    def _finished(self, k: tuple[str, str]) -> None:
        self._running.pop(k, None)
        self._pump()

    def _drop(self, key: str, bound: str) -> None:
        """Count and (at most once per DROP_LOG_SECONDS per bound) log a refused new key;
        `bound` is the one it met: 'rule' (`alert_max_queued`) or 'total'."""
        self.dropped += 1
        unlogged = self._dropped_unlogged[bound] = self._dropped_unlogged.get(bound, 0) + 1
        self.gw.metrics.alerts_dropped.labels(bound).inc()
        now = time.monotonic()
        if now - self._dropped_logged_at.get(bound, -1e9) >= DROP_LOG_SECONDS:
            s = self.gw.config.settings
            limit = (f"alert_max_queued={s.alert_max_queued} of its rule" if bound == "rule"
                     else f"alert_max_queued_total={s.alert_max_queued_total} of all rules")
            log.warning("alert %.200s not started: %d alert(s) already waiting for Temporal "
                        "(%s, alert_max_running=%d); %d dropped at this bound since its last "
                        "such warning", key, len(self._waiting), limit, s.alert_max_running,
                        unlogged)
            self._dropped_unlogged[bound] = 0
            self._dropped_logged_at[bound] = now

    def _done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("alert not started: %s", type(t.exception()).__name__)

    async def fire_async(self, name: str, labels: dict[str, str], source: str,
                         confident: bool | None = None) -> FireResult:
        from temporalio.common import WorkflowIDReusePolicy

        from workflows.runbook import RunbookWorkflow
        from workflows.runbook_models import RunbookInput, Seen

        rule = self.rules().get(name)
        known = rule is not None
        if rule is None:  # an Alertmanager alert Governor has no rule for: notify + acknowledge
            rule = AlertRule(name=name if re.match(r"^\w+$", name) else "external",
                             query="(external)", identify=tuple(sorted(labels)))
        labels = {k: v for k, v in labels.items() if isinstance(v, str)}
        key = dedup_key(rule, labels)
        if time.monotonic() - self._silences_at > 1.0:
            try:
                await self.refresh_silences()
            except Exception as exc:  # the ledger is down: the last known silences hold
                log.warning("silences not refreshed: %s", type(exc).__name__)
        s = silenced(self.silences, rule.name, labels, time.time())
        if s is not None:
            log.info("alert %s silenced by silence #%d (%s)", key, s.id, s.actor)
            return FireResult(key, silenced_by=s.id, rule_known=known)
        if confident is None:
            confident = self._confidence(rule, labels)
        if not rule.notify:
            subscribed = subscribed_targets(self.gw.config.extra, rule.name)
            if subscribed:
                rule = rule.model_copy(update={"notify": subscribed})
        inp = RunbookInput(key=key, rule=rule, labels=labels, source=source, confident=confident,
                           auto_resolve_seconds=self.auto_resolve_seconds)
        handle = await self.client.start_workflow(
            RunbookWorkflow.run, inp, id=key, task_queue=self.task_queue,
            start_signal="seen", start_signal_args=[Seen(source=source)],
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        return FireResult(key, run_id=handle.result_run_id, rule_known=known)

    async def start_notification(self, key: str, title: str, body: str,
                                 targets: list[str], attempts: int = 8) -> str | None:
        """Hand a notification to a NotifyWorkflow (id `notify-<key>`: started once however
        many replicas or retries ask). Retries reaching Temporal with backoff (1 s doubling,
        `attempts` times); returns the run id, or None when it is already started or Temporal
        stayed unreachable (logged)."""
        from temporalio.common import WorkflowIDReusePolicy
        from temporalio.exceptions import WorkflowAlreadyStartedError

        from workflows.notify import NotifyWorkflow
        from workflows.runbook_models import NotifyInput

        inp = NotifyInput(key=key, title=title, body=body, targets=tuple(targets))
        delay = 1.0
        for n in range(attempts):
            try:
                h = await self.client.start_workflow(
                    NotifyWorkflow.run, inp, id=f"notify-{key}", task_queue=self.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
                return h.result_run_id
            except WorkflowAlreadyStartedError:
                return None
            except Exception as exc:
                log.warning("notification %s not handed to Temporal (attempt %d/%d): %s", key,
                            n + 1, attempts, type(exc).__name__)
                if n + 1 < attempts:
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 60.0)
        return None

    async def resolve_async(self, name: str, labels: dict[str, str], source: str) -> str | None:
        """Resolve the alert's runbook: its key, or None when no runbook runs for it (the
        server answered NOT_FOUND). A server that fails otherwise raises its RPCError: the
        resolution was not delivered (the webhook answers 503, Alertmanager sends it again)."""
        from temporalio.service import RPCError, RPCStatusCode

        from workflows.runbook import RunbookWorkflow
        from workflows.runbook_models import Seen

        key = self.key_of(name, labels)
        try:
            await self.client.get_workflow_handle(key).signal(RunbookWorkflow.resolved,
                                                              Seen(source=source))
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return None  # no runbook running for it: nothing to resolve
        return key

    def key_of(self, name: str, labels: dict[str, str]) -> str:
        """The alert key of rule `name` with `labels` (an Alertmanager alert Governor has no
        rule for is keyed by all its labels, as `fire_async` and `resolve_async` key it)."""
        rule = self.rules().get(name) or AlertRule(
            name=name if re.match(r"^\w+$", name) else "external", query="(external)",
            identify=tuple(sorted(labels)))
        return dedup_key(rule, {k: v for k, v in labels.items() if isinstance(v, str)})

    def pending_deadline(self) -> float:
        """The monotonic time an Alertmanager delivery stops waiting for pending hand-overs
        (`after_pending`): one bound for the whole delivery, however many alerts it holds."""
        return time.monotonic() + self.pending_wait_seconds

    async def after_pending(self, key: str, until: float | None = None) -> bool:
        """Wait, until `until` at most (default: `pending_deadline()`), until no embedded
        hand-over of alert `key` runs or waits in the background queue (`_submit`), so that an
        Alertmanager firing or resolution of the same alert reaches Temporal after the embedded
        ones queued before it: the order the two sources saw it in (a resolution delivered
        first would be undone by a firing still queued). True when nothing was pending by
        then."""
        end = self.pending_deadline() if until is None else until
        while self._pending(key):
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.02)
        return True

    def _pending(self, key: str) -> bool:
        return any((op, key) in self._waiting or (op, key) in self._running
                   for op in ("fire", "resolve"))

    def _confidence(self, rule: AlertRule, labels: dict[str, str]) -> bool:
        """A runaway session's kill runs alone when the evidence is a repeated prompt or a
        trusted baseline (configured for the tag, or a p95 backed by enough sessions), as the
        loop detector itself decides; never on the default baseline."""
        ev = labels.get("evidence")
        if ev in ("repeat", "trusted_baseline"):
            return True
        sid = labels.get("session_id")
        settings = self.gw.config.settings
        tr = self.gw.loop_guard.sessions.get(sid or "")
        if tr is not None and tr.repeating(settings.loop_repeat_threshold):
            return True
        return self._baseline_source(labels.get("workflow_tag") or None) != "default"

    def _baseline_source(self, tag: str | None) -> str:
        """Where the loop detector's baseline for `tag` comes from (`policies.loops`): a
        configured or observed p95 is trusted, the default is not."""
        st = self.gw.config.settings
        p95, n = self.gw.loop_guard.baselines.get(tag)
        _, source = rate_baseline(p95, n, st.loop_min_sessions,
                                  st.loop_baselines.get(tag) if tag else None,
                                  st.loop_default_baseline_tokens_per_hour)
        return source

    # Silences --------------------------------------------------------------------------------

    async def add_silence(self, rule: str | None, matchers: dict[str, str], seconds: float,
                          actor: str, comment: str) -> Silence:
        now = time.time()
        rec = await add_silence(self.gw.store, rule=rule, matchers=matchers,
                                expires_ts=now + seconds, actor=actor, comment=comment, ts=now)
        s = _silence(rec)
        self.silences = [*self.silences, s]
        return s

    async def refresh_silences(self) -> None:
        self.silences = [_silence(r) for r in await active_silences(self.gw.store, time.time())]
        self._silences_at = time.monotonic()

    # Embedded signals (request path: cheap, never blocking) ---------------------------------

    def on_loop(self, v: LoopVerdict, ident: Identity | None) -> None:
        for rule in self._signal("loop_detector"):
            labels = {"session_id": v.session_id, "evidence": v.kind}
            if ident is not None:
                labels.update(workflow_tag=ident.workflow_tag or "", team=ident.team,
                              project=ident.project)
                if v.kind == "rate":  # the detector's own rule, configured baselines too
                    source = self._baseline_source(ident.workflow_tag)
                    labels["evidence"] = loop_evidence_of_source(source)
            self.fire(rule.name, labels)

    def on_workflow_loop(self, session_id: str, reason: str) -> None:
        """A session workflow's own loop detector killed it: raise runaway_agent the same way
        (its runbook's kill step then finds the session already killed)."""
        rules = self._signal("loop_detector")
        if not rules:
            return
        known = {"session_id": session_id, "evidence": loop_evidence(reason)}

        async def go(rule: AlertRule) -> None:
            labels = dict(known)
            try:
                rec = await self.gw.store.get_session(session_id)
            except Exception:
                rec = None
            if rec is not None:
                labels.update(workflow_tag=rec.workflow_tag or "", team=rec.team,
                              project=rec.project)
            await self.fire_async(rule.name, labels, "embedded")

        for rule in rules:
            # Queued under the alert's own key where the labels known now identify it (the
            # default: session_id), so an Alertmanager resolution of it waits behind this
            # firing (`after_pending`); a rule identified by the session's looked-up labels
            # too gets a key of its own.
            if set(rule.identifying_labels) <= set(known):
                key = dedup_key(rule, known)
            else:
                key = f"workflow-loop:{rule.name}:{session_id}"
            self._submit("fire", key, lambda rule=rule: go(rule), group=rule.name)

    def on_budget(self, budget: Budget, window_start: float, pct: float) -> None:
        for rule in self._signal("budget_used_pct"):
            t = rule.embedded_source.threshold
            if t is None or pct <= t:
                continue
            scope = budget_scope_label(budget)
            if "scope='project'" in rule.query.replace('"', "'") and scope != "project":
                continue  # the rule selects project budgets only, as its query does
            mark = (rule.name, budget.id, window_start)
            if mark in self._budget_fired:
                continue
            if len(self._budget_fired) > 10_000:  # old windows' marks; the ledger dedups too
                self._budget_fired.clear()
            self._budget_fired.add(mark)
            labels = {"budget": budget.id, "scope": scope}
            project = budget.scope.metadata.get("project")
            if project:
                labels["project"] = project
            self.fire(rule.name, labels, droppable=False)

    def on_guardrail(self, detector: str, kind: str, hook: str, action: str,
                     metadata: dict[str, Any]) -> None:
        if action != "allowed":
            return
        cls = guardrail_class(detector)
        for rule in self._signal("guardrail_allowed"):
            m = _TYPE_FILTER.search(rule.query)
            if (m.group(1) if m else "secret") != cls:
                continue
            self.fire(rule.name, {"project": str(metadata.get("project") or "UNTAGGED"),
                                  "type": cls, "kind": kind, "hook": hook})

    def on_breaker(self, virtual_model: str, target: str) -> None:
        for rule in self._signal("breaker_open"):
            self.fire(rule.name, {"target": target, "virtual_model": virtual_model},
                      droppable=False)

    def on_breaker_closed(self, virtual_model: str, target: str) -> None:
        """The target's breaker closed (a half-open probe succeeded) and none is open for it
        on this replica: resolve its runbook, as the Prometheus rule over
        `governor_circuit_breaker_open` resolves. A replica whose breaker for the target is
        still open fires it again when that one opens anew (after its cooldown's probe)."""
        for rule in self._signal("breaker_open"):
            labels = {"target": target, "virtual_model": virtual_model}
            key = dedup_key(rule, labels)
            self._recent.pop(key, None)  # a breaker opening again at once fires again
            self._submit("resolve", key,
                         partial(self.resolve_async, rule.name, labels, "embedded"),
                         droppable=False)

    def on_spend(self, project: str, cost_usd: float, now: float) -> None:
        """Untagged spend (request path: a dict update). The replica's share is added to the
        ledger's shared total of the UTC day at most once a second, in the background, so the
        rule's threshold holds across replicas."""
        if not cost_usd or project != self.gw.config.settings.untagged_project:
            return
        if not self._signal("untagged_spend"):
            return
        k = (project, int(now // 86400))
        self._untagged_pending[k] = self._untagged_pending.get(k, 0.0) + cost_usd
        if self._untagged_task is None:
            self._untagged_task = asyncio.get_running_loop().create_task(self._push_untagged())
            self._tasks.add(self._untagged_task)
            self._untagged_task.add_done_callback(self._done)

    async def _push_untagged(self) -> None:
        """Add the pending shares to the shared totals; fire once per day when a total passes
        the rule's threshold. A ledger that does not answer keeps the shares for later."""
        wait = UNTAGGED_PUSH_SECONDS
        try:
            while self._untagged_pending:
                await asyncio.sleep(wait)
                pending, self._untagged_pending = self._untagged_pending, {}
                wait = UNTAGGED_PUSH_SECONDS
                for (project, day), delta in pending.items():
                    try:
                        total = await add_to_counter(self.gw.store,
                                                     f"untagged_spend:{project}:{day}", delta,
                                                     (day + 2) * 86400.0)
                    except Exception as exc:
                        log.warning("untagged spend not shared: %s", type(exc).__name__)
                        k = (project, day)
                        self._untagged_pending[k] = self._untagged_pending.get(k, 0.0) + delta
                        wait = min(30.0, 5 * UNTAGGED_PUSH_SECONDS)
                        continue
                    try:
                        await self._check_untagged(project, day, total)
                        if day != self._pruned_day:
                            self._pruned_day = day
                            await prune_counters(self.gw.store, day * 86400.0)
                    except Exception as exc:  # the next push checks again
                        log.warning("untagged spend not checked: %s", type(exc).__name__)
        finally:
            self._untagged_task = None

    async def _check_untagged(self, project: str, day: int, total: float) -> None:
        """Once the day's shared total is over a rule's threshold, the first replica to claim
        (rule, project, day, threshold) in the ledger fires: one alert across replicas, and a
        threshold lowered during the day still fires."""
        for rule in self._signal("untagged_spend"):
            t = rule.embedded_source.threshold
            mark = (rule.name, project, day, t or 0.0)
            if t is None or total <= t or mark in self._untagged_fired:
                continue
            claims = await add_to_counter(
                self.gw.store, f"untagged_fired:{rule.name}:{project}:{day}:{t:g}", 1.0,
                (day + 2) * 86400.0)
            if len(self._untagged_fired) > 256:
                self._untagged_fired.clear()
            self._untagged_fired.add(mark)
            if claims == 1.0:  # claimed once: not subject to the hot path's coalescing
                labels = {"project": project}
                self._submit("fire", dedup_key(rule, labels),
                             lambda r=rule.name, lb=labels: self.fire_async(r, lb, "embedded"),
                             droppable=False)  # claimed in the ledger: this replica fires it

    # Background: health, breakers, top-N sessions, silences ----------------------------------

    def start(self) -> None:
        self._spawn(self._run())

    async def close(self) -> None:
        """Stop the background work; the untagged spend not yet shared is added first (up to
        2 s)."""
        pending, self._untagged_pending = self._untagged_pending, {}
        for (project, day), delta in pending.items():
            try:
                await asyncio.wait_for(add_to_counter(
                    self.gw.store, f"untagged_spend:{project}:{day}", delta,
                    (day + 2) * 86400.0), 2.0)
            except Exception:
                log.warning("untagged spend of %s not shared at shutdown", project)
        self._waiting.clear()
        self._group_of.clear()
        self._queued_in.clear()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except BaseException:
                pass

    async def _run(self) -> None:
        n = 0
        while True:
            try:
                await self.tick(n)
            except Exception as exc:
                log.warning("alert health tick failed: %s", type(exc).__name__)
            n += 1
            await asyncio.sleep(1.0)

    async def tick(self, n: int) -> None:
        """Once a second: silences (which doubles as the ledger's health check), the outage
        policy, the journal backlog and, every other tick, the top-N session gauges."""
        gw = self.gw
        now = time.time()
        try:
            await self.refresh_silences()
            ledger_up = True
        except Exception:
            ledger_up = False
        gw.metrics.ledger_up.set(1 if ledger_up else 0)
        self._self_health("ledger_unreachable", not ledger_up)
        shared = getattr(gw, "shared", None)  # PostgreSQL ledgers: limits shared by leases
        in_outage = shared is not None and shared.in_outage()
        gw.metrics.outage_policy.set(1 if in_outage else 0)
        self._self_health("outage_policy", in_outage)
        pending = gw.writer.pending_count
        self._backlog = [*self._backlog[-4:], pending]
        b = self._backlog
        growing = len(b) >= 3 and b[-1] > b[-2] > b[-3]
        for rule in self._signal("journal_backlog"):
            t = rule.embedded_source.threshold
            t = 10_000 if t is None else t
            # Fires above the threshold while growing; resolves back at or below it (as the
            # Prometheus rule `governor_ledger_pending_rows > t` does).
            firing = rule.name in self._health
            self._health_rule(rule, pending > t and (growing or firing))
        if n % 2 == 0:  # the top-N session gauges, every 2 s
            self.update_session_gauges(now)
        if n % DRIFT_EVERY == DRIFT_EVERY // 2 and self._signal("tokenizer_drift"):
            self._spawn(self._check_drift())  # a ledger read: off the tick
        if n % SWEEP_EVERY_TICKS == 0:
            try:
                await self.sweep_budget_notifications(now)
            except Exception as exc:  # the ledger is away: the next sweep looks again
                log.warning("budget notification sweep failed: %s", type(exc).__name__)

    async def sweep_budget_notifications(self, now: float) -> int:
        """Budget thresholds crossed in the last two days whose `notify:` was never attempted
        (the replica died, or Temporal stayed away, between recording the crossing and starting
        its NotifyWorkflow): start it now. Idempotent: the workflow id and the delivery's
        idempotency key make a second start or send a no-op. Returns how many were started."""
        from alerts.notify import budget_message

        targets = {(b.id, float(a.at_pct)): tuple(a.notify)
                   for b in (self.gw.base_config or self.gw.config).budgets
                   for a in b.alerts if a.notify}
        if not targets:
            return 0
        since = now - SWEEP_SINCE_SECONDS
        tried = await notification_keys_since(self.gw.store, "budget-", since)
        started = 0
        for row in await budget_alerts_since(self.gw.store, since):
            ts_ = targets.get((row["budget_id"], float(row["at_pct"])))
            if not ts_ or row["ts"] > now - SWEEP_GRACE_SECONDS:
                continue
            key, title, body = budget_message(row["window_key"], row["at_pct"],
                                              row["spent_usd"], row["ceiling_usd"])
            if any(f"{key}:{t}" in tried for t in ts_):
                continue
            if await self.start_notification(key, title, body, list(ts_), attempts=1):
                started += 1
        return started

    async def _check_drift(self) -> None:
        from controlroom.drift_watch import check_tokenizer_drift

        await check_tokenizer_drift(self.gw)

    def on_tokenizer_drift(self, d: Drift) -> None:
        """A virtual model's newer version costs more tokens on the same prompts."""
        for rule in self._signal("tokenizer_drift"):
            self.fire(rule.name, {
                "virtual_model": d.virtual_model, "from_version": d.from_version,
                "to_version": d.to_version, "from_model": d.from_model, "to_model": d.to_model,
                "drift_pct": f"{d.drift_pct:.1f}", "common_prompts": str(d.common_prompts)},
                droppable=False)

    def _self_health(self, signal: str, bad: bool) -> None:
        for rule in self._signal(signal):
            self._health_rule(rule, bad)

    def _health_rule(self, rule: AlertRule, bad: bool) -> None:
        """Self-health alerts signal the runbook on a change only: fire when the condition
        starts, resolve when it ends. While it lasts, one keep-alive `seen` a minute (at most a
        quarter of `auto_resolve_seconds`) keeps the runbook from resolving itself for want of
        repeats, and restarts it within a minute if another replica, healthy again, resolved
        it (one runbook per rule serves every replica)."""
        now = time.monotonic()
        last = self._health.get(rule.name)
        keep_alive = min(HEALTH_KEEPALIVE_SECONDS, self.auto_resolve_seconds / 4)
        key = dedup_key(rule, {})
        if bad and (last is None or now - last >= keep_alive):
            self._health[rule.name] = now
            self._submit("fire", key, lambda: self.fire_async(rule.name, {}, "embedded"),
                         droppable=False)
        elif not bad and (last is not None or rule.name not in self._health_seen):
            # Healthy again, or healthy at this runtime's first look: a runbook left open by a
            # replica that restarted after recovering is resolved (a replica still unhealthy
            # starts it again at its next keep-alive).
            self._health.pop(rule.name, None)
            self._submit("resolve", key, lambda: self.resolve_async(rule.name, {}, "embedded"),
                         droppable=False)
        self._health_seen.add(rule.name)

    def update_session_gauges(self, now: float) -> None:
        """Top-N sessions above their baseline, for the runaway_agent rule in Prometheus."""
        gw, settings = self.gw, self.gw.config.settings
        rows = []
        for sid, tr in gw.loop_guard.sessions.items():
            tag = tr.workflow_tag
            rate = token_rate(tr.events, now, settings.loop_window_seconds)
            p95, count = gw.loop_guard.baselines.get(tag)
            base = p95 if p95 is not None and count >= settings.loop_min_sessions else (
                settings.loop_default_baseline_tokens_per_hour)
            if rate > base:
                rows.append((rate / base, sid, tag or "", rate, base))
        rows.sort(reverse=True)
        top = rows[: settings.alert_top_sessions]
        keep = {(sid, tag): (rate, base) for _, sid, tag, rate, base in top}
        m = gw.metrics
        for labels in self._gauged - set(keep):
            for g in (m.session_rate, m.session_baseline):
                try:
                    g.remove(*labels)
                except KeyError:
                    pass
        for (sid, tag), (rate, base) in keep.items():
            m.session_rate.labels(sid, tag).set(rate)
            m.session_baseline.labels(sid, tag).set(base)
        self._gauged = set(keep)


def _silence(rec: Any) -> Silence:
    return Silence(id=rec.id or 0, rule=rec.rule, matchers=orjson.loads(rec.matchers),
                   expires_ts=rec.expires_ts, actor=rec.actor, comment=rec.comment)


def loop_evidence_of_source(source: str) -> str:
    """A rate kill's evidence label from its baseline's source (`policies.loops.rate_baseline`):
    an observed or configured p95 is trusted, the default is not."""
    return "default_baseline" if source == "default" else "trusted_baseline"


def loop_evidence(reason: str) -> str:
    """The evidence of a session workflow's loop kill, from its recorded reason
    (`policies.loops.repeat_reason` / `rate_reason`, which name the baseline's source)."""
    if "same prompt" in reason:
        return "repeat"
    m = re.search(r"the (\w+) p95 baseline", reason)
    return loop_evidence_of_source(m.group(1) if m else "default")
