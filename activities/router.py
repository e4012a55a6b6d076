"""Upstream calls for a virtual model: pooled connections, per-target timeout, retries,
fallbacks in order, circuit breakers, and translation between OpenAI and Anthropic wire formats.

The route plan (which targets, in what order) is a pure decision in `policies.routing`; this module
does the I/O and keeps the breaker states. Once a stream's first byte has gone to the caller, no
fallback is possible: a later failure ends the stream with an error event that says so.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import orjson

from activities.upstream_http import UpstreamConnectionError, UpstreamPool, UpstreamResponse
from activities.wire.bridge import StreamRelay, request_for_target, response_for_caller
from activities.wire.errors import WireError, parse_upstream_error, stream_error
from activities.wire.mapping import (
    RESPONSE_FORMAT_TOOL,
    anthropic_usage_dict,
    openai_usage_dict,
)
from activities.wire.usage import (
    Protocol,
    StreamAccumulator,
    Usage,
    estimate_tokens,
    estimated_usage,
    mark_estimated,
    request_text,
    usage_from_anthropic,
    usage_from_openai,
)
from policies import breaker
from policies.config.gateway import GatewayConfig
from policies.config.models import ModelPrice, Provider, RoutingConfig, Target
from policies.decision import resolve_fallback
from policies.pricing import max_output_tokens
from policies.refusals import Refusal

_RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
# The provider refuses the gateway itself (its credential, its account, its model name): the
# caller's request is fine and another target may serve it, so no retry here but the next target.
_GATEWAY_FAULT: dict[int, str] = {
    401: "upstream_auth_failed",
    402: "upstream_billing_error",
    403: "upstream_auth_failed",
    404: "upstream_model_not_found",
}
_MAX_RETRY_AFTER = 86400.0
ANTHROPIC_VERSION = "2023-06-01"

Action = Literal["retry", "next", "fatal"]
Endpoint = Literal["chat", "embeddings"]  # chat: chat completions / messages


class UpstreamFailure(Exception):
    """One failed attempt. `action`: retry this target, move to the next, or refuse the call
    (the request itself is wrong: every target would refuse it)."""

    def __init__(
        self,
        target: Target,
        status: int,
        code: str,
        message: str,
        action: Action = "retry",
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.target, self.status, self.code, self.message = target, status, code, message
        self.action = action
        self.retry_after = retry_after


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The provider's wait hint: `retry-after-ms`, else `retry-after` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            v = float(ms) / 1000
            if math.isfinite(v) and v >= 0:
                return min(v, _MAX_RETRY_AFTER)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        v = when.timestamp() - time.time()
    if not math.isfinite(v):
        return None
    return min(max(v, 0.0), _MAX_RETRY_AFTER)


@dataclass(slots=True)
class Attempt:
    target: str
    outcome: str  # "ok" | code of the failure


@dataclass(slots=True)
class UpstreamResult:
    """A served call: the caller-protocol body (non-streaming) or a relay (streaming)."""

    target: Target
    provider: Provider
    status: int
    body: bytes = b""
    usage: Usage | None = None
    output_text: str = ""
    stream: AsyncIterator[bytes] | None = None
    accumulator: StreamAccumulator | None = None
    attempts: list[Attempt] = field(default_factory=list)
    upstream_ms: float = 0.0
    stream_error: str | None = None
    usage_estimated: bool = False  # the provider reported no usage: Governor's estimate
    finished: bool = False  # set by the relay just before it yields the terminal event
    # A stream's upstream response, released (idempotently) also when the relay never ran.
    release: Callable[[], object] | None = None

    @property
    def fallback_used(self) -> bool:
        return len(self.attempts) > 1


def _provider_headers(p: Provider) -> dict[str, str]:
    key = p.api_key or (os.environ.get(p.api_key_env, "") if p.api_key_env else "")
    if p.simulated and not key:
        key = "simulated"
    h = {"content-type": "application/json"}
    if p.protocol == "openai":
        h["authorization"] = f"Bearer {key}"
    else:
        h["x-api-key"] = key
        h["anthropic-version"] = ANTHROPIC_VERSION
    return h


BreakerHook = Callable[[str, str, str], None]  # (virtual model, target, new phase)


class Router:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers
        # One breaker per (virtual model, target): `circuit_breaker` is configured per virtual
        # model, and the gauge is labelled {virtual_model, target}.
        self.breakers: dict[tuple[str, str], breaker.BreakerState] = {}
        self.on_breaker: BreakerHook | None = None  # told of every breaker transition
        self._session: UpstreamPool | None = None
        self._headers = {name: _provider_headers(p) for name, p in providers.items()}

    def update_providers(self, providers: dict[str, Provider]) -> None:
        self.providers = providers
        self._headers = {name: _provider_headers(p) for name, p in providers.items()}

    def prune(self, config: GatewayConfig) -> set[tuple[str, str]]:
        """After a reload: forget the breakers of (virtual model, target) pairs the new config
        no longer routes (they stayed, whatever the reloads removed). Returns the pairs it
        routes (`routed_pairs`). Idle connections to a removed upstream close on their own
        (keepalive_timeout); one a running call holds is never touched."""
        pairs = routed_pairs(config)
        for key in [k for k in self.breakers if k not in pairs]:
            del self.breakers[key]
        return pairs

    async def start(self) -> None:
        if self._session is None:
            # Timeouts are ours (asyncio.timeout per target).
            self._session = UpstreamPool()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Breakers ---------------------------------------------------------------------------------

    def allowed(self, vm: RoutingConfig, now: float):  # type: ignore[no-untyped-def]
        cfg = vm.circuit_breaker
        get = self.breakers.get
        name = vm.name

        def check(t: Target) -> bool:
            st = get((name, t.key))
            return st is None or breaker.allows(st, cfg, now)

        return check

    def breaker_phase(self, vm: RoutingConfig, t: Target, now: float) -> str:
        st = self.breakers.get((vm.name, t.key), breaker.CLOSED)
        return breaker.phase(st, vm.circuit_breaker, now)

    def cooldown_left(self, vm: RoutingConfig, now: float) -> float:
        """Seconds until the first open breaker of `vm` turns half-open (a probe may pass):
        the Retry-After of a refusal because every target's circuit is open."""
        cfg = vm.circuit_breaker
        left = [
            st.opened_at + cfg.cooldown_seconds - now
            for (name, _), st in self.breakers.items()
            if name == vm.name and st.opened_at is not None
        ]
        return max(1.0, min(left)) if left else cfg.cooldown_seconds

    def _ok(self, vm: RoutingConfig, t: Target) -> None:
        key = (vm.name, t.key)
        st = self.breakers.get(key)
        if st is not None:
            new = breaker.on_success(st)
            if new is breaker.CLOSED:
                del self.breakers[key]
                if st.opened_at is not None:
                    self._transition(vm, t, "closed")
            else:
                self.breakers[key] = new

    def _rate_limited(self, vm: RoutingConfig, t: Target) -> None:
        """An upstream 429 is the provider's rate limit, not a health failure: it counts
        nothing toward opening the circuit; a half-open probe it answered is given back."""
        key = (vm.name, t.key)
        st = self.breakers.get(key)
        if st is not None and st.probing:
            self.breakers[key] = replace(st, probing=False)

    def _fail(self, vm: RoutingConfig, t: Target) -> None:
        key = (vm.name, t.key)
        st = self.breakers.get(key, breaker.CLOSED)
        new = breaker.on_failure(st, vm.circuit_breaker, time.time())
        self.breakers[key] = new
        if new.opened_at is not None and new.opened_at != st.opened_at:
            self._transition(vm, t, "open")

    def _transition(self, vm: RoutingConfig, t: Target, phase: str) -> None:
        if self.on_breaker is not None:
            self.on_breaker(vm.name, t.key, phase)

    # Calls ------------------------------------------------------------------------------------

    async def call(
        self,
        caller: Protocol,
        body: dict[str, Any],
        vm: RoutingConfig,
        targets: list[Target],
        stream: bool,
        include_usage: bool = True,
        prices: Mapping[str, ModelPrice] | None = None,
        beta: str | None = None,
        endpoint: Endpoint = "chat",
        prompt_text: str | None = None,
    ) -> UpstreamResult:
        """Try targets in order (with `vm.retries` retries each) until one answers.

        `prompt_text`: the request's text as the call's normalised view has it, for the input
        estimate of a stream or an answer without usage (None: taken from `body`).

        Between retries of a target: the provider's Retry-After if it sent one, else exponential
        backoff with jitter; a wait longer than `vm.retry_max_wait_ms` moves on to the next target.
        A provider refusing the gateway (401/402/403/404), or a target that used its whole
        `timeout_ms`, moves on at once.
        """
        if self._session is None:
            await self.start()
        attempts: list[Attempt] = []
        failures: list[UpstreamFailure] = []
        for t in targets:
            p = self.providers.get(t.provider)
            if p is None:
                attempts.append(Attempt(t.key, "unknown_provider"))
                continue
            now = time.time()
            key = (vm.name, t.key)
            st = self.breakers.get(key)
            if st is not None:
                if not breaker.allows(st, vm.circuit_breaker, now):
                    attempts.append(Attempt(t.key, "circuit_open"))
                    continue
                probe = breaker.on_attempt(st, vm.circuit_breaker, now)
                if probe.probing and not st.probing:
                    self._transition(vm, t, "half_open")
                self.breakers[key] = probe
            for n in range(vm.retries + 1):
                try:
                    limit = max_output_tokens(prices.get(t.model)) if prices else None
                    res = await self._once(caller, p, t, body, stream, include_usage, limit,
                                           beta, endpoint, prompt_text)
                except UpstreamFailure as exc:
                    failures.append(exc)
                    attempts.append(Attempt(t.key, exc.code))
                    if exc.action == "fatal":
                        # The request itself is wrong: another target would refuse it too.
                        raise Refusal(exc.status, exc.code, exc.message, upstream=True) from None
                    if exc.code == "upstream_rate_limited":
                        self._rate_limited(vm, t)
                    else:
                        self._fail(vm, t)
                    if exc.action == "next" or n == vm.retries:
                        break
                    st = self.breakers.get(key, breaker.CLOSED)
                    if not breaker.allows(st, vm.circuit_breaker, time.time()):
                        break
                    wait = _retry_wait(vm, n, exc.retry_after)
                    if wait is None:
                        break  # the provider asks for longer than this call can wait
                    if wait > 0:
                        await asyncio.sleep(wait)
                    continue
                self._ok(vm, t)
                attempts.append(Attempt(t.key, "ok"))
                res.attempts = attempts
                return res
        raise _exhausted(vm, attempts, failures, self.cooldown_left(vm, time.time()))

    async def count_tokens(
        self, p: Provider, t: Target, body: dict[str, Any], beta: str | None
    ) -> int | None:
        """Exact input tokens from an Anthropic-protocol target's `count_tokens` endpoint, or
        None when it cannot say (unreachable, refused, slow): the caller then estimates."""
        if p.protocol != "anthropic":
            return None
        if self._session is None:
            await self.start()
        assert self._session is not None
        headers = self._headers[p.name]
        if _has_mid_system(body):
            beta = _with_beta(beta, MID_SYSTEM_BETA)
        if beta:
            headers = {**headers, "anthropic-beta": beta}
        payload = {k: v for k, v in body.items() if k not in ("stream", "max_tokens")}
        payload["model"] = t.model
        url = p.base_url.rstrip("/") + "/v1/messages/count_tokens"
        try:
            async with asyncio.timeout(t.timeout_ms / 1000):
                resp = await self._session.post(url, orjson.dumps(payload), headers)
                try:
                    if resp.status != 200:
                        return None
                    doc = orjson.loads(await resp.read())
                finally:
                    resp.release()
        except (TimeoutError, UpstreamConnectionError, orjson.JSONDecodeError, TypeError):
            return None
        n = doc.get("input_tokens") if isinstance(doc, dict) else None
        return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None

    async def _once(
        self,
        caller: Protocol,
        p: Provider,
        t: Target,
        body: dict[str, Any],
        stream: bool,
        include_usage: bool,
        max_output: int | None = None,
        beta: str | None = None,
        endpoint: Endpoint = "chat",
        prompt_text: str | None = None,
    ) -> UpstreamResult:
        assert self._session is not None
        if endpoint == "embeddings" and p.protocol != "openai":
            raise UpstreamFailure(
                t, 400, "unsupported_endpoint",
                f"{t.key} speaks the {p.protocol} protocol, which has no embeddings endpoint",
                "next",
            )
        try:
            if endpoint == "embeddings":
                payload = orjson.dumps({**body, "model": t.model})
            else:
                payload = orjson.dumps(
                    request_for_target(caller, p.protocol, body, t.model, max_output)
                )
        except WireError as exc:
            raise Refusal(
                400, exc.code, f"cannot send this request to {t.key}: {exc.message}"
            ) from None
        except TypeError as exc:
            raise Refusal(
                400, "invalid_request", f"request body cannot be encoded: {exc}"
            ) from None
        url = p.base_url.rstrip("/") + (
            "/v1/embeddings" if endpoint == "embeddings"
            else "/v1/chat/completions" if p.protocol == "openai" else "/v1/messages"
        )
        send_headers = self._headers[p.name]
        if p.protocol == "anthropic" and caller == "anthropic" and _has_mid_system(body):
            beta = _with_beta(beta, MID_SYSTEM_BETA)
        if beta and p.protocol == "anthropic":
            # The caller's betas govern body fields it sends (mid-conversation system, …).
            send_headers = {**send_headers, "anthropic-beta": beta}
        timeout_s = t.timeout_ms / 1000
        started = time.perf_counter()
        headers: Mapping[str, str] = {}
        resp: UpstreamResponse | None = None
        try:
            # One deadline for the head and, when streaming, the first event: a provider that
            # sends its head at once and then stalls has not answered, and a fallback still can.
            async with asyncio.timeout(timeout_s):
                resp = await self._session.post(url, payload, send_headers)
                status, headers = resp.status, resp.headers
                if not stream or status != 200:
                    raw = await resp.read()
                else:
                    relay = StreamRelay(
                        caller,
                        p.protocol,
                        include_usage=include_usage,
                        estimate_input=_input_estimate(caller, body, prompt_text),
                    )
                    first = await _first_event(resp, relay, t)
        except TimeoutError:
            if resp is not None:
                resp.release()
            what = "sent no stream event" if resp is not None and stream else "did not answer"
            # The target has had its whole timeout: the next target, not the same wait again.
            raise UpstreamFailure(
                t, 504, "upstream_timeout", f"{t.key} {what} within {t.timeout_ms} ms", "next"
            ) from None
        except UpstreamConnectionError as exc:
            if resp is not None:
                resp.release()
            raise UpstreamFailure(
                t, 502, "upstream_unreachable", f"{t.key} unreachable: {exc}"
            ) from None
        except UpstreamFailure:
            if resp is not None:
                resp.release()
            raise
        except asyncio.CancelledError:  # a kill or the client leaving: the provider sees it
            if resp is not None:
                resp.close()
            raise
        upstream_ms = (time.perf_counter() - started) * 1000
        if stream and status == 200:
            res = UpstreamResult(
                target=t,
                provider=p,
                status=200,
                accumulator=relay.accumulator,
                upstream_ms=upstream_ms,
                release=resp.release,
            )
            res.stream = self._relay(resp, caller, t, relay, res, first)
            return res
        resp.release()
        if status != 200:
            raise _failure(t, p.protocol, status, raw, headers)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                t, 502, "upstream_bad_response", f"{t.key} sent a response that is not JSON"
            ) from None
        if not isinstance(doc, dict):
            raise UpstreamFailure(
                t, 502, "upstream_bad_response", f"{t.key} sent a response that is not an object"
            )
        if p.protocol == "openai":
            usage = usage_from_openai(doc)
            text = _openai_text(doc)
        else:
            usage = usage_from_anthropic(doc)
            text = _anthropic_text(doc)
        estimated = usage.total_tokens == 0
        if estimated:
            # The provider reported no usage: the caller sees what Governor will charge.
            usage = estimated_usage(
                _input_estimate(caller, body, prompt_text), text, usage.model_version
            )
            doc["usage"] = mark_estimated(
                openai_usage_dict(usage) if p.protocol == "openai" else anthropic_usage_dict(usage)
            )
        if p.protocol != caller or estimated:
            out = response_for_caller(caller, p.protocol, doc)
            if estimated and isinstance(out.get("usage"), dict):
                mark_estimated(out["usage"])  # translation rebuilds usage: keep the flag
            raw = orjson.dumps(out)
        return UpstreamResult(
            target=t,
            provider=p,
            status=200,
            body=raw,
            usage=usage,
            output_text=text,
            upstream_ms=upstream_ms,
            usage_estimated=estimated,
        )

    async def _relay(
        self,
        resp: UpstreamResponse,
        caller: Protocol,
        t: Target,
        relay: StreamRelay,
        res: UpstreamResult,
        first: bytes,
    ) -> AsyncIterator[bytes]:
        """Yield caller-protocol SSE bytes as upstream events complete, never buffering the
        whole stream; `res.finished` turns true just before the piece with the terminal event.

        Between events the target's `timeout_ms` applies again: a stream that stalls is ended
        with a well-formed error event (keep-alive comments do not count as events)."""
        loop = asyncio.get_running_loop()
        idle = t.timeout_ms / 1000
        stalled = False
        try:
            if first:
                res.finished = relay.done
                res.usage_estimated = relay.usage_estimated
                yield first
            last_event, seen = loop.time(), relay.events
            while not relay.done:
                try:
                    async with asyncio.timeout_at(last_event + idle):
                        chunk = await resp.content.readany()
                except TimeoutError:
                    stalled = True
                    res.stream_error = "upstream_stream_stalled"
                    break
                if not chunk:
                    tail = relay.finish()  # an upstream that ended without its last blank line
                    if relay.done and tail:
                        res.finished = True
                        res.usage_estimated = relay.usage_estimated
                        yield tail
                    break
                out = relay.feed(chunk)
                if relay.events != seen:
                    last_event, seen = loop.time(), relay.events
                if out:
                    res.finished = relay.done
                    res.usage_estimated = relay.usage_estimated
                    yield out
            if relay.done and not resp.content.at_eof():
                # Read the (normally empty) rest up to EOF, briefly, so the pooled connection
                # can be reused; an upstream still talking after its terminal event is closed.
                async with asyncio.timeout(min(idle, 1.0)):
                    while await resp.content.readany():
                        pass
        except (UpstreamConnectionError, TimeoutError) as exc:
            if not relay.done:  # else the stream was complete and only the drain failed
                res.stream_error = str(exc) or type(exc).__name__
        finally:
            resp.release()
            res.usage = relay.accumulator.usage
            res.output_text = relay.accumulator.text
            res.usage_estimated = relay.usage_estimated
        if not relay.done:
            res.finished = True
            if stalled:
                yield stream_error(
                    caller,
                    "upstream_stream_stalled",
                    f"{t.key} sent no stream event for {t.timeout_ms} ms after the stream began; "
                    "it was ended here (a fallback is impossible once streaming has begun) — "
                    "retry the request",
                    504,
                )
                return
            res.stream_error = res.stream_error or "stream ended early"
            yield stream_error(
                caller,
                "upstream_stream_interrupted",
                f"{t.key} failed after the stream began ({res.stream_error}); a fallback "
                "is impossible once streaming has begun — retry the request",
                502,
            )


