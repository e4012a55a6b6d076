"""The start-up rebuild reads each consumer's state with its own narrow query, so its peak
memory is bounded by configuration (`max_sessions`, `max_rate_counters`, the budgets and rate
rules), not by how many session ids callers sent in the last 32 days, and it rebuilds the same
state the full read did (every budget's current window, every live rate window, every session
within the bound).

Real SQLite files and a real PostgreSQL schema. `_full_read` is the rebuild as it was before
(one aggregate per identity, model and 60-s bucket of 32 days, replayed in Python): the oracle.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from activities.config_source import load_config_dir
from activities.gateway import Gateway, _ledger_identity
from ledger.journal import Journal
from ledger.store import LedgerStore
from ledger.writer import LedgerWriter
from policies.budgets import budget_statuses
from policies.ratelimits import applicable_keys
from policies.windows import calendar_window
from tests.ledger.ledger_testdb import BACKENDS, call_row, ledger_target
from tests.support.servers import EXAMPLES, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOW = 1_780_000_000.0 + 1234.5  # mid-window for every rule below
DAY = 86400.0

OVERLAY = {
    "zz-rb-rules.yaml": """
type: gateway-rate-limit-config
name: rb-rules
rules:
  - {id: rb-session-1h, limit: {tokens: 1000000000, window: 1h}, scope: session}
  - {id: rb-project-1m, limit: {requests: 1000000, window: 1m}, scope: project}
  - id: rb-keys-project-10m
    when: {keys: [dev-developer, dev-admin]}
    limit: {requests: 1000000, window: 10m}
    scope: project
  - {id: rb-key-1d, limit: {requests: 1000000, window: 1d}, scope: key}
  - {id: rb-model-1h, limit: {requests: 1000000, window: 1h}, scope: model}
  - {id: rb-global-1w, limit: {requests: 100000000, window: 1w}}
  - id: rb-team-triage-5m
    when: {metadata: {X-Governor-Workflow-Tag: triage}}
    limit: {requests: 1000000, window: 5m}
    scope: team
""",
    "zz-rb-budgets.yaml": """
type: gateway-budget-config
name: rb-budgets
budgets:
  - {id: rb-team-weekly, scope: {subjects: {team: search}}, ceiling_usd: 1000000, window: weekly}
  - {id: rb-intern-daily, scope: {keys: [dev-intern]}, ceiling_usd: 1000000, window: daily}
  - {id: rb-all-monthly, ceiling_usd: 1000000, window: monthly}
  - id: rb-prod-daily
    scope: {metadata: {X-Governor-Environment: production}}
    ceiling_usd: 1000000
    window: daily
