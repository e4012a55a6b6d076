"""Loop detection on the proxy path: the same pure detector the session workflow runs.

Per session, the guard keeps the (timestamp, tokens) events of the detector window and the
recent prompt fingerprints, in memory; the baselines come from the ledger (computed by the
baseline workflow) through `BaselineCache`. A verdict tells the caller what to do; the Gateway
applies it (kill through the audited kill path, or a throttle window).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policies.config.models import Settings
from policies.loops import (
    extend_run,
    is_loop,
    prompt_fingerprint,
    rate_baseline,
    rate_reason,
    rate_signal_action,
    repeat_reason,
    repeats_over,
    token_rate,
)
from policies.request_text import RequestText

if TYPE_CHECKING:
    from ledger.store import LedgerStore

log = logging.getLogger("governor.loops")

_HISTORY = 32  # longest repeat run counted (prompts in a row)
BUCKET = 10.0  # seconds per token-rate bucket


class BaselineCache:
    """This process's copy of the baselines table, so a call reads it without a query."""

    def __init__(self) -> None:
        self.by_tag: dict[str, tuple[float, int]] = {}
        self.loaded_at = 0.0

    def get(self, tag: str | None) -> tuple[float | None, int]:
        if not tag:
            return None, 0
        hit = self.by_tag.get(tag)
        return (hit[0], hit[1]) if hit else (None, 0)

    def replace(self, values: dict[str, tuple[float, int]], at: float) -> None:
        self.by_tag = {**self.by_tag, **values}
        self.loaded_at = at

    async def refresh(self, store: LedgerStore) -> None:
        from ledger.baselines import load_baselines

        rows = await load_baselines(store)
        self.replace({t: (r.p95_tokens_per_hour, r.sessions) for t, r in rows.items()}, time.time())

    async def run(self, store: LedgerStore, every: float = 60.0) -> None:
        """Refresh forever; a failed refresh keeps the old copy."""
        while True:
            try:
                await self.refresh(store)
            except Exception as exc:  # a down database must not stop the refresh loop
                log.warning("baseline refresh failed: %s", type(exc).__name__)
            await asyncio.sleep(every)


@dataclass(slots=True)
class LoopVerdict:
    session_id: str
    kind: str  # "rate" | "repeat"
    action: str  # "alert" | "throttle" | "kill"
    reason: str


@dataclass
class _SessionTrack:
    events: deque[tuple[float, int]] = field(default_factory=deque)
    # The last prompt fingerprint and how many times in a row it ended the session's last
    # _HISTORY prompts (policies.loops.extend_run): all the repeat signal needs to know.
    last_prompt: str | None = None
    prompt_run: int = 0

    def repeating(self, threshold: int) -> bool:
        """Whether the session's last prompts repeat (`policies.loops.is_repeating` over its
        history): the last one has text and ends a run of at least `threshold`."""
        return bool(self.last_prompt) and repeats_over(self.prompt_run, threshold)
    flagged: set[str] = field(default_factory=set)  # signals that already gave a verdict
    workflow_tag: str | None = None  # for the top-N session-rate gauge


class LoopGuard:
    def __init__(self, baselines: BaselineCache | None = None) -> None:
        self.baselines = baselines or BaselineCache()
        self.sessions: dict[str, _SessionTrack] = {}
        self.throttled: dict[str, float] = {}  # session id -> until (epoch seconds)
        # The last observation's detector inputs: [baseline p95 or None, its sessions, the
        # session's token rate per hour] (the call's decision record keeps them).
        self.last_inputs: list[float | int | None] = [None, 0, 0.0]
        # The last observation's repeat inputs: [prompt fingerprint (keyed by the salt), how
        # many times in a row it ends the session's history]
        self.last_repeat: list[str | int] = ["", 0]
        self._keyed: tuple[bytes, hmac.HMAC] | None = None  # (salt, HMAC keyed by it)

    def observe(
        self,
        settings: Settings,
        session_id: str,
        workflow_tag: str | None,
        view: RequestText,
        tokens: int,
        now: float,
        salt: bytes | None = None,
    ) -> LoopVerdict | None:
        """Observe one answered call of a session; a verdict when a loop signal fires. `salt`:
        the deployment's, keying the prompt fingerprints (kept in `last_repeat` for the call's
        decision record)."""
        tr = self.sessions.get(session_id)
        if tr is None:
            tr = self.sessions[session_id] = _SessionTrack(workflow_tag=workflow_tag)
        ev = tr.events
        # Events are kept in BUCKET-second buckets: memory per session stays bounded (window /
        # BUCKET entries) however fast a runaway session calls; the window edge moves in steps
        # of BUCKET (10 s of a 600 s window).
        bucket = now - (now % BUCKET)
        if ev and ev[-1][0] == bucket:
            ev[-1] = (bucket, ev[-1][1] + tokens)
        else:
            ev.append((bucket, tokens))
        start = now - settings.loop_window_seconds
        while ev and ev[0][0] <= start:
            ev.popleft()
        keyed = None
        if salt is not None:
            if self._keyed is None or self._keyed[0] is not salt:
                self._keyed = (salt, hmac.new(salt, digestmod=hashlib.sha256))
            keyed = self._keyed[1]
        fp = prompt_fingerprint(view, keyed)  # the call's view: no walk of the body
        tr.prompt_run = extend_run(tr.last_prompt, tr.prompt_run, fp, _HISTORY)
        tr.last_prompt = fp
        rate = token_rate(ev, now, settings.loop_window_seconds)
        p95, n = self.baselines.get(workflow_tag)
        self.last_inputs = [p95, n, rate]
        baseline, source = rate_baseline(
            p95,
            n,
            settings.loop_min_sessions,
            settings.loop_baselines.get(workflow_tag) if workflow_tag else None,
            settings.loop_default_baseline_tokens_per_hour,
        )
        verdict = None
        # One verdict per signal per session (an alert on the rate does not hide a later
        # repeat, which still gets its action).
        run = tr.prompt_run if fp else 0
        self.last_repeat = [fp, run]
        if "repeat" not in tr.flagged and repeats_over(run, settings.loop_repeat_threshold):
            verdict = LoopVerdict(
                session_id,
                "repeat",
                settings.loop_action,
                "loop detector, "
                + repeat_reason(settings.loop_repeat_threshold, settings.loop_repeat_threshold),
            )
        elif "rate" not in tr.flagged and is_loop(rate, baseline, settings.loop_multiplier):
            verdict = LoopVerdict(
                session_id,
                "rate",
                rate_signal_action(
                    source, settings.loop_action, settings.loop_rate_untrusted_action
                ),
                "loop detector, "
                + rate_reason(rate, settings.loop_window_seconds, baseline, source,
                              settings.loop_multiplier, workflow_tag, n),
            )
        if verdict is not None:
            tr.flagged.add(verdict.kind)  # a throttle re-arms when it ends
            if verdict.action == "throttle":
                self.throttled[session_id] = now + settings.loop_throttle_seconds
        return verdict

    def throttled_for(self, session_id: str, now: float) -> float:
        until = self.throttled.get(session_id)
        if until is None:
            return 0.0
        if until <= now:
            del self.throttled[session_id]
            self.sessions.get(session_id, _SessionTrack()).flagged.clear()
            return 0.0
        return until - now

    def prune(self, now: float, settings: Settings) -> None:
        """Forget sessions idle for longer than the detector window."""
        start = now - settings.loop_window_seconds
        idle = [s for s, tr in self.sessions.items() if not tr.events or tr.events[-1][0] <= start]
        for s in idle:
            del self.sessions[s]
