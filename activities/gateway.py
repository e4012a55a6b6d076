"""One governance runtime: config, in-memory counters, router, ledger writer, metrics.

A proxy replica holds one; a Temporal worker holds one for its activities. Both run the same
governed call (`activities.llm_call`) against it, so there is one implementation of each control.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.idempotency import IdempotencyRecords, TurnKeys
from activities.idle_sweep import IdleSweeper
from activities.loop_guard import LoopGuard, LoopVerdict
from activities.metrics import Metrics
from activities.overrides import poll_overrides
from activities.rate_counters import read_live
from activities.router import Router
from activities.session_owners import SessionOwners
from activities.shared_limits import SharedLimits
from activities.state import GovernanceState, OutputEstimates, SessionTotals
from activities.stream_stop import StreamRegistry
from audit.versions import AppliedVersions
from ledger.errors import LedgerUnavailable
from ledger.journal import Journal
from ledger.models import CLOSE_ACTOR, KillRecord
from ledger.session_store import unsettled_streams
from ledger.snapshot import Snapshot, load_snapshot, save_snapshot_off_loop
from ledger.store import LedgerStore
from ledger.writer import LedgerWriter
from policies import breaker
from policies.budgets import BudgetKey, budget_statuses
from policies.config.gateway import GatewayConfig
from policies.config.models import ApiKey, Budget
from policies.identity import Identity
from policies.matching import selector_dims, selector_values
from policies.overrides import Override, apply_overrides
from policies.refusals import Refusal
from policies.windows import calendar_window

log = logging.getLogger("governor.gateway")

KillHook = Callable[[str, str, str], Awaitable[None]]
# What `GovernanceState.killed` holds for a closed session (a kill holds its reason there).
CLOSED = "\x00closed"

SYNC_BUCKET = 10.0  # seconds per bucket of the budget re-sync query
SYNC_SETTLE = 5.0  # calls older than this are folded into the settled base (other
# runtimes flush every 20 ms; a later straggler is caught by the next full re-read)
FULL_SYNC_EVERY = 60  # syncs between full re-reads (5 min at the default interval)
# A reservation whose call never ended (a stream dropped before its first byte was read) is
# released after this long, so a leak cannot tighten a limit for good. Longer than any
# per-target timeout (600 s) and than ordinary streams.
STALE_RESERVATION_SECONDS = 1800.0
REBUILD_DAYS = 32  # how far back a rebuild reads session totals


_BREAKER_GAUGE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def hash_key(secret: str) -> str:
    """How API keys are stored: never in clear. Keys are high-entropy, so one sha256 suffices."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Gateway:
    config: GatewayConfig
    store: LedgerStore
    writer: LedgerWriter
    path: str = "proxy"
    state: GovernanceState = field(default_factory=GovernanceState)
    metrics: Metrics = field(default_factory=Metrics)
    router: Router = field(init=False)
    owners: SessionOwners = field(init=False)
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    idempotency: IdempotencyRecords = field(default_factory=IdempotencyRecords)
    turn_keys: TurnKeys = field(default_factory=TurnKeys)  # Idempotency-Key on session turns
    # Set where the runtime has a Temporal client (`governor up`): starts and reaches session
    # workflows for `POST /gateway/sessions` (a `proxy.sessions.SessionWorkflows`).
    session_workflows: Any = None
    kill_hooks: list[KillHook] = field(default_factory=list)
    loop_guard: LoopGuard = field(default_factory=LoopGuard)
    output_estimates: OutputEstimates = field(default_factory=OutputEstimates)
    shared: SharedLimits | None = None  # PostgreSQL ledgers: ceilings shared by leases
    config_dir: Path | None = None
    # Alerts (alerts.hub.AlertHub, set where a Temporal client exists) and the runtime policy
    # overrides runbooks made: `config` = `base_config` (the repository's) + `overrides`.
    alerts: Any = None
    base_config: GatewayConfig | None = None
    overrides: tuple[Override, ...] = ()
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _last_kill_id: int = 0
    _key_cache: dict[str, ApiKey] = field(default_factory=dict)
    fingerprint_salt: bytes | None = None  # set by activities.guardrails.gateway_salt
    classifiers: Any = None  # activities.classifiers.ClassifierRuntime, made on first use
    archive: Any = None  # audit.archive.Archive (activities.archive_session.attach_archive)
    sweeper: IdleSweeper = field(default_factory=IdleSweeper)
    _settled: dict[BudgetKey, float] = field(default_factory=dict)
    _settled_until: float | None = None
    _settled_for: list[Budget] | None = None  # the budgets `_settled` was read for
    _writes_seen: tuple[int, int] | None = None
    # The applied config's version (`audit.versions`): hashed when a config is applied, copied
    # into every call row this runtime decides.
    config_version: str = ""
    versions: AppliedVersions = field(default_factory=AppliedVersions)

    def __post_init__(self) -> None:
        self.config_version = self.versions.applied(self.config, "start", time.time())
        self.router = Router(self.config.providers)
        self.owners = SessionOwners(self.store)
        self._bound_idempotency()
        self._bound_sessions()
        self.metrics.bound_to(self.config)
        self.router.on_breaker = self._breaker_moved

    def _breaker_moved(self, vm: str, target: str, phase: str) -> None:
        """Every circuit breaker transition: a log line, a gauge, a counter."""
        m = self.metrics
        m.child(m.breaker_state, vm, target).set(_BREAKER_GAUGE[phase])
        m.child(m.breaker_open, target).set(1.0 if self._open_anywhere(target) else 0.0)
        m.child(m.breaker_transitions, vm, target, phase).inc()
        if phase == "open" and self.alerts is not None:
            self.alerts.on_breaker(vm, target)
        elif phase == "closed" and self.alerts is not None and not self._open_anywhere(target):
            self.alerts.on_breaker_closed(vm, target)
        log.warning("circuit breaker of %s (virtual model %s) is now %s", target, vm, phase)

    def _open_anywhere(self, target: str) -> bool:
        """Whether `target`'s breaker is open for any virtual model (breakers are per virtual
        model; the per-target gauge says whether any of them is open)."""
        now = time.time()
        vms = self.config.virtual_models
        for (name, key), st in self.router.breakers.items():
            vm = vms.get(name)
            if key == target and vm is not None and st.opened_at is not None:
                if breaker.phase(st, vm.circuit_breaker, now) == "open":
                    return True
        return False

    def _bound_idempotency(self) -> None:
        s = self.config.settings
        self.idempotency.configure(
            s.idempotency_ttl_seconds, s.idempotency_max_records, s.idempotency_max_response_bytes
        )
        self.turn_keys.configure(s.idempotency_ttl_seconds, s.idempotency_max_records)

    def _bound_sessions(self) -> None:
        """Per-caller memory bounded by count too (`max_sessions`, `max_killed_sessions`,
        `max_rate_counters`)."""
        s = self.config.settings
        self.sweeper.bind(self, s.max_sessions)
        counts = self.state.rate_counts
        counts.cap = s.max_rate_counters
        counts.trim()
        killed = self.state.killed
        killed.cap = s.max_killed_sessions
        killed.on_forget = self.owners.forget  # its next call asks the ledger again

    async def check_session(self, ident: Identity) -> str | None:
        """The session's owner (`SessionOwners.check`) and, when this runtime has dropped kills
        for its bound and does not know the session, its kill from the ledger: one round trip
        per session per runtime (with the owner's), so a killed session stays refused.
        Returns the session's kill reason (or CLOSED) when it is known to have ended: the
        caller keeps it for the call's decision (`CallRequest.ended`), since newer kills may
        push it out of the bounded kill list before the call is decided."""
        sid = ident.session_id
        if sid is None:
            return None
        killed = self.state.killed
        ended = killed.get(sid)
        if killed.forgotten and ended is None and self.owners.owner(sid) is None:
            # Asked before the owner is cached: a lookup that fails leaves the session unknown,
            # so its next call asks again (a cached owner would skip the check for good).
            try:
                rec = await self.store.kill_of(sid)
            except LedgerUnavailable:
                raise Refusal(
                    503, "ledger_unavailable",
                    f"session {sid!r} is not known to this replica and the ledger, which keeps "
                    "its kills, is unreachable; retry shortly",
                    retry_after=1,
                ) from None
            if rec is not None:
                self.mark_ended(rec)
                ended = killed.get(sid)
        await self.owners.check(ident)
        return ended

    @classmethod
    async def open(
        cls,
        config: GatewayConfig,
        ledger_url: str,
        journal_dir: str | Path,
        *,
        path: str = "proxy",
        metrics: Metrics | None = None,
        config_dir: Path | None = None,
        kill_poll_seconds: float = 0.25,
    ) -> Gateway:
        # A database that is down does not stop the start: the replica serves from its
        # journal and last known state, and catches up when the database is back.
        # The chain names rows by keys keyed under the deployment's salt (as prompt hashes and
        # guardrail fingerprints), not their clear keys: an erased session's id leaves with it.
        # The ledger checks the salt is the one its other replicas use (`ledger.salt_check`):
        # another salt refuses the start (SaltMismatch), or, with the database down, every
        # write until it is fixed.
        from activities.guardrails import fingerprint_salt, salt_source

        data_dir = Path(journal_dir).parent
        store = await LedgerStore.open(ledger_url, require_reachable=False,
                                       salt=fingerprint_salt(data_dir),
                                       salt_source=salt_source(data_dir))  # fmt: skip
        # Small, frequent batches: the database work shares the core with request handling,
        # and a short burst every 20 ms delays requests less (p99) than a long one every
        # 100 ms. Rows are journaled (crash-safe) the moment they are recorded, so the
        # interval costs no durability.
        writer = LedgerWriter(
            store,
            Journal(Path(journal_dir)),
            flush_interval=0.02,
            batch_size=1000,
            store_text=config.settings.store_text,
        )
        await writer.start()
        gw = cls(
            config=config,
            store=store,
            writer=writer,
            path=path,
            metrics=metrics or Metrics(),
            config_dir=config_dir,
        )
        await gw.router.start()
        gw.versions.flush_soon(store)
        if store.dialect == "postgresql":
            gw.shared = gw.state.shared = SharedLimits(store, config)
        for k in writer.pending_kills():  # journaled kills not yet in the database
            gw.mark_killed(k["session_id"], k["reason"])
        try:
            await gw._load_from_ledger()
        except LedgerUnavailable as exc:
            log.warning("ledger unreachable at start (%s): serving from the journal and the "
                        "last known state until it is back", exc)
            gw._load_last_known_state()
            gw._tasks.append(asyncio.create_task(gw._recover_when_ledger_returns()))
        gw._tasks.append(asyncio.create_task(gw._poll_kills(kill_poll_seconds)))
        gw._tasks.append(asyncio.create_task(gw._save_last_known_state_forever()))
        gw._tasks.append(asyncio.create_task(poll_overrides(gw, kill_poll_seconds)))
        gw._tasks.append(asyncio.create_task(gw.loop_guard.baselines.run(store)))
        gw._tasks.append(asyncio.create_task(gw._sync_spend_forever()))
        if gw.shared is not None:
            gw._tasks.append(asyncio.create_task(gw.shared.run()))
        gw._tasks.append(asyncio.create_task(gw.sweeper.run(gw)))
        return gw

    async def _load_from_ledger(self) -> None:
        await self.settle_cut_streams()
        await self.rebuild()  # budget spend too: a full re-sync (`_read_spend`)
        await self.owners.warm()

    def _load_last_known_state(self) -> None:
        snap = load_snapshot(self.writer.journal_dir)
        for sid, reason in snap.killed.items():
            self.state.killed.setdefault(sid, reason)
        for sid, key_id in snap.owners.items():
            self.owners.remember(sid, key_id)
        for key, usd in snap.spend:
            self.state.spend[key] = max(self.state.spend.get(key, 0.0), usd)  # type: ignore[index]

    async def _recover_when_ledger_returns(self) -> None:
        """After a start during an outage: once the journal is flushed, rebuild from the
        ledger like a normal start (kills known only here stay in force meanwhile)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.writer.flush()
                killed = self.state.killed.items()
                await self._load_from_ledger()
            except LedgerUnavailable:
                continue
            except Exception as exc:
                log.warning("recovery from the ledger failed: %s", type(exc).__name__)
                continue
            for sid, reason in killed:
                self.state.killed.setdefault(sid, reason)
            log.warning("ledger reachable again: counters rebuilt from it")
            return

    def last_known_state(self) -> Snapshot:
        return Snapshot(
            killed=dict(self.state.killed.items()),
            owners=self.owners.snapshot(),
            spend=[(k, v) for k, v in self.state.spend.items()],
            ts=time.time(),
        )

    async def _save_last_known_state_forever(self, every: float = 2.0) -> None:
        last: tuple[int, int, float] | None = None
        while True:
            await asyncio.sleep(every)
            sig = (self.state.killed.version, self.owners.version,
                   sum(self.state.spend.values()))
            if sig == last:
                continue
            try:
                # Copied on the loop (a consistent picture), written in a thread.
                await save_snapshot_off_loop(self.writer.journal_dir, self.last_known_state())
                last = sig
            except OSError as exc:
                log.warning("last known state not saved: %s", exc)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.classifiers is not None:  # background verdicts recorded, pools closed
            await self.classifiers.close()
        if self.shared is not None:
            try:  # hand unused headroom back so other replicas can use it
                await self.shared.return_all()
            except Exception as exc:
                log.warning("leases not returned: %s", type(exc).__name__)
        await self.router.close()
        await self.writer.close()
        await self.versions.close(self.store)
        await self.store.close()

    # Identity -------------------------------------------------------------------------------

    def authenticate(self, secret: str | None) -> ApiKey:
        if not secret:
            raise Refusal(
                401,
                "missing_api_key",
                "no API key: send `Authorization: Bearer <key>` (or `x-api-key`)",
            )
        cache = self._key_cache
        key = cache.get(secret)
        if key is None:
            key = self.config.keys_by_hash.get(hash_key(secret))
            # Only configured keys are cached (the cache is as big as keys.yaml); an unknown
            # key is hashed each time, never kept: callers cannot grow this runtime's memory.
            if key is not None and len(cache) < 10_000:
                cache[secret] = key
        if key is None:
            raise Refusal(
                401,
                "invalid_api_key",
                "this API key is not known to the gateway; check it or ask for one",
            )
        return key

    # Config ---------------------------------------------------------------------------------

    def apply_config(self, new: GatewayConfig, source: str = "reload") -> None:
        """Atomic swap: calls already past their decision finish on the config they started with.
        Active runtime overrides stay applied on top of the new config. `source`: what applied
        it, for its config version (`reload` | `override`)."""
        self.base_config = new
        new = apply_overrides(new, self.overrides)
        self.config_version = self.versions.applied(new, source, time.time())
        self.versions.flush_soon(self.store)
        self.config = new
        self._key_cache = {}
        self._bound_idempotency()
        self._bound_sessions()
        self.metrics.bound_to(new)
        self.writer.store_text = new.settings.store_text
        self.router.update_providers(new.providers)
        self.metrics.forget_breakers(self.router.prune(new))
        if self.classifiers is not None:  # pools, caches, counters of removed classifiers
            from activities.guardrails import merged_config

            merged = merged_config(new)
            self.classifiers.prune(merged.classifiers if merged is not None else ())
        if self.shared is not None:
            self.shared.apply_config(new)

    # Rebuild and kills ------------------------------------------------------------------------

    async def rebuild(self, now: float | None = None) -> None:
        """Counters back from the ledger, so a restart loses no spend and no rate window.

        Each consumer reads what it needs with its own query, so what this holds at its peak
        is bounded by configuration, not by how many session ids callers sent in the last
        `REBUILD_DAYS` days: spend of the budgets' current windows, one aggregate per UTC day
        (and key of a `keys:` list) of the calls each scope matches (`_read_spend`, the full
        budget re-sync; ended windows are not kept);
        rate counters of the live windows only, at most `max_rate_counters` aggregates per
        query (`rate_counters.read_live`); session totals of the `max_sessions` sessions
        active last, one row each (`LedgerStore.session_activity`)."""
        now = time.time() if now is None else now
        since = now - REBUILD_DAYS * 86400
        config = self.config
        settings = config.settings
        spend = await self._read_spend(now, full=True)
        old = self.state
        captured = old.capture_spend()  # calls settling while the rest is read
        try:
            counters, cut = await read_live(
                self.store, config.rate_limits, now, settings.max_rate_counters, config.keys_by_id
            )
            sessions = await self.store.session_activity(since, settings.max_sessions)
        finally:
            old.end_capture(captured)
        for k, v in captured.items():
            spend[k] = spend.get(k, 0.0) + v
        self.state = GovernanceState(shared=self.shared)
        # calls in flight (a rebuild after an outage) keep their reservations
        self.state.in_flight = old.in_flight
        self.state.reserved_rates = old.reserved_rates
        self.state.reserved_spend = old.reserved_spend
        self.state.rate_counts.cap = settings.max_rate_counters
        self.state.rate_counts.load(counters, cut)
        self.state.spend = spend
        self.metrics.set_budgets(config.budgets, spend, now)
        totals = self.state.sessions
        for s in sessions:
            totals[s.session_id] = SessionTotals(s.calls, s.tokens, s.cost_usd)
        self._bound_sessions()
        # The newest `max_killed_sessions` kills (one row each, oldest first); when that many
        # came back older ones may exist: marked forgotten, so a session this runtime does not
        # know has its kill looked up in the ledger (`check_session`) before it is served.
        killed = self.state.killed
        kills = await self.store.newest_kills(killed.cap)
        for k in kills:
            killed[k.session_id] = CLOSED if k.actor == CLOSE_ACTOR else k.reason
        if kills:
            self._last_kill_id = max(self._last_kill_id, kills[-1].id or 0)
        if len(kills) >= killed.cap:
            killed.forgotten += 1
            # A cached owner skips the kill look-up (`check_session`): after a rebuild that left
            # kills unread (an outage rebuild, with closes on other replicas), the owners of
            # sessions it does not hold killed are asked about again.
            for sid in self.owners.snapshot():
                if sid not in killed:
                    self.owners.forget(sid)
        # Sessions the ledger knows are tracked like live ones (with those tracked already,
        # after an outage): forgotten when idle or when more than `max_sessions` are (oldest
        # activity first).
        self.sweeper.merge(self, ((s.session_id, s.last_ts) for s in sessions), now)

    async def settle_cut_streams(self) -> int:
        """Streams this runtime had started when it last died get their call row now, as
        `stream_interrupted` (their start record stays; the settling row is appended)."""
        rows = await unsettled_streams(self.store, self.writer.runtime)
        rows += await unsettled_streams(self.store, self.writer.legacy_runtime)
        for r in rows:
            self.writer.record_call(r)
        if rows:
            log.warning("settled %d stream(s) cut by the last stop as interrupted", len(rows))
            await self.writer.flush()
        return len(rows)

    async def sync_spend(self, now: float | None = None, full: bool = False) -> None:
        """Budget spend of the current windows = the ledger (every replica's and worker's
        flushed calls) + this runtime's rows not yet flushed (`_read_spend`).

        Incremental: calls older than `SYNC_SETTLE` seconds are folded once into a settled
        base; each sync reads only the calls since the last settle point (a few seconds of
        traffic), so its cost does not grow with the month. `full=True` re-reads the windows
        from their start (done at start and every `FULL_SYNC_EVERY` syncs, which also picks up
        rows another replica flushed very late)."""
        budgets = self.config.budgets
        if not budgets:
            return
        now = time.time() if now is None else now
        if not full and await self._only_writer():
            return  # nobody else wrote calls: the in-memory counters are already exact
        state = self.state
        spend = await self._read_spend(now, full)
        if self.state is not state:
            return  # a rebuild replaced the counters meanwhile: its read is the newer one
        state.spend = spend
        self.metrics.set_budgets(budgets, spend, now)

    async def _read_spend(self, now: float, full: bool) -> dict[BudgetKey, float]:
        """`_read_ledger_spend`, plus what calls that settled meanwhile charged (they are in
        neither its pending rows nor, if not flushed in time, the ledger: an over-count of at
        most their cost until the next re-sync where they were flushed in time)."""
        state = self.state
        captured = state.capture_spend()
        try:
            spend = await self._read_ledger_spend(now, full)
        finally:
            state.end_capture(captured)
        for k, v in captured.items():
            spend[k] = spend.get(k, 0.0) + v
        return spend

    async def _read_ledger_spend(self, now: float, full: bool) -> dict[BudgetKey, float]:
        """Spend of the budgets' current windows from the ledger and the writer's pending rows.

        Per distinct scope (`_spend_scopes`), the calls it matches, its required values
        filtered in SQL: a full read is one aggregate per UTC day (calendar windows start at
        UTC midnight) up to the settle point and per 10-s bucket after it, an incremental one
        per 10-s bucket since the last settle point, one query; so at most a row per scope,
        day (or bucket) and key of a `keys:` list, whatever values (projects, sessions, tags)
        callers sent. The base is re-read whole when `full`, at first, and when the budgets
        changed (a reload: the base held nothing of a budget added). Pending rows are read
        before the queries, so a row flushed meanwhile is counted twice until the next sync:
        an over-count, the safe direction for a ceiling. Ended windows are not kept."""
        budgets = self.config.budgets
        pending = self.writer.pending_rows()
        cutoff = (now - SYNC_SETTLE) // SYNC_BUCKET * SYNC_BUCKET
        current = {b.id: calendar_window(now, b.window)[0] for b in budgets}
        again = full or self._settled_until is None or self._settled_for != budgets
        base: dict[BudgetKey, float] = {} if again else dict(self._settled)
        recent: dict[BudgetKey, float] = {}
        for (dims, where), group in _spend_scopes(budgets).items():
            since = min(current[b.id] for b in group)
            parts = (base, recent, cutoff)
            if again:  # the windows from their start, a row per day; then the last seconds
                if since < cutoff:
                    await self._add_spend(parts, group, dims, where, since, cutoff, 86400, current)
                since = max(since, cutoff)
            else:  # since the settle point only: a few 10-s buckets, one query
                since = max(since, self._settled_until or since)
            await self._add_spend(parts, group, dims, where, since, None, SYNC_BUCKET, current)
        self._settled = {k: v for k, v in base.items() if current.get(k[0], now + 1) <= k[1]}
        self._settled_until = cutoff
        self._settled_for = budgets
        spend = dict(self._settled)
        for k, v in recent.items():
            spend[k] = spend.get(k, 0.0) + v
        for r in pending:
            if r["decision"] == "blocked":
                continue
            ident = _ledger_identity(
                r["user"],
                r["team"],
                r["project"],
                r["session_id"],
                r["workflow_tag"],
                r["environment"],
                r["cost_center"],
                r.get("key_id"),
                self.config.keys_by_id,
            )
            for st in budget_statuses(budgets, ident, {}, r["ts"]):
                spend[st.key] = spend.get(st.key, 0.0) + r["cost_usd"]
        return spend

    async def _add_spend(
        self,
        parts: tuple[dict[BudgetKey, float], dict[BudgetKey, float], float],
        group: list[Budget],
        dims: frozenset[str],
        where: tuple[tuple[str, str], ...],
        since: float,
        until: float | None,
        bucket: float,
        current: dict[str, float],
    ) -> None:
        """Add the cost of the calls in [since, until) that `group`'s scope matches to the
        windows (not ended) of its budgets: into the base (`parts[0]`) for buckets before the
        settle point (`parts[2]`, a multiple of `SYNC_BUCKET`), else into the recent part."""
        base, recent, cutoff = parts
        aggs = await self.store.aggregate_calls(since, int(bucket), by=dims, where=dict(where),
                                                until_ts=until)  # fmt: skip
        for a in aggs:
            ident = _ledger_identity(a.user, a.team, a.project, a.session_id, a.workflow_tag,
                                     a.environment, a.cost_center, a.key_id,
                                     self.config.keys_by_id)  # fmt: skip
            into = base if a.bucket_start < cutoff else recent
            for st in budget_statuses(group, ident, {}, a.bucket_start):
                if st.key[1] >= current[st.key[0]]:  # a window that has not ended
                    into[st.key] = into.get(st.key, 0.0) + a.cost_usd

    async def _only_writer(self) -> bool:
        """Did every call row added since the last check come from this runtime's writer?

        One O(1) query instead of a scan, so a lone proxy (the common case, and the embedded
        default while no workflow runs) pays nothing for the re-sync. Any doubt means False."""
        written = await self.store.calls_written()
        flushed = self.writer.flushed_count
        last = self._writes_seen
        self._writes_seen = (written, flushed) if written is not None else None
        if written is None or last is None:
            return False
        return written - last[0] == flushed - last[1]

    async def _sync_spend_forever(self) -> None:
        n = 0
        while True:
            every = self.config.settings.budget_sync_seconds
            await asyncio.sleep(every or 60.0)
            if not every:
                continue
            n += 1
            try:
                await self.sync_spend(full=n % FULL_SYNC_EVERY == 0)
            except Exception as exc:  # a down database must not stop the loop
                log.warning("budget sync failed: %s", type(exc).__name__)

    async def _poll_kills(self, every: float) -> None:
        """Kills recorded by any replica reach this one within `every` seconds (and, once a
        minute, reservations of calls that never ended are released)."""
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(every)
            if time.monotonic() - last_sweep > 60:
                last_sweep = time.monotonic()
                n = self.state.release_stale(time.time() - STALE_RESERVATION_SECONDS)
                if n:
                    log.warning("released %d reservations of calls that never ended", n)
            try:
                for k in await self.store.kills_after(self._last_kill_id):
                    self.mark_ended(k)
                    self._last_kill_id = max(self._last_kill_id, k.id or 0)
            except Exception as exc:
                log.warning("kill poll failed: %s", type(exc).__name__)
            try:
                await self.owners.flush_provisional()
            except Exception as exc:
                log.warning("session owner claims not recorded yet: %s", type(exc).__name__)
            self.metrics.ledger_pending.set(self.writer.pending_count)

    def mark_ended(self, k: KillRecord) -> None:
        """A kill or close recorded in the ledger (by any replica or worker) holds here."""
        if k.actor == CLOSE_ACTOR:
            self.mark_closed(k.session_id)
        else:
            self.mark_killed(k.session_id, k.reason)

    def mark_closed(self, session_id: str) -> None:
        """Refuse the closed session's next calls (`session_closed`); a kill already in force
        stays. Calls already in flight finish: a close is the owner's, not an emergency stop."""
        self.state.killed.setdefault(session_id, CLOSED)

    def mark_killed(self, session_id: str, reason: str) -> None:
        """Refuse the session's next calls and end its streams in flight on this runtime."""
        self.state.killed[session_id] = reason
        if self.streams.kill(session_id, reason):
            log.info("kill ended in-flight streams", extra={"session_id": session_id})

    def apply_loop_verdict(self, v: LoopVerdict, ident: Identity | None = None) -> None:
        """Alert always; kill through the audited kill path (refused here at once)."""
        self.metrics.child(self.metrics.loop_detections, v.kind, v.action).inc()
        if self.alerts is not None:
            self.alerts.on_loop(v, ident)
        log.warning("runaway session detected (%s, action %s): %s", v.kind, v.action, v.reason)
        if v.action == "kill":
            self.mark_killed(v.session_id, v.reason)
            task = asyncio.get_running_loop().create_task(
                self._kill_quietly(v.session_id, "governor:loop-detector", v.reason)
            )
            self._tasks.append(task)
            task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _kill_quietly(self, session_id: str, actor: str, reason: str) -> None:
        try:
            await self.kill(session_id, actor, reason)
        except Exception as exc:  # the refusal is already in force; the record retries on poll
            log.warning("loop kill not recorded: %s", type(exc).__name__)

    async def kill(self, session_id: str, actor: str, reason: str) -> tuple[Any, bool | None]:
        """Journal, apply here at once, record (idempotently) in the ledger, and reach the
        session's workflow through the hooks. With the ledger down the kill still holds here
        and is written (and so reaches every replica) when it is back: `created` is then None.
        """
        ts = time.time()
        self.writer.record_kill(session_id, actor, reason, ts)  # write-ahead
        self.mark_killed(session_id, reason)
        created: bool | None
        try:
            rec, created = await self.store.record_kill(session_id, actor, reason, ts)
            if not created and (rec.ts, rec.actor, rec.reason) == (ts, actor, reason):
                created = True  # the writer flushed our own journaled kill first: still ours
        except LedgerUnavailable:
            log.warning("ledger unreachable: kill journaled, in force here, recorded later")
            rec = KillRecord(id=None, session_id=session_id, actor=actor, reason=reason, ts=ts)
            created = None
        if rec.reason != reason:
            self.mark_killed(session_id, rec.reason)  # the first kill's record stands
        if created is not False:
            self.metrics.kills.inc()
            log.info("session killed", extra={"session_id": session_id, "actor": actor})
        for hook in self.kill_hooks:
            try:
                await hook(session_id, actor, reason)
            except Exception as exc:
                log.warning("kill hook failed for a session: %s", type(exc).__name__)
        return rec, created