""",
}


def _config(tmp_path: Path, max_sessions: int, max_counters: int) -> Any:
    cfg = make_config_dir(tmp_path / "cfg", OVERLAY)
    settings = (EXAMPLES / "gateway.yaml").read_text()
    settings += f"max_sessions: {max_sessions}\nmax_rate_counters: {max_counters}\n"
    (cfg / "gateway.yaml").write_text(settings)
    return load_config_dir(cfg)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LedgerStore]:
    async with ledger_target(request.param, tmp_path) as t:
        s = await t.open()
        try:
            yield s
        finally:
            await s.close()


def _gateway(store: LedgerStore, config: Any, tmp_path: Path) -> Gateway:
    """A runtime on `store` with no background tasks: only what `rebuild` touches."""
    writer = LedgerWriter(store, Journal(tmp_path / "journal"))
    return Gateway(config=config, store=store, writer=writer)


async def _insert(store: LedgerStore, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 2000):
        await store.insert_calls(rows[i : i + 2000])


class Reads:
    """Counts the rows each store query hands back to the rebuild."""

    def __init__(self, store: LedgerStore) -> None:
        self.rows: list[tuple[str, int]] = []
        for name in ("aggregate_calls", "session_activity"):
            real = getattr(store, name)

            async def counted(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                out = await _real(*a, **kw)
                self.rows.append((_name, len(out)))
                return out

            setattr(store, name, counted)

    def of(self, name: str) -> list[int]:
        return [n for q, n in self.rows if q == name]


async def _full_read(gw: Gateway, now: float) -> dict[str, Any]:
    """The rebuild before it read by consumer: every aggregate of 32 days (every identity
    field, 60-s buckets) through the live key functions, nothing trimmed."""
    aggs = await gw.store.aggregate_calls(now - 32 * DAY, 60)
    cfg = gw.config
    rates: dict[Any, list[int]] = {}
    spend: dict[Any, float] = {}
    sessions: dict[str, list[float]] = {}
    seen: dict[str, float] = {}
    for a in aggs:
        ident = _ledger_identity(a.user, a.team, a.project, a.session_id, a.workflow_tag,
                                 a.environment, a.cost_center, a.key_id,
                                 cfg.keys_by_id)  # fmt: skip
        ts = a.bucket_start
        for _, key, _ in applicable_keys(cfg.rate_limits, ident, a.virtual_model or "", ts):
            c = rates.setdefault(key, [0, 0])
            c[0] += a.requests
            c[1] += a.tokens
        for st in budget_statuses(cfg.budgets, ident, {}, ts):
            spend[st.key] = spend.get(st.key, 0.0) + a.cost_usd
        if ident.session_id:
            sid = ident.session_id
            seen[sid] = max(ts, seen.get(sid, ts))
            s = sessions.setdefault(sid, [0, 0, 0.0])
            s[0] += a.requests
            s[1] += a.tokens
            s[2] += a.cost_usd
    return {"rows": len(aggs), "rates": rates, "spend": spend, "sessions": sessions,
            "seen": seen}  # fmt: skip


def _live(gw: Gateway, rates: dict[Any, list[int]], now: float) -> dict[Any, list[int]]:
    length = {r.id: r.limit.seconds for r in gw.config.rate_limits}
    return {k: v for k, v in rates.items() if k[2] <= now < k[2] + length[k[0]]}


def _mixed_ledger(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Calls across sessions, projects, keys, models, users, teams and 40 days (some older
    than the 32 days read), a third of them within the last hour, some blocked or sessionless."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        age = rnd.random() * 40 * DAY if i % 3 else rnd.random() * 3600
        sid = rnd.choice([None, ""] + [f"sess-{j}" for j in range(80)])
        rows.append(call_row(
            f"mix-{i}", ts=NOW - age, session_id=sid,
            key_id=rnd.choice(["dev-developer", "dev-admin", "dev-intern"]),
            user=rnd.choice(["alice", "bob", "carol"]), team=rnd.choice(["search", "infra"]),
            project=rnd.choice(["atlas", "platform-search", "intern-sandbox", "UNTAGGED"]),
            workflow_tag=rnd.choice(["triage", "classify-intent", None]),
            environment=rnd.choice(["production", "staging"]),
            virtual_model=rnd.choice(["support-cheap", "intent-fast", "haiku"]),
            model=rnd.choice(["gpt-4o-mini", "claude-haiku"]),
            decision="blocked" if rnd.random() < 0.05 else "allowed",
            input_tokens=rnd.randint(1, 500), output_tokens=rnd.randint(0, 300),
            cache_read_tokens=rnd.randint(0, 5), cache_write_tokens=rnd.randint(0, 2),
            cost_usd=round(rnd.random() / 100, 6),
        ))  # fmt: skip
    return rows


async def test_the_rebuild_holds_what_the_full_read_held(store: LedgerStore, tmp_path: Path):
    """Spend of every budget window, every live rate counter and every session's totals are
    those of the full read; sessions are tracked oldest activity first, at their last call."""
    await _insert(store, _mixed_ledger(3000))
    gw = _gateway(store, _config(tmp_path, 100_000, 100_000), tmp_path)
    old = await _full_read(gw, NOW)
    reads = Reads(store)
    await gw.rebuild(now=NOW)
    st = gw.state

    # every budget's current window (the ended ones it also summed are not read)
    current = {b.id: calendar_window(NOW, b.window) for b in gw.config.budgets}
    spend = {k: v for k, v in old["spend"].items() if k[1] == current[k[0]][0]}
    assert set(st.spend) == set(spend) and len(spend) >= 6
    for k, v in spend.items():
        assert st.spend[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k

    live = _live(gw, old["rates"], NOW)
    assert {r for r, _, _ in live} >= {r.id for r in gw.config.rate_limits if r.id[:3] == "rb-"}
    assert dict(st.rate_counts) == live  # no counter of an ended window is held
    assert not st.rate_counts.forgotten and st.rate_counts.evicted == 0

    assert set(st.sessions) == set(old["sessions"]) and len(st.sessions) == 80
    for sid, (calls, tokens, cost) in old["sessions"].items():
        got = st.sessions[sid]
        assert (got.calls, got.tokens) == (calls, tokens)
        assert got.cost_usd == pytest.approx(cost, rel=1e-9, abs=1e-12)
    seen = gw.sweeper.last_seen
    assert list(seen) == sorted(seen, key=lambda s: (seen[s], s))  # oldest activity first
    # at the last call itself (the full read knew only its 60-s bucket)
    assert {s: t // 60 * 60 for s, t in seen.items()} == old["seen"]
    assert reads.of("session_activity") == [80]  # one row per session


N_SESSIONS = 20_000
MAX_SESSIONS = 1_000
MAX_COUNTERS = 500


async def test_twenty_thousand_invented_sessions_read_at_most_the_bound(
    store: LedgerStore, tmp_path: Path
):
    """One call per invented session id, 20,000 of them over 6 hours: the rebuild reads at most
    `max_sessions` session rows and `max_rate_counters` aggregates per rate query, holds the
    newest sessions (oldest first), and a live window read only in part is marked for
    read-back, so its counters not held are read from the ledger on use, never from 0."""
    step = 6 * 3600 / N_SESSIONS
    rows = [call_row(f"b-{i}", ts=NOW - 6 * 3600 + i * step, session_id=f"inv-{i:05d}",
                     input_tokens=10 + i % 7, output_tokens=1, cache_read_tokens=0,
                     cache_write_tokens=0, cost_usd=0.001)
            for i in range(N_SESSIONS)]  # fmt: skip
    await _insert(store, rows)
    gw = _gateway(store, _config(tmp_path, MAX_SESSIONS, MAX_COUNTERS), tmp_path)
    old = await _full_read(gw, NOW)
    assert old["rows"] >= N_SESSIONS  # the full read: a row per session (and minute)
    reads = Reads(store)
    await gw.rebuild(now=NOW)
    st = gw.state

    newest = [f"inv-{i:05d}" for i in range(N_SESSIONS - MAX_SESSIONS, N_SESSIONS)]
    assert reads.of("session_activity") == [MAX_SESSIONS]
    assert all(n <= MAX_COUNTERS for n in reads.of("aggregate_calls"))
    assert sum(n for _, n in reads.rows) <= MAX_SESSIONS + MAX_COUNTERS * len(reads.rows)
    assert list(gw.sweeper.last_seen) == newest  # oldest activity first
    assert set(st.sessions) == set(newest)
    for sid in newest:
        calls, tokens, cost = old["sessions"][sid]
        got = st.sessions[sid]
        assert (got.calls, got.tokens) == (calls, tokens)
        assert got.cost_usd == pytest.approx(cost)

    counts = st.rate_counts
    assert len(counts) <= MAX_COUNTERS
    live = _live(gw, old["rates"], NOW)
    for k, v in counts.items():
        assert live[k] == v, k  # every counter held is whole
    start = NOW // 3600 * 3600
    per_session = [k for k in live if k[0] == "rb-session-1h"]
    assert len(per_session) > MAX_COUNTERS  # the live hour holds more sessions than the bound
    assert ("rb-session-1h", start) in counts.forgotten
    out = [k for k in per_session if k not in counts]
    assert out and counts.missing(out) == out  # read back on use
    for sid in newest[-100:]:  # the most recently active are held
        assert ("rb-session-1h", sid, start) in counts


async def test_sessions_tracked_live_and_read_are_tracked_by_their_latest_activity(
    store: LedgerStore, tmp_path: Path
):
    """A rebuild after an outage tracks the sessions it read with those tracked live, each at
    its latest activity, oldest first: the `max_sessions` most recently active of both are
    kept, and only `max_sessions` session rows are read."""
    rows = [call_row(f"o-{i}", ts=NOW - 3600 + i, session_id=f"old-{i:03d}") for i in range(30)]
    await _insert(store, rows)
    gw = _gateway(store, _config(tmp_path, 10, 100), tmp_path)
    gw.sweeper.touch("gone", NOW - 7200)  # idle before any the ledger holds: forgotten
    for i in range(4):
        gw.sweeper.touch(f"live-{i}", NOW - 10 + i)
    gw.sweeper.touch("old-029", NOW - 5)  # also in the ledger: tracked at its live call
    gw.sweeper.touch("old-001", NOW - 4)  # in the ledger, older there than the 10 read
    reads = Reads(store)
    await gw.rebuild(now=NOW)
    assert reads.of("session_activity") == [10]
    assert list(gw.sweeper.last_seen) == [
        "old-025", "old-026", "old-027", "old-028",
        "live-0", "live-1", "live-2", "live-3", "old-029", "old-001",
    ]  # fmt: skip
    assert gw.sweeper.last_seen["old-029"] == NOW - 5
    assert gw.sweeper.last_seen["old-025"] == NOW - 3600 + 25
    # the ledger's totals of the tracked sessions it read
    assert sorted(gw.state.sessions) == [f"old-{i:03d}" for i in range(25, 30)]
    assert gw.state.sessions["old-029"].calls == 1


async def test_a_window_read_in_part_holds_no_counter_in_part(store: LedgerStore, tmp_path: Path):
    """More counters in a live window than `max_rate_counters`: a query cut at the bound
    marks its windows for read-back, and a rule whose counter spans several aggregates (a
    list of keys, scoped by project) holds none of them, so none is held short."""
    rows = [call_row(f"p-{i}-{k}", ts=NOW - 14 + i * 0.4, project=f"proj-{i:02d}", key_id=k)
            for i in range(30) for k in ("dev-developer", "dev-admin")]  # fmt: skip
    await _insert(store, rows)
    gw = _gateway(store, _config(tmp_path, 100, 10), tmp_path)
    old = await _full_read(gw, NOW)
    reads = Reads(store)
    await gw.rebuild(now=NOW)
    counts = gw.state.rate_counts
    assert all(n <= 10 for n in reads.of("aggregate_calls"))
    live = _live(gw, old["rates"], NOW)
    assert len(counts) == 10 and all(live[k] == v for k, v in counts.items())
    assert not any(k[0] == "rb-keys-project-10m" for k in counts)
    for rule, seconds in (("rb-keys-project-10m", 600), ("rb-project-1m", 60)):
        start = NOW // seconds * seconds
        assert (rule, start) in counts.forgotten
        keys = [k for k in live if k[0] == rule]
        assert len(keys) == 30 and counts.missing([k for k in keys if k not in counts])


N_CLOSED = 5_000
MAX_KILLED = 100


async def _closed_sessions(store: LedgerStore, n: int, now: float) -> list[str]:
    """`n` sessions claimed by a key within the last day and closed by their owner (a row each
    in `session_owners` and `kills`, as `claim_session` and `record_close` write them), oldest
    first; written in bulk (the chain is not what these tests read)."""
    from ledger.models import CLOSE_ACTOR, CLOSE_REASON, KILLS, SESSION_OWNERS

    sids = [f"closed-{i:05d}" for i in range(n)]
    owners = [{"session_id": s, "key_id": "dev-developer", "user": "alice", "team": "search",
               "ts": now - 3600 + i * 0.5, "grant_digest": ""} for i, s in enumerate(sids)]
    kills = [{"session_id": s, "actor": CLOSE_ACTOR, "reason": CLOSE_REASON,
              "ts": now - 3600 + i * 0.5 + 0.1} for i, s in enumerate(sids)]  # fmt: skip
    async with store._connect(write=True) as conn:
        for i in range(0, n, 1000):
            await conn.execute(SESSION_OWNERS.insert(), owners[i : i + 1000])
            await conn.execute(KILLS.insert(), kills[i : i + 1000])
    return sids


def _killed_config(tmp_path: Path, max_killed: int) -> Any:
    cfg = make_config_dir(tmp_path / "cfg", OVERLAY)
    settings = (EXAMPLES / "gateway.yaml").read_text()
    settings += f"max_killed_sessions: {max_killed}\n"
    (cfg / "gateway.yaml").write_text(settings)
    return load_config_dir(cfg)


def _dev_ident(gw: Gateway, sid: str) -> Any:
    from policies.identity import resolve_identity

    key = next(k for k in gw.config.keys_by_hash.values() if k.id == "dev-developer")
    return resolve_identity(key, {"x-governor-session-id": sid}, gw.config.settings)


async def test_start_reads_the_newest_kills_only_and_an_old_closed_session_stays_refused(
    store: LedgerStore, tmp_path: Path
):
    """5,000 sessions closed by their owners, `max_killed_sessions` 100: the start reads the
    100 newest kills (one query, at most 100 rows), the kill poll continues after the newest,
    and a call naming the oldest closed session is still refused: its kill is looked up in
    the ledger, though its owner was claimed within the day the start warms owners from."""
    from activities.gateway import CLOSED

    sids = await _closed_sessions(store, N_CLOSED, time.time())
    gw = _gateway(store, _killed_config(tmp_path, MAX_KILLED), tmp_path)
    read: list[int] = []
    for name in ("kills_after", "newest_kills"):
        real = getattr(store, name, None)
        if real is None:
            continue

        async def counted(*a: Any, _real: Any = real, **kw: Any) -> Any:
            out = await _real(*a, **kw)
            read.append(len(out))
            return out

        setattr(store, name, counted)
    await gw._load_from_ledger()
    assert read and max(read) <= MAX_KILLED, read
    assert list(gw.state.killed) == sids[-MAX_KILLED:]  # the newest, oldest first
    newest = max(k.id for k in await LedgerStore.kills_after(store, 0))
    assert gw._last_kill_id == newest
    assert gw.state.killed.forgotten  # some were not read: unknown sessions are asked about
    for sid in (sids[0], sids[N_CLOSED // 2], sids[-MAX_KILLED - 1]):
        await gw.check_session(_dev_ident(gw, sid))
        assert gw.state.killed.get(sid) == CLOSED, sid
    await gw.check_session(_dev_ident(gw, "never-closed"))  # a new session: claimed, served
    assert "never-closed" not in gw.state.killed


async def test_a_rebuild_that_reads_part_of_the_kills_asks_about_cached_owners_again(
    store: LedgerStore, tmp_path: Path
):
    """After an outage rebuild that reads only the newest `max_killed_sessions` kills, a
    session closed before them whose owner this runtime had cached is still refused: its
    cached owner would otherwise skip the kill look-up."""
    from activities.gateway import CLOSED

    sids = await _closed_sessions(store, 300, time.time())
    gw = _gateway(store, _killed_config(tmp_path, MAX_KILLED), tmp_path)
    ident = _dev_ident(gw, sids[0])
    gw.owners.remember(sids[0], ident.key_id)  # cached before the kills were made elsewhere
    await gw.rebuild()
    assert sids[0] not in gw.state.killed
    await gw.check_session(ident)
    assert gw.state.killed.get(sids[0]) == CLOSED


async def test_the_kill_poll_after_a_bounded_start_reads_only_later_kills(
    store: LedgerStore, tmp_path: Path
):
    """After a start that read the newest `max_killed_sessions` kills, a kill recorded later
    reaches the runtime through the poll (kills after the newest read), and the poll reads
    nothing older again."""
    await _closed_sessions(store, 300, time.time())
    gw = _gateway(store, _killed_config(tmp_path, MAX_KILLED), tmp_path)
    await gw.rebuild()
    before = gw._last_kill_id
    await store.record_kill("late", "oncall", "runaway", time.time())
    later = await store.kills_after(gw._last_kill_id)
    assert [k.session_id for k in later] == ["late"] and later[0].id > before


class _Rows:
    """Counts the aggregates `aggregate_calls` hands back, per call."""

    def __init__(self, store: LedgerStore) -> None:
        self.seen: list[int] = []
        real = store.aggregate_calls

        async def counted(*a: Any, **kw: Any) -> Any:
            out = await real(*a, **kw)
            self.seen.append(len(out))
            return out

        store.aggregate_calls = counted  # type: ignore[method-assign]


def _current_spend(gw: Gateway, spend: dict[Any, float], now: float) -> dict[Any, float]:
    current = {b.id: calendar_window(now, b.window)[0] for b in gw.config.budgets}
    return {k: v for k, v in spend.items() if k[0] in current and k[1] == current[k[0]]}


async def test_a_full_budget_resync_reads_rows_by_scope_and_day_not_by_caller_values(
    store: LedgerStore, tmp_path: Path
):
    """2,000 calls, each with a project, session and workflow tag of its own, over this month:
    the full budget re-sync (at start and every `FULL_SYNC_EVERY` syncs) reads at most a row
    per budget scope and UTC day (and key of a `keys:` list), not one per value callers sent
    and 10-s bucket; the spend is the full read's, for every budget's current window, and an
    incremental sync after it keeps it."""
    month = calendar_window(NOW, "monthly")[0]
    rnd = random.Random(3)
    rows = [call_row(f"sp-{i}", ts=month + rnd.random() * (NOW - month),
                     session_id=f"s-{i}", workflow_tag=f"w-{i}",
                     project=rnd.choice([f"inv-{i}", "platform-search", "intern-sandbox",
                                         "UNTAGGED"]),
                     key_id=rnd.choice(["dev-developer", "dev-intern"]),
                     team=rnd.choice(["search", "infra"]),
                     environment=rnd.choice(["production", "staging"]),
                     cost_usd=round(rnd.random() / 100, 6))
            for i in range(2000)]  # fmt: skip
    await _insert(store, rows)
    gw = _gateway(store, _config(tmp_path, 100_000, 100_000), tmp_path)
    want = _current_spend(gw, (await _full_read(gw, NOW))["spend"], NOW)
    assert len(want) >= 6
    reads = _Rows(store)
    await gw.sync_spend(now=NOW, full=True)
    days = int((NOW - month) // DAY) + 1
    scopes = len({(b.scope.model_dump_json()) for b in gw.config.budgets})
    assert sum(reads.seen) <= scopes * (days + 1), reads.seen  # 91 here; was 2,000
    got = _current_spend(gw, gw.state.spend, NOW)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    reads.seen.clear()
    await gw.sync_spend(now=NOW + 30)  # incremental: the last seconds only, a query a scope
    assert len(reads.seen) <= scopes and sum(reads.seen) <= 4 * scopes, reads.seen
    got = _current_spend(gw, gw.state.spend, NOW)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


UNTAGGED_SCOPE = {
    "zz-rb-untagged.yaml": """
