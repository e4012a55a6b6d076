"""Per-session memory is freed once a session has been idle, or once more than `max_sessions`
sessions are tracked (the least recently active goes first): memory is bounded by configuration
(`session_idle_seconds`, `max_sessions`), not by how many session ids callers invent.

Every call touches its session id here (O(1): an ordered dict keeps sessions in last-seen order);
a pass every `sweep_every` seconds pops sessions idle for longer than `session_idle_seconds`
from the front and forgets what this runtime holds for them: live totals, the loop detector's
track, an expired throttle, the cached owner (the ledger keeps it; a later call looks it up
again). Kills are kept. The same pass drops rate-limit counters of windows that have ended
(their count is bounded apart, by `max_rate_counters`: `activities.rate_counters`). The ledger
is the durable truth throughout: nothing it holds is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from activities.gateway import Gateway

log = logging.getLogger("governor.sweep")


class IdleSweeper:
    def __init__(self) -> None:
        self.last_seen: OrderedDict[str, float] = OrderedDict()
        self.max_sessions = 100_000
        self._gw: Gateway | None = None

    def bind(self, gw: Gateway, max_sessions: int) -> None:
        self._gw = gw
        self.max_sessions = max_sessions

    def touch(self, session_id: str | None, now: float) -> None:
        if session_id is None:
            return
        seen = self.last_seen
        seen[session_id] = now
        seen.move_to_end(session_id)
        if len(seen) > self.max_sessions:  # churn: forget the least recently active
            old, _ = seen.popitem(last=False)
            if self._gw is not None:
                self._forget(self._gw, old, now)

    def merge(self, gw: Gateway, seen: Iterable[tuple[str, float]], now: float) -> None:
        """Track sessions the ledger knows (a rebuild: session id, last call) with those
        tracked already, each at its latest activity, oldest first; beyond `max_sessions` the
        least recently active are forgotten."""
        at = dict(self.last_seen)
        for sid, ts in seen:
            if ts > at.get(sid, float("-inf")):
                at[sid] = ts
        order = sorted(at.items(), key=lambda kv: (kv[1], kv[0]))
        cut = max(0, len(order) - self.max_sessions)
        for sid, _ in order[:cut]:
            self._forget(gw, sid, now)
        self.last_seen.clear()
        self.last_seen.update(order[cut:])

    def sweep(self, gw: Gateway, now: float) -> int:
        """Forget sessions idle since before `now - session_idle_seconds`; returns how many."""
        settings = gw.config.settings
        idle_before = now - settings.session_idle_seconds
        seen = self.last_seen
        evicted = 0
        while seen:
            sid, at = next(iter(seen.items()))
            if at > idle_before:
                break
            seen.popitem(last=False)
            evicted += 1
            self._forget(gw, sid, now)
        throttled = gw.loop_guard.throttled  # a forgotten session's throttle, once it ran out
        for sid in [s for s, until in throttled.items() if until <= now]:
            del throttled[sid]
        self._drop_ended_windows(gw, now)
        return evicted

    @staticmethod
    def _forget(gw: Gateway, sid: str, now: float) -> None:
        """What this runtime holds for one session, except its kill (`KilledSessions` bounds
        those) and a throttle still running."""
        gw.state.sessions.pop(sid, None)
        gw.loop_guard.sessions.pop(sid, None)
        until = gw.loop_guard.throttled.get(sid)
        if until is not None and until <= now:
            del gw.loop_guard.throttled[sid]
        gw.owners.forget(sid)

    @staticmethod
    def _drop_ended_windows(gw: Gateway, now: float) -> None:
        lengths = {r.id: r.limit.seconds for r in gw.config.rate_limits}
        gw.state.rate_counts.drop_ended(lengths, now)

    async def run(self, gw: Gateway) -> None:
        while True:
            every = min(60.0, gw.config.settings.session_idle_seconds / 4)
            await asyncio.sleep(every)
            try:
                n = self.sweep(gw, time.time())
            except Exception as exc:  # a sweep must never end the loop that frees memory
                log.warning("idle-session sweep failed: %s", type(exc).__name__)
                continue
            if n:
                log.debug("forgot %d idle session(s)", n)