async def _first_event(resp: UpstreamResponse, relay: StreamRelay, t: Target) -> bytes:
    """Read until the first upstream event yields caller bytes (the caller's head waits for it).

    An upstream that opens with an error event, or closes before any event, has not served the
    call: that is a failure the next target can still repair."""
    out = b""
    while not out:
        chunk = await resp.content.readany()
        if not chunk:
            if relay.events == 0:
                raise UpstreamFailure(
                    t, 502, "upstream_bad_response",
                    "the stream closed before its first event",
                )
            out = relay.finish()
            break
        out = relay.feed(chunk)
    err = relay.accumulator.error
    if err is not None and not relay.accumulator.text and not relay.accumulator.tool_calls:
        kind = err.get("type") or err.get("code") or "api_error"
        raise UpstreamFailure(
            t, 502, "upstream_error",
            f"the stream opened with an error event ({kind}): {str(err.get('message'))[:300]}",
        )
    return out


def _failure(
    t: Target, protocol: Protocol, status: int, raw: bytes, headers: Mapping[str, str]
) -> UpstreamFailure:
    """What an upstream error status means for this call."""
    kind, msg = parse_upstream_error(protocol, status, raw)
    text = f"{t.key} answered {status}: {msg}"
    if status == 429:
        return UpstreamFailure(
            t, 429, "upstream_rate_limited", text, "retry", retry_after_seconds(headers)
        )
    if status in _GATEWAY_FAULT:
        return UpstreamFailure(t, status, _GATEWAY_FAULT[status], text, "next")
    if status in _RETRYABLE or status >= 500:
        return UpstreamFailure(t, status, "upstream_error", text, "retry",
                               retry_after_seconds(headers))
    return UpstreamFailure(t, status, kind or "upstream_rejected", text, "fatal")