type: gateway-budget-config
name: rb-untagged
budgets:
  - {id: rb-untagged-daily, scope: {metadata: {X-Governor-Project: ""}}, ceiling_usd: 1000000,
     window: daily}
---
type: gateway-rate-limit-config
name: rb-untagged-rules
rules:
  - id: rb-untagged-user-1h
    when: {metadata: {X-Governor-Project: ""}}
    limit: {requests: 1000000, window: 1h}
    scope: user
""",
}


async def test_a_scope_that_requires_an_empty_value_reads_one_row_per_day_not_per_caller_value(
    store: LedgerStore, tmp_path: Path
):
    """A budget and a rate rule for the calls whose project is empty (`X-Governor-Project: ""`),
    2,000 calls today each with a project of its own, or an empty one: the re-sync and the
    rebuild filter on the empty value in SQL and read a row per day (per user for the rule),
    not one per project callers invented (~1,000 rows before: the empty value was left to
    Python); spend and counters are the full read's."""
    day = calendar_window(NOW, "daily")[0]
    rnd = random.Random(5)
    rows = [call_row(f"ut-{i}", ts=day + rnd.random() * (NOW - day), session_id=f"s-{i}",
                     project=rnd.choice([f"inv-{i}", ""]),
                     user=rnd.choice(["alice", "bob"]), cost_usd=round(rnd.random() / 100, 6))
            for i in range(2000)]  # fmt: skip
    await _insert(store, rows)
    cfg = make_config_dir(tmp_path / "cfg", {**OVERLAY, **UNTAGGED_SCOPE})
    gw = _gateway(store, load_config_dir(cfg), tmp_path)
    old = await _full_read(gw, NOW)
    want = _current_spend(gw, old["spend"], NOW)
    untagged = sum(r["cost_usd"] for r in rows if not r["project"])
    assert untagged > 1 and want[("rb-untagged-daily", day)] == pytest.approx(untagged, rel=1e-9)
    reads = _Rows(store)
    await gw.sync_spend(now=NOW, full=True)
    assert max(reads.seen) <= 2 * 2, reads.seen  # was 986 (each invented project)
    got = _current_spend(gw, gw.state.spend, NOW)
    assert got[("rb-untagged-daily", day)] == pytest.approx(untagged, rel=1e-9, abs=1e-12)
    reads.seen.clear()
    await gw.rebuild(now=NOW)
    live = _live(gw, old["rates"], NOW)
    mine = {k: v for k, v in live.items() if k[0] == "rb-untagged-user-1h"}
    assert len(mine) == 2  # one counter per user
    assert {k: v for k, v in gw.state.rate_counts.items() if k[0] == "rb-untagged-user-1h"} == mine
    assert max(reads.seen) < 2000, reads.seen


