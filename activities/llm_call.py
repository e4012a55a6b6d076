"""The governed LLM call, once, for both runtimes.

decide (pure policy) → route (router) → account (counters, ledger journal, metrics). The proxy
calls `governed_call` inline; the Temporal activity calls it too. The ledger row is journaled
before the caller sees the response's last byte, so an answered call is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from activities import guardrails, rate_counters, tracing
from activities.gateway import CLOSED, Gateway
from activities.metrics import budget_scope_label
from activities.router import Endpoint, UpstreamResult
from activities.shared_limits import across_replicas
from activities.state import Reservation
from activities.stream_stop import CLIENT_CLOSED, KILLED, StreamStop
from activities.tracing import span
from activities.wire.errors import stream_error
from activities.wire.usage import Protocol, Usage, estimate_tokens
from audit.decisions import Reads, open_breakers, record_decision, record_gate
from ledger.errors import LedgerUnavailable
from ledger.redaction import hash_text
from policies.config.models import RoutingConfig, Target
from policies.decision import PreCall, decide
from policies.estimates import caller_max_tokens, input_tokens_estimate
from policies.gates import session_gate
from policies.identity import Identity
from policies.pricing import call_cost
from policies.refusals import Refusal
from policies.request_text import RequestText, request_view
from policies.routing import plan_route

log = logging.getLogger("governor.call")


@dataclass(slots=True)
class CallRequest:
    protocol: Protocol
    body: dict[str, Any]
    ident: Identity
    call_id: str
    body_bytes: int
    stream: bool = False
    include_usage: bool = True
    pinned: Target | None = None
    rand: float | None = None
    replayable: bool = True  # False for proxy calls with a fresh, gateway-made call id
    # The normalised view's text (`policies.request_text`), set once the input hooks ran: what
    # is hashed, stored and counted.
    prompt_text: str | None = None
    beta: str | None = None  # the caller's anthropic-beta header, for Anthropic targets
    endpoint: Endpoint = "chat"
    # Ends a non-streamed call's upstream wait early: its client leaving (the proxy watches
    # for that) or a kill of its session. None: the call runs to its end (workflow path).
    stop: StreamStop | None = None
    fingerprint: str | None = None  # the body's salted digest, for calls with an Idempotency-Key
    view: RequestText | None = None  # the same view, read again by the loop detector
    # Audit: the config version that decided the call and its decision record
    # (`audit.decisions`), set by the decision and copied into the call row.
    config_version: str | None = None
    record: dict[str, Any] | None = None
    # The session's kill reason (or CLOSED) as `Gateway.check_session` found it: a session
    # ended stays ended, so this holds even if the in-memory kill list drops it meanwhile.
    ended: str | None = None


@dataclass(slots=True)
class Governance:
    """What governance did to a call: returned to callers as headers and to workflows as data."""

    call_id: str
    virtual_model: str
    decision: str = "allowed"
    provider: str = ""
    model: str = ""
    model_version: str = ""
    fallback_reason: str | None = None
    attempts: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    budget_remaining_usd: float | None = None
    estimated_cost_usd: float = 0.0  # what the call reserved on its budgets
    simulated: bool = False
    usage_estimated: bool = False  # the provider reported no usage: these are Governor's counts

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def route_headers(self) -> list[tuple[bytes, bytes]]:
        h = [
            (b"x-governor-call-id", self.call_id.encode()),
            (b"x-governor-virtual-model", self.virtual_model.encode()),
            (b"x-governor-decision", self.decision.encode()),
            (b"x-governor-route", f"{self.provider}/{self.model}".encode()),
        ]
        if self.fallback_reason:
            h.append((b"x-governor-fallback-reason", _ascii(self.fallback_reason)))
        if self.attempts and len(self.attempts) > 1:
            h.append((b"x-governor-attempts", _ascii(", ".join(self.attempts))))
        if self.simulated:
            h.append((b"x-governor-simulated", b"true"))
        return h

    def usage_headers(self) -> list[tuple[bytes, bytes]]:
        h = [
            (b"x-governor-model-version", self.model_version.encode()),
            (b"x-governor-tokens-input", str(self.input_tokens).encode()),
            (b"x-governor-tokens-output", str(self.output_tokens).encode()),
            (b"x-governor-tokens-cache-read", str(self.cache_read_tokens).encode()),
            (b"x-governor-tokens-cache-write", str(self.cache_write_tokens).encode()),
            (b"x-governor-cost-usd", f"{self.cost_usd:.8f}".encode()),
        ]
        if self.budget_remaining_usd is not None:
            h.append(
                (b"x-governor-budget-remaining-usd", f"{self.budget_remaining_usd:.6f}".encode())
            )
        if self.usage_estimated:
            h.append((b"x-governor-usage-estimated", b"true"))
        return h


def _ascii(s: str) -> bytes:
    return s.encode("ascii", "replace")[:512]


@dataclass(slots=True)
class CallOutcome:
    status: int
    governance: Governance
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    output_text: str = ""
    stop: StreamStop | None = None  # ends the stream early (a kill, the client leaving)


QUEUE_POLL = 0.05  # seconds between re-decisions while a queued call waits on calls in flight


def output_estimate(gw: Gateway, body: dict[str, Any]) -> int:
    """The caller's `max_tokens`, else the model's observed p95 output (configured default
    until enough calls were seen): never a maximum the gateway injects."""
    cap = caller_max_tokens(body)
    if cap is not None:
        return cap
    st = gw.config.settings
    model = body.get("model")
    return gw.output_estimates.estimate(
        model if isinstance(model, str) else "",
        st.output_estimate_default_tokens,
        st.output_estimate_min_samples,
    )


def _decide_once(gw: Gateway, req: CallRequest, now: float, est_in: int, est_out: int,
                 killed: str | None) -> PreCall:
    st = gw.state
    counts: Any = st.rate_counts
    spend: Any = st.spend
    r_rates: Any = st.reserved_rates
    r_spend: Any = st.reserved_spend
    if gw.shared is not None:
        counts, spend, r_rates, r_spend = gw.shared.views(counts, spend, r_rates, r_spend)
    # The decision's inputs are recorded as it reads them (`audit.decisions`).
    counts, spend, r_rates, r_spend = Reads(counts), Reads(spend), Reads(r_rates), Reads(r_spend)
    config, req.config_version = gw.config, gw.config_version
    model = req.body.get("model")
    try:
        pre = decide(config, req.ident, model, counts, spend, now, est_in, killed or False,
                     est_output_tokens=est_out, reserved_rates=r_rates, reserved_spend=r_spend)
    except Refusal as r:
        req.record = record_decision(counts, spend, r_rates, r_spend, model, now, est_in,
                                     est_out, killed, req.ident, None, r)
        raise
    req.record = record_decision(counts, spend, r_rates, r_spend, model, now, est_in, est_out,
                                 killed, req.ident, pre, None)
    return pre


_LEASE_CODES = frozenset({"budget_exceeded", "rate_limited"})
LEASE_ROUNDS = 4  # leases of one decision; each round after the first follows a lost lease


async def _decide_leased(gw: Gateway, req: CallRequest, now: float, est_in: int, est_out: int,
                         killed: str | None) -> PreCall:
    """Decide; with shared limits, a call the leases held cannot admit first leases more
    headroom (one statement for every short limit) and is decided again.

    Between the lease and that decision the call may read back counters evicted meanwhile
    (an await), and calls of the same limits then admit themselves from what it leased (a
    call waiting for the lease lock asks only for what is not covered already). Refused then
    while every row granted what was asked (or queued, or sent to a fallback: a
    `queue_then_429` rule whose lease reads spent refuses at once), the call leases again (at
    most `LEASE_ROUNDS` times): a call is held back on a shared limit when its row has no room,
    not when a sibling spent the lease it took (12 calls of a session with 2 requests left
    admitted 1)."""
    shared = gw.shared
    if gw.state.rate_counts.forgotten:  # counters evicted: read back this call's first
        await rate_counters.restore(gw, req.ident, req.body.get("model"), now)
    if shared is None:
        return _decide_once(gw, req, now, est_in, est_out, killed)
    try:
        pre = _decide_once(gw, req, now, est_in, est_out, killed)
        if pre.action == "allow":
            return pre
    except Refusal as r:
        if r.code not in _LEASE_CODES:
            raise
    for round_ in range(LEASE_ROUNDS):
        st = gw.state
        asks = shared.asks(req.ident, req.body.get("model"), now, est_in, est_out,
                           st.rate_counts, st.spend)
        short = await shared.acquire(asks) if asks else []
        now = time.time()
        if gw.state.rate_counts.forgotten:
            await rate_counters.restore(gw, req.ident, req.body.get("model"), now)
        last = round_ == LEASE_ROUNDS - 1 or not asks  # nothing leased: no other answer
        try:
            pre = _decide_once(gw, req, now, est_in, est_out, killed)
        except Refusal as r:
            if short and r.code in _LEASE_CODES:  # say what the shared rows hold, not the lease
                r.message = f"{r.message} ({across_replicas(short)})"
            if short or r.code not in _LEASE_CODES or last:
                raise
            continue
        if pre.action == "allow" or short or last:  # else queued or degraded on a lost lease
            return pre
    raise AssertionError("unreachable")  # the last round returns or raises


async def _decide(
    gw: Gateway, req: CallRequest, now: float, est_in: int, est_out: int
) -> tuple[PreCall, Reservation]:
    """Decide and reserve in one synchronous step (queued calls re-decide after each wait)."""
    ident = req.ident
    sid = ident.session_id
    killed = gw.state.killed.get(sid, req.ended) if sid is not None else None
    if killed == CLOSED or (sid is not None and gw.loop_guard.throttled and killed is None):
        closed = killed == CLOSED
        wait = 0.0 if closed else gw.loop_guard.throttled_for(sid, now)  # type: ignore[arg-type]
        gate = session_gate(sid, closed, wait)
        if gate is not None:  # refused before the policy core: the state it was checked on
            req.config_version = gw.config_version
            req.record = record_gate(req.body.get("model"), now, ident, closed, wait, gate)
            raise gate
    pre = await _decide_leased(gw, req, now, est_in, est_out, killed)
    if pre.action == "queue":
        deadline = now + pre.queue_timeout
        while pre.action == "queue":
            left = deadline - time.time()
            if pre.certain and pre.retry_after > left:
                # Nothing in flight can free capacity and the window outlasts the queue time:
                # waiting cannot succeed, so say so at once.
                raise Refusal(
                    429,
                    "rate_limited",
                    f"{pre.reason}; the window frees capacity in {pre.retry_after:.0f}s, "
                    f"beyond the {pre.queue_timeout:.1f}s queue time, so the call was not "
                    f"queued; retry after {pre.retry_after:.0f}s",
                    retry_after=pre.retry_after,
                )
            if left <= 0:
                raise Refusal(
                    429,
                    "rate_limited",
                    f"{pre.reason}; queued for {pre.queue_timeout:.1f}s without capacity "
                    f"freeing up, retry after {min(pre.retry_after, 1.0):.0f}s",
                    retry_after=min(pre.retry_after, 1.0),
                )
            wait = pre.retry_after + 0.001 if pre.certain else QUEUE_POLL
            await asyncio.sleep(min(wait, left))
            pre = await _decide_leased(gw, req, time.time(), est_in, est_out, killed)
    res = gw.state.reserve(pre.rate_keys, pre.budgets, pre.est_tokens, pre.est_cost, now)
    return pre, res


async def governed_call(gw: Gateway, req: CallRequest) -> CallOutcome:
    """Govern one call. Raises `Refusal` (already recorded) when the call must not proceed."""
    started = time.perf_counter()
    now = time.time()
    gw.sweeper.touch(req.ident.session_id, now)
    est_in = input_tokens_estimate(req.body_bytes)
    est_out = output_estimate(gw, req.body)
    gov = Governance(call_id=req.call_id, virtual_model=str(req.body.get("model", "")))
    try:
        with span("governor.policy"):
            pre, held = await _decide(gw, req, now, est_in, est_out)
    except Refusal as r:
        _record_refusal(gw, req, gov, r, now, started)
        raise
    vm = pre.vm
    gov.virtual_model = vm.name
    rec = req.record
    if req.pinned is not None:
        targets = [req.pinned]
        gov.decision, gov.fallback_reason = "fallback", "pinned by the session workflow"
        if rec is not None:
            rec["wp"] = req.pinned.key
    elif pre.pinned is not None:
        targets = [pre.pinned]
    else:
        rand = req.rand if req.rand is not None else random.random()
        allowed = gw.router.allowed(vm, now)
        targets = plan_route(vm, rand, allowed)
        if rec is not None:
            rec["x"] = rand
            rec["rt"] = [t.key for t in targets]
        if gw.router.breakers:
            if rec is not None:
                rec["bo"] = open_breakers(vm, allowed)
            skipped = _skipped_by_breakers(vm, rand, targets, allowed)
            if skipped:
                gov.decision = "fallback"
                gov.fallback_reason = f"circuit breaker open for {', '.join(skipped)}"
    if pre.action == "fallback":
        gov.decision, gov.fallback_reason = "fallback", pre.reason
    gov.budget_remaining_usd = pre.budget_remaining
    gov.estimated_cost_usd = pre.est_cost
    try:
        body = req.body
        view = request_view(req.protocol, body)  # the request's text, walked once per call
        guard = await guardrails.guard_request(gw, req, view)  # input hooks; may redact or refuse
        if req.body is not body:
            view = request_view(req.protocol, req.body)  # the redacted text is what is kept
        req.prompt_text = view.text
        req.view = view
        if not targets:
            raise Refusal(
                503,
                "no_healthy_target",
                f"every target of {vm.name!r} has an open circuit breaker; retry later",
                retry_after=gw.router.cooldown_left(vm, now),
            )
        with span("governor.upstream") as sp:
            res = await _upstream(gw, req, vm, targets)
            if sp.is_recording():
                sp.set_attribute("gen_ai.system", res.provider.protocol)
                sp.set_attribute("gen_ai.request.model", res.target.model)
    except BaseException as exc:  # refused, failed upstream, or cancelled (kill, disconnect)
        gw.state.release(held)
        if isinstance(exc, Refusal):
            _record_refusal(gw, req, gov, exc, now, started)
        raise
    gov.provider, gov.model = res.target.provider, res.target.model
    gov.simulated = res.provider.simulated
    gov.attempts = [f"{a.target}:{a.outcome}" for a in res.attempts]
    if res.fallback_used and gov.decision == "allowed":
        gov.decision = "fallback"
        failed = [a for a in res.attempts if a.outcome != "ok"]
        gov.fallback_reason = "; ".join(f"{a.target} {a.outcome}" for a in failed)
    gw.metrics.child(gw.metrics.upstream, gov.provider, gov.model).observe(res.upstream_ms / 1000)
    if res.stream is None:
        try:
            blocked = await guardrails.guard_response(guard, res, gov.model, req.stop)
        except BaseException:
            _settle_failed(gw, req, gov, pre, held, res, now, started)
            raise
        _account(
            gw, req, gov, pre, held, res, res.usage, res.output_text, now, started,
            blocked.code if blocked else None,
        )  # fmt: skip
        if blocked is not None:
            raise blocked
        return CallOutcome(200, gov, body=res.body, output_text=res.output_text)
    # From here until the caller holds the stream, a failure must still end the call once: its
    # reservation released, its upstream request closed, its stream entry dropped.
    relay = res.stream
    stop = req.stop or StreamStop()  # the proxy's stop already watches the client
    sid = req.ident.session_id
    try:
        guardrails.guard_stream(guard, res, gov.model)  # output hooks on the deltas, if any
        if sid is not None:
            gw.streams.add(sid, stop)
        # First byte: the ledger learns of the stream now, so a crash before its end leaves a
        # record that the next start settles as interrupted.
        gw.writer.record_stream_start(_interrupted_row(gw, req, gov, now))
    except BaseException:
        if sid is not None:
            gw.streams.discard(sid, stop)
        _settle_failed(gw, req, gov, pre, held, res, now, started)
        await _close_upstream(relay, res)
        raise
    call = _StreamCall(gw, req, gov, pre, held, res, now, started, stop)
    return CallOutcome(200, gov, stream=GovernedStream(call), stop=stop)


def _settle_failed(gw: Gateway, req: CallRequest, gov: Governance, pre: PreCall,
                   held: Reservation, res: UpstreamResult, now: float, started: float) -> None:
    """The provider answered but Governor failed before the caller got it (an output hook
    raised, the ledger refused the stream's start): charge what the provider reported, as an
    `internal_error` row; the reservation is released whatever happens here."""
    try:
        usage = res.usage or _acc_usage(res)
        text = res.output_text or _acc_text(res)
        if res.stream is not None:
            usage = _delivered_usage(req, usage, "")
        _account(gw, req, gov, pre, held, res, usage, text if res.stream is None else "", now,
                 started, INTERNAL_ERROR)
    except Exception as exc:  # the ledger itself may be what failed
        log.warning("call %s not accounted after an internal error: %s", req.call_id,
                    type(exc).__name__)
    finally:
        gw.state.release(held, keep_requests=True)


async def _close_upstream(relay: AsyncIterator[bytes] | None, res: UpstreamResult) -> None:
    """Close the upstream request of a stream, read or not (closing an async generator that
    never started skips its `finally`, so the response is also released directly)."""
    try:
        if relay is not None:
            await relay.aclose()  # type: ignore[attr-defined]
    finally:
        if res.release is not None:
            res.release()


async def _upstream(gw: Gateway, req: CallRequest, vm: RoutingConfig, targets: list[Target]
                    ) -> UpstreamResult:
    """The upstream request (for a stream: up to its first event); for a call with a `stop`,
    a kill of its session or its client leaving cancels the request (the provider sees it
    closed) and refuses the call as `session_killed` 403 / `client_closed` 499: nothing is
    charged for it."""
    stop = req.stop
    if stop is None:
        return await gw.router.call(req.protocol, req.body, vm, targets, req.stream,
                                    req.include_usage, gw.config.prices, req.beta, req.endpoint,
                                    req.prompt_text)
    sid = req.ident.session_id
    stop.bind()
    if sid is not None:
        gw.streams.add(sid, stop)
        why = gw.state.killed.get(sid)
        if why is not None and why != CLOSED:  # killed since the decision
            stop.stop(KILLED, why)
    try:
        if stop.reason is None:
            stop.reading = True
            try:
                return await gw.router.call(req.protocol, req.body, vm, targets, req.stream,
                                            req.include_usage, gw.config.prices, req.beta,
                                            req.endpoint, req.prompt_text)
            except asyncio.CancelledError:
                if not stop.absorb():
                    raise
            finally:
                stop.reading = False
    finally:
        if sid is not None:
            gw.streams.discard(sid, stop)
    if stop.reason == KILLED:
        raise Refusal(403, KILLED, f"session {sid!r} was killed while this call waited on "
                      f"its provider ({stop.detail or 'no reason given'}); nothing is charged")
    raise Refusal(499, CLIENT_CLOSED, "the client closed the request before the provider "
                  "answered; the provider request was cancelled and nothing is charged")


def _skipped_by_breakers(
    vm: RoutingConfig, rand: float, targets: list[Target], allowed: Callable[[Target], bool]
) -> list[str]:
    """Targets the route would have tried before the first one it now tries, skipped because
    their circuit is open: the call is served elsewhere because of them. Only open ones are
    named: with a weighted rule out, the plan reorders, and healthy fallbacks it now puts
    after the served target were not skipped for a breaker."""
    full = plan_route(vm, rand, lambda _t: True)
    first = targets[0].key if targets else None
    out = []
    for t in full:
        if t.key == first:
            break
        if not allowed(t):
            out.append(t.key)
    return out


class _StreamCall:
    """One governed stream in flight: relays the upstream, and ends the call exactly once."""

    __slots__ = (
        "done",
        "ended",
        "gov",
        "gw",
        "held",
        "now",
        "pre",
        "relay",
        "req",
        "res",
        "started",
        "stop",
    )

    def __init__(self, gw: Gateway, req: CallRequest, gov: Governance, pre: PreCall,
                 held: Reservation, res: UpstreamResult, now: float, started: float,
                 stop: StreamStop) -> None:
        self.gw, self.req, self.gov, self.pre, self.held = gw, req, gov, pre, held
        self.res, self.now, self.started, self.stop = res, now, started, stop
        self.relay = res.stream  # the upstream relay (output hooks included)
        self.done = False  # accounted
        self.ended = False  # stream entry dropped and upstream closed

    def account(self, error: str | None) -> None:
        if self.done:
            return
        self.done = True
        res, req = self.res, self.req
        usage = res.usage or _acc_usage(res)
        text = res.output_text or _acc_text(res)
        if error is not None:
            usage = _delivered_usage(req, usage, text)
        _account(self.gw, req, self.gov, self.pre, self.held, res, usage, text, self.now,
                 self.started, error)

    async def end(self) -> None:
        """Drop the stream entry, charge what was seen if nothing was charged yet, close the
        upstream request. Idempotent."""
        if self.ended:
            return
        self.ended = True
        sid = self.req.ident.session_id
        try:
            if sid is not None:
                self.gw.streams.discard(sid, self.stop)
            if not self.done:
                # Client went away or the stream broke without a terminal event: charge what
                # we saw.
                self.account(self.stop.reason or self.res.stream_error or CLIENT_CLOSED)
        finally:
            self.gw.state.release(self.held, keep_requests=True)  # a no-op once charged
            await _close_upstream(self.relay, self.res)

    async def pieces(self) -> AsyncIterator[bytes]:
        """Relay the upstream stream; account before the terminal event goes out (or on abort).

        A kill ends it with an error event in the caller's protocol, a client that left ends it
        silently; either way the upstream request is closed and only what was delivered is
        charged."""
        upstream = self.relay
        assert upstream is not None
        res, req, stop = self.res, self.req, self.stop
        stop.bind()
        try:
            while stop.reason is None:
                stop.reading = True
                try:
                    piece = await upstream.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if not stop.absorb():
                        raise
                    break
                finally:
                    stop.reading = False
                if not self.done and res.finished:
                    self.account(res.stream_error)
                    piece = piece + _usage_comment(self.gov)
                yield piece
            if not self.done and stop.reason == KILLED:
                self.account(KILLED)
                yield stream_error(
                    req.protocol,
                    KILLED,
                    f"session {req.ident.session_id!r} was killed while this response streamed "
                    f"({stop.detail or 'no reason given'}); only the part delivered is charged",
                    403,
                )
        finally:
            await self.end()


class GovernedStream:
    """The caller's side of a governed stream: iterate it for the caller-protocol bytes, then
    `aclose()` it. Closing ends the call exactly once, also when it was never iterated (its
    client gone before the first byte could be sent): an async generator closed before its
    first step skips its own `finally`, so that end is run here."""

    __slots__ = ("_call", "_gen", "_started")

    def __init__(self, call: _StreamCall) -> None:
        self._call = call
        self._gen = call.pieces()
        self._started = False

    def __aiter__(self) -> GovernedStream:
        return self

    def __anext__(self) -> Any:
        self._started = True
        return self._gen.__anext__()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()
        finally:
            if not self._started:
                self._started = True
                await self._call.end()


def _delivered_usage(req: CallRequest, usage: Usage | None, text: str) -> Usage:
    """Tokens of a stream cut short: the prompt, and the output actually delivered."""
    if usage is None:
        usage = Usage()
    return Usage(
        input_tokens=usage.input_tokens
        or estimate_tokens(_prompt(req)),
        output_tokens=max(usage.output_tokens, estimate_tokens(text)),
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        model_version=usage.model_version,
    )


def _interrupted_row(gw: Gateway, req: CallRequest, gov: Governance, now: float
                     ) -> dict[str, Any]:
    """The call row a stream stands for if its runtime dies before the stream ends: the
    prompt charged, no output known, marked interrupted."""
    text_in = _prompt(req)
    tokens_in = estimate_tokens(text_in)
    price = gw.config.prices.get(gov.model)
    prompt_sha, prompt_len = hash_text(text_in, guardrails.gateway_salt(gw))
    row = _base_row(req, gov, now)
    row.update(
        path=gw.path,
        provider=gov.provider,
        model=gov.model,
        model_version=gov.model,
        decision="error",
        fallback_reason=gov.fallback_reason,
        status_code=200,
        error_code="stream_interrupted",
        input_tokens=tokens_in,
        cost_usd=call_cost(price, gov.model, tokens_in, 0, 0, 0) if price else 0.0,
        prompt_sha256=prompt_sha,
        prompt_bytes=prompt_len,
    )
    return row


def _acc_usage(res: UpstreamResult) -> Usage | None:
    return res.accumulator.usage if res.accumulator is not None else None


def _acc_text(res: UpstreamResult) -> str:
    return res.accumulator.text if res.accumulator is not None else ""


def _usage_comment(gov: Governance) -> bytes:
    """An SSE comment (ignored by SDK parsers) carrying what governance counted."""
    return (
        f": governor tokens_in={gov.input_tokens} tokens_out={gov.output_tokens} "
        f"cost_usd={gov.cost_usd:.8f} route={gov.provider}/{gov.model}"
        f"{' usage=estimated' if gov.usage_estimated else ''}\n\n"
    ).encode()


def _base_row(req: CallRequest, gov: Governance, now: float) -> dict[str, Any]:
    i = req.ident
    return {
        "call_id": req.call_id,
        "ts": now,
        "path": "proxy",
        "key_id": i.key_id,
        "user": i.user,
        "team": i.team,
        "project": i.project,
        "session_id": i.session_id,
        "workflow_tag": i.workflow_tag,
        "environment": i.environment,
        "cost_center": i.cost_center,
        "client_tool": i.client,
        "request_fingerprint": req.fingerprint,
        "protocol": req.protocol,
        "virtual_model": gov.virtual_model,
        "stream": req.stream,
        "config_version": req.config_version,
        "decision_record": req.record,
    }


INTERNAL_ERROR = "internal_error"  # Governor failed after the provider answered
_ERROR_STATUS = {guardrails.GUARDRAIL_BLOCKED: 400, KILLED: 403, CLIENT_CLOSED: 499,
                 INTERNAL_ERROR: 500}


def _record_refusal(
    gw: Gateway, req: CallRequest, gov: Governance, r: Refusal, now: float, started: float
) -> None:
    gw.metrics.child(gw.metrics.refusals, gw.metrics.code(r.code, r.upstream)).inc()
    gw.metrics.child(
        gw.metrics.requests,
        gw.metrics.model(gov.virtual_model) if r.code != "model_not_found" else "(unknown)",
        "blocked",
        str(r.status),
    ).inc()
    row = _base_row(req, gov, now)
    row.update(
        path=gw.path,
        decision="blocked",
        status_code=r.status,
        error_code=r.code,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    if r.code == "model_not_found":
        row["virtual_model"] = ""
    gw.writer.record_call(row)


def record_gate_refusal(gw: Gateway, ident: Identity, call_id: str, model: object,
                        protocol: str, r: Refusal, record: dict[str, Any], now: float) -> None:
    """The row of a call refused outside `governed_call`, by a session workflow's gate
    (`policies.gates.workflow_gate`): blocked, with its decision record, on the workflow path."""
    vm = model if isinstance(model, str) else ""
    gw.metrics.child(gw.metrics.refusals, gw.metrics.code(r.code, r.upstream)).inc()
    gw.metrics.child(gw.metrics.requests, gw.metrics.model(vm), "blocked", str(r.status)).inc()
    gw.writer.record_call({
        "call_id": call_id, "ts": now, "path": "workflow", "key_id": ident.key_id,
        "user": ident.user, "team": ident.team, "project": ident.project,
        "session_id": ident.session_id, "workflow_tag": ident.workflow_tag,
        "environment": ident.environment, "cost_center": ident.cost_center,
        "protocol": protocol, "virtual_model": vm, "decision": "blocked",
        "status_code": r.status, "error_code": r.code, "config_version": gw.config_version,
        "decision_record": record,
    })


def _view(req: CallRequest) -> RequestText:
    if req.view is None:  # the input hooks did not run
        req.view = request_view(req.protocol, req.body)
    return req.view


def _prompt(req: CallRequest) -> str:
    if req.prompt_text is None:  # refused before the input hooks ran
        req.prompt_text = _view(req).text
    return req.prompt_text


def _account(
    gw: Gateway,
    req: CallRequest,
    gov: Governance,
    pre: PreCall,
    held: Reservation,
    res: UpstreamResult,
    usage: Usage | None,
    output_text: str,
    now: float,
    started: float,
    error: str | None,
) -> None:
    if usage is None or usage.total_tokens == 0:
        # No usage from the provider (cut stream, old API): count from the text we saw.
        text_in = _prompt(req)
        usage = Usage(
            input_tokens=estimate_tokens(text_in),
            output_tokens=estimate_tokens(output_text),
            model_version=usage.model_version if usage else None,
        )
        gov.usage_estimated = True
    gov.usage_estimated = gov.usage_estimated or res.usage_estimated
    gov.input_tokens, gov.output_tokens = usage.input_tokens, usage.output_tokens
    gov.cache_read_tokens, gov.cache_write_tokens = (
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    )
    gov.model_version = usage.model_version or gov.model
    price = gw.config.prices.get(gov.model)
    gov.cost_usd = (
        call_cost(
            price,
            gov.model_version,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        if price
        else 0.0
    )
    tokens = gov.total_tokens
    st = gw.state
    crossings = st.charge(
        req.call_id, pre.rate_keys, pre.budgets, req.ident.session_id, tokens, gov.cost_usd,
        replayable=req.replayable, reservation=held,
    )
    if error is None:
        gw.output_estimates.observe(gov.virtual_model, usage.output_tokens)
    sid = req.ident.session_id
    if sid is not None and gw.path == "proxy":  # a session workflow runs the detector itself
        verdict = gw.loop_guard.observe(
            gw.config.settings, sid, req.ident.workflow_tag, _view(req), tokens, now,
            guardrails.gateway_salt(gw),
        )
        if req.record is not None:
            req.record["lp"] = gw.loop_guard.last_inputs
            req.record["lf"] = gw.loop_guard.last_repeat
            if verdict is not None:
                req.record["lv"] = [verdict.kind, verdict.action]
        if verdict is not None:
            gw.apply_loop_verdict(verdict, req.ident)
    if pre.budgets:
        gov.budget_remaining_usd = min(
            max(0.0, b.budget.ceiling_usd - st.spend.get(b.key, 0.0)) for b in pre.budgets
        )
        for b in pre.budgets:
            pct = 100.0 * st.spend.get(b.key, 0.0) / b.budget.ceiling_usd
            gw.metrics.child(
                gw.metrics.budget_used, b.budget.id, budget_scope_label(b.budget)
            ).set(pct)
            if gw.alerts is not None:
                gw.alerts.on_budget(b.budget, b.key[1], pct)
    for c in crossings:
        _budget_alert(
            gw,
            c.status.budget.id,
            c.status.key,
            c.at_pct,
            c.spent_after,
            c.status.budget.ceiling_usd,
            c.status.budget.alerts,
            now,
        )
    prompt = _prompt(req)
    salt = guardrails.gateway_salt(gw)  # hashes keyed like guardrail fingerprints
    prompt_sha, prompt_len = hash_text(prompt, salt)
    comp_sha, comp_len = hash_text(output_text, salt)
    latency_ms = (time.perf_counter() - started) * 1000
    row = _base_row(req, gov, now)
    store_text = gw.config.settings.store_text
    row.update(
        path=gw.path,
        provider=gov.provider,
        model=gov.model,
        model_version=gov.model_version,
        decision=gov.decision if error is None else "error",
        fallback_reason=gov.fallback_reason,
        status_code=_ERROR_STATUS.get(error, 502) if error is not None else 200,
        error_code=error,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_usd=gov.cost_usd,
        latency_ms=latency_ms,
        upstream_ms=res.upstream_ms,
        prompt_sha256=prompt_sha,
        prompt_bytes=prompt_len,
        completion_sha256=comp_sha,
        completion_bytes=comp_len,
    )
    if store_text:
        row["prompt_text"] = prompt
        row["completion_text"] = output_text
    gw.writer.record_call(row)
    m = gw.metrics
    i = req.ident
    m.child(m.requests, gov.virtual_model, gov.decision, str(row["status_code"])).inc()
    for kind, n in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
    ):
        if n:
            version = m.version(gov.model_version)
            m.child(m.tokens, m.project(i.project), i.team, gov.model, version, kind).inc(n)
    if gov.cost_usd:
        m.child(m.cost, m.project(i.project), i.team, gov.model,
                m.version(gov.model_version)).inc(gov.cost_usd)
        if gw.alerts is not None:
            gw.alerts.on_spend(i.project, gov.cost_usd, now)
    m.child(m.overhead, gw.path).observe(max(0.0, latency_ms - res.upstream_ms) / 1000)
    genai = tracing.genai  # OpenTelemetry GenAI metrics: None unless OTLP export is configured
    if genai is not None:
        genai.record("embeddings" if req.endpoint == "embeddings" else "chat", gov.provider,
                     gov.virtual_model, gov.model, usage.input_tokens, usage.output_tokens,
                     latency_ms / 1000, error)


BUDGET_ALERT_RETRY_FIRST = 1.0  # a crossing the ledger could not record: retried after this,
BUDGET_ALERT_RETRY_FOR = 86400.0  # doubling to a minute, for up to a day


def _budget_alert(
    gw: Gateway,
    budget_id: str,
    key: tuple[str, float],
    at_pct: float,
    spent: float,
    ceiling: float,
    alerts: Any,
    now: float,
) -> None:
    targets: list[str] = next((a.notify for a in alerts if a.at_pct == at_pct), [])
    log.warning(
        "budget %s crossed %.0f%% ($%.4f of $%.2f); notify %s",
        budget_id,
        at_pct,
        spent,
        ceiling,
        ", ".join(targets) or "(nobody configured)",
    )

    async def persist() -> None:
        window = f"{budget_id}@{int(key[1])}"
        delay, gave_up_at = BUDGET_ALERT_RETRY_FIRST, time.monotonic() + BUDGET_ALERT_RETRY_FOR
        while True:
            try:
                first = await gw.store.record_budget_alert(
                    budget_id, window, at_pct, spent, ceiling, now
                )
                break
            except LedgerUnavailable:
                # The database is away: the crossing waits here (a few per budget window, so
                # bounded by the config) and is recorded, then notified, when it is back.
                if time.monotonic() + delay > gave_up_at:
                    log.warning("budget alert of %s at %g%% not recorded: the ledger stayed "
                                "unreachable", budget_id, at_pct)
                    return
                log.warning("budget alert of %s at %g%% not recorded yet (ledger "
                            "unreachable); retrying in %.0f s", budget_id, at_pct, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 60.0)
            except Exception as exc:
                log.warning("budget alert not recorded: %s", type(exc).__name__)
                return
        if first and targets:  # once per threshold per window, across replicas
            from alerts.notify import notify_budget

            await notify_budget(gw, window, at_pct, spent, ceiling, targets)

    task = asyncio.get_running_loop().create_task(persist())
    gw._tasks.append(task)  # keep a reference until shutdown
    task.add_done_callback(lambda t: gw._tasks.remove(t) if t in gw._tasks else None)