def _retry_wait(vm: RoutingConfig, n: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry `n + 1` of a target, or None: move on to the next target."""
    cap = vm.retry_max_wait_ms / 1000
    if retry_after is not None:
        return retry_after if retry_after <= cap else None
    backoff = min(cap, vm.retry_backoff_ms / 1000 * (2**n))
    return backoff * (0.5 + random.random() / 2)


def _exhausted(
    vm: RoutingConfig, attempts: list[Attempt], failures: list[UpstreamFailure], cooldown: float
) -> Refusal:
    """The refusal once every target failed: what the caller can act on (`cooldown`: seconds
    until an open breaker of `vm` lets a probe through)."""
    tried = ", ".join(f"{a.target} ({a.outcome})" for a in attempts) or "none"
    if not failures:
        if attempts and all(a.outcome == "circuit_open" for a in attempts):
            return Refusal(
                503,
                "no_healthy_target",
                f"every target of {vm.name!r} has an open circuit breaker; retry later",
                retry_after=cooldown,
            )
        return Refusal(502, "upstream_error", f"no target of {vm.name!r} could be called; "
                       f"tried: {tried}")
    hints = [f.retry_after for f in failures if f.retry_after is not None]
    retry_after = min(hints) if hints else None
    codes = {f.code for f in failures}
    if codes == {"unsupported_endpoint"}:
        return Refusal(400, "unsupported_endpoint",
                       f"no target of {vm.name!r} can serve this endpoint ({failures[-1].message})"
                       "; use a virtual model with an OpenAI-protocol target")
    if codes == {"upstream_rate_limited"}:
        wait = f"{math.ceil(retry_after)}s" if retry_after is not None else "a moment"
        return Refusal(
            429,
            "upstream_rate_limited",
            f"every target of {vm.name!r} is rate limited by its provider; retry after {wait} "
            f"(tried: {tried})",
            retry_after=retry_after if retry_after is not None else 1.0,
        )
    if codes == {"upstream_timeout"}:
        return Refusal(
            504,
            "upstream_timeout",
            f"every target of {vm.name!r} timed out ({failures[-1].message}); tried: {tried}",
        )
    if codes <= {"upstream_auth_failed", "upstream_billing_error", "upstream_model_not_found"}:
        return Refusal(
            502,
            sorted(codes)[0] if len(codes) == 1 else "upstream_auth_failed",
            f"the provider(s) of {vm.name!r} refused the gateway's own credentials or model "
            f"names — your API key is fine; the gateway operator must fix its provider config "
            f"(tried: {tried}; last: {failures[-1].message})",
        )
    return Refusal(
        502,
        "upstream_error",
        f"no target of {vm.name!r} answered successfully; tried: {tried}",
        retry_after=retry_after,
    )


# The beta under which Anthropic accepts `{"role": "system"}` messages inside `messages`.
MID_SYSTEM_BETA = "mid-conversation-system-2026-04-07"


def _has_mid_system(body: dict[str, Any]) -> bool:
    msgs = body.get("messages")
    return isinstance(msgs, list) and any(
        isinstance(m, dict) and m.get("role") == "system" for m in msgs
    )


def _with_beta(beta: str | None, name: str) -> str:
    """The caller's anthropic-beta list with `name` added when no version of it is there:
    a caller that sends mid-conversation system messages without the beta (Claude Code does,
    for models it believes take them natively) still reaches a target that needs it."""
    if not beta:
        return name
    family = name.rsplit("-", 3)[0]
    return beta if family in beta else f"{beta},{name}"


def _input_estimate(caller: Protocol, body: dict[str, Any], prompt_text: str | None) -> int:
    """The prompt's token estimate: from the call's normalised text when the caller has it (no
    second walk of the body), else from `body`."""
    return estimate_tokens(prompt_text if prompt_text is not None else request_text(caller, body))


def _openai_text(doc: dict[str, Any]) -> str:
    try:
        c = doc["choices"][0]["message"].get("content")
        return c if isinstance(c, str) else ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _anthropic_text(doc: dict[str, Any]) -> str:
    try:
        return "".join(
            b.get("text", "")
            if b.get("type") == "text"
            else orjson.dumps(b.get("input") or {}).decode()
            if b.get("type") == "tool_use" and b.get("name") == RESPONSE_FORMAT_TOOL
            else ""
            for b in doc["content"]
        )
    except (KeyError, TypeError, AttributeError):
        return ""


def routed_pairs(config: GatewayConfig) -> set[tuple[str, str]]:
    """Every (virtual model, target key) pair `config` may route, so every breaker key a call
    under it may use: each model's rules, fallbacks and cheaper target, and each target a
    `fallback_to_<model>` of a rate limit or budget pins a call to (the call keeps its own
    virtual model then, `policies.decision`, so that pin pairs with every model)."""
    names = {r.on_breach[12:] for r in config.rate_limits if r.on_breach.startswith("fallback_to_")}
    names |= {b.on_exceed[12:] for b in config.budgets
              if b.on_exceed.startswith("fallback_to_") and b.on_exceed != "fallback_to_cheaper"}
    pins = {t.key for t in (resolve_fallback(config, n)[1] for n in names) if t is not None}
    vms = config.virtual_models.values()
    return {(vm.name, t.key) for vm in vms for t in _targets_of(vm)} | {
        (vm.name, key) for vm in vms for key in pins}


def _targets_of(vm: RoutingConfig) -> list[Target]:
    """Every target `vm` may route to: its rules', its fallbacks and its cheaper one."""
    out = [r.target for r in vm.rules] + list(vm.fallbacks)
    return [*out, vm.cheaper] if vm.cheaper is not None else out