RELOADED = """
type: gateway-budget-config
name: rb-added
budgets:
  - {id: rb-added-daily, scope: {subjects: {team: infra}}, ceiling_usd: 1, window: daily}
"""


async def test_a_budget_added_by_a_reload_counts_the_spend_of_its_window_at_the_next_sync(
    store: LedgerStore, tmp_path: Path
):
    """A reload adds a budget: the next (incremental) re-sync counts what its window already
    spent, not only the calls after the last settle point (the base settled for the old
    budgets held nothing of it: the budget read ~0 until the next full re-sync, 5 minutes
    later, and its ceiling did not hold meanwhile)."""
    day = calendar_window(NOW, "daily")[0]
    rows = [call_row(f"ra-{i}", ts=day + i * 10.0, team="infra", cost_usd=0.1) for i in range(20)]
    await _insert(store, rows)
    gw = _gateway(store, _config(tmp_path, 100_000, 100_000), tmp_path)
    await gw.sync_spend(now=NOW, full=True)
    cfg = make_config_dir(tmp_path / "cfg2", {**OVERLAY, "zz-rb-added.yaml": RELOADED})
    gw.apply_config(load_config_dir(cfg))
    try:
        await gw.sync_spend(now=NOW + 30)
        assert gw.state.spend.get(("rb-added-daily", day)) == pytest.approx(2.0)
    finally:
        await gw.versions.close(store)  # the reload's config version, written in the background