SpendScope = tuple[frozenset[str], tuple[tuple[str, str], ...]]


def _spend_scopes(budgets: Sequence[Budget]) -> dict[SpendScope, list[Budget]]:
    """Budgets by the scope they read: the ledger fields a scope groups by and the values it
    requires (filtered in SQL); a scope that matches no ledger row is left out."""
    out: dict[SpendScope, list[Budget]] = {}
    for b in budgets:
        where = selector_values(b.scope)
        if where is not None:
            key = (frozenset(selector_dims(b.scope)), tuple(sorted(where.items())))
            out.setdefault(key, []).append(b)
    return out


def _ledger_identity(
    user: str | None,
    team: str | None,
    project: str | None,
    session_id: str | None,
    workflow_tag: str | None,
    environment: str | None,
    cost_center: str | None,
    key_id: str | None = None,
    keys: Mapping[str, ApiKey] | None = None,
) -> Identity:
    """The identity a ledger row or aggregate stands for, for re-applying scopes to it. The
    ledger holds no subject type or role: with `keys` (`GatewayConfig.keys_by_id`) they are
    those of the key that made the call, as the live decision saw them (a reader grouping by
    `selector_dims` has `key_id` whenever a selector reads them)."""
    key = keys.get(key_id) if keys is not None and key_id else None
    return Identity(
        key_id=key_id or "",
        user=user or "",
        team=team or "",
        role=key.role if key is not None else "",
        subject_type=key.subject_type if key is not None else "user",
        project=project or "",
        session_id=session_id,
        workflow_tag=workflow_tag,
        environment=environment,
        cost_center=cost_center,
    )


_IDS_PER_READ = 256
_fresh_ids: list[str] = []  # random call ids not handed out yet


def new_call_id() -> str:
    """96 random bits as hex, from the OS's CSPRNG, read 256 ids at a time (one system call
    instead of one per call). A forked child starts with none of its parent's."""
    while True:
        try:
            return _fresh_ids.pop()  # atomic: safe from any thread
        except IndexError:
            raw = os.urandom(12 * _IDS_PER_READ).hex()
            _fresh_ids.extend(raw[i : i + 24] for i in range(0, len(raw), 24))


os.register_at_fork(after_in_child=_fresh_ids.clear)