SUBJECTS = """
type: gateway-rate-limit-config
name: rb-subjects
rules:
  - {id: rb-svc-user-1h, when: {subjects: {type: service}}, limit: {requests: 1000, window: 1h},
     scope: user}
  - {id: rb-people-user-1h, when: {subjects: {type: user}}, limit: {requests: 1000, window: 1h},
     scope: user}
  - {id: rb-admins-1h, when: {subjects: {role: admin}}, limit: {requests: 1000, window: 1h}}
---
type: gateway-budget-config
name: rb-subject-budgets
budgets:
  - {id: rb-svc-daily, scope: {subjects: {type: service}}, ceiling_usd: 1, window: daily}
  - {id: rb-admin-daily, scope: {subjects: {role: admin}}, ceiling_usd: 1, window: daily}
"""


async def test_subject_type_and_role_selectors_count_the_calls_they_governed(
    store: LedgerStore, tmp_path: Path
):
    """A rule or budget scoped on `subjects: {type: …}` or `{role: …}` counts, after a
    restart, the calls it counted live: the ledger has no type or role column, so they are
    those of the key that made the call (`key_id`). Before, every ledger row read as a
    `user` subject with no role: a service account's or an admin's spend and requests read
    back as 0 (their ceilings did not hold after a restart), and a service's calls were
    counted against `type: user` rules."""
    from activities.rate_counters import _count

    rows = [call_row(f"svc-{i}", ts=NOW - 60 + i, key_id="dev-service", user="svc_search",
                     team="data-platform", cost_usd=0.1) for i in range(6)]
    rows += [call_row(f"adm-{i}", ts=NOW - 60 + i, key_id="dev-admin", user="u_admin",
                      team="platform", cost_usd=0.2) for i in range(3)]
    rows += [call_row(f"dev-{i}", ts=NOW - 60 + i, key_id="dev-developer", user="u_dev",
                      team="data-platform", cost_usd=0.05) for i in range(4)]  # fmt: skip
    await _insert(store, rows)
    cfg = make_config_dir(tmp_path / "cfg", {"zz-rb-subjects.yaml": SUBJECTS})
    gw = _gateway(store, load_config_dir(cfg), tmp_path)
    await gw.rebuild(now=NOW)
    day, hour = calendar_window(NOW, "daily")[0], NOW // 3600 * 3600
    assert gw.state.spend[("rb-svc-daily", day)] == pytest.approx(0.6)
    assert gw.state.spend[("rb-admin-daily", day)] == pytest.approx(0.6)
    counts = gw.state.rate_counts
    assert counts.get(("rb-svc-user-1h", "svc_search", hour), [0])[0] == 6
    assert ("rb-people-user-1h", "svc_search", hour) not in counts  # not a `user` subject
    assert counts[("rb-people-user-1h", "u_dev", hour)][0] == 4
    assert counts.get(("rb-admins-1h", "*", hour), [0])[0] == 3
    # a counter read back on use (after an eviction) counts the same calls
    rules = {r.id: r for r in gw.config.rate_limits}
    got = await _count(gw, rules["rb-svc-user-1h"], ("rb-svc-user-1h", "svc_search", hour),
                       hour + 3600)  # fmt: skip
    assert got[0] == 6
