"""Upstream calls for a virtual model: pooled connections, per-target timeout, retries,
fallbacks in order, circuit breakers, and translation between OpenAI and Anthropic wire formats.

The route plan (which targets, in what order) is a pure decision in `policies.routing`; this module
does the I/O and keeps the breaker states. Once a stream's first byte has gone to the caller, no
fallback is possible: a later failure ends the stream with an error event that says so.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from activities.wire.bridge import StreamRelay, request_for_target, response_for_caller
from activities.wire.errors import WireError, parse_upstream_error, stream_error
from activities.wire.usage import (
    Protocol,
    StreamAccumulator,
    Usage,
    usage_from_anthropic,
    usage_from_openai,
)
from policies import breaker
from policies.config.models import Provider, RoutingConfig, Target
from policies.refusals import Refusal

_RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
ANTHROPIC_VERSION = "2023-06-01"


class UpstreamFailure(Exception):
    def __init__(self, target: Target, status: int, code: str, message: str, retryable: bool):
        super().__init__(message)
        self.target, self.status, self.code, self.message = target, status, code, message
        self.retryable = retryable


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
    finished: bool = False  # set by the relay just before it yields the terminal event

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


class Router:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers
        self.breakers: dict[str, breaker.BreakerState] = {}
        self._session: aiohttp.ClientSession | None = None
        self._headers = {name: _provider_headers(p) for name, p in providers.items()}

    def update_providers(self, providers: dict[str, Provider]) -> None:
        self.providers = providers
        self._headers = {name: _provider_headers(p) for name, p in providers.items()}

    async def start(self) -> None:
        if self._session is None:
            conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            # Timeouts are ours (asyncio.timeout per target); aiohttp's own would add a timer
            # handle per request for nothing.
            self._session = aiohttp.ClientSession(
                connector=conn,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_read=None, sock_connect=None
                ),
                json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
                auto_decompress=True,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Breakers ---------------------------------------------------------------------------------

    def allowed(self, vm: RoutingConfig, now: float):  # type: ignore[no-untyped-def]
        cfg = vm.circuit_breaker
        get = self.breakers.get

        def check(t: Target) -> bool:
            st = get(t.key)
            return st is None or breaker.allows(st, cfg, now)

        return check

    def breaker_phase(self, vm: RoutingConfig, t: Target, now: float) -> str:
        return breaker.phase(self.breakers.get(t.key, breaker.CLOSED), vm.circuit_breaker, now)

    def _ok(self, t: Target) -> None:
        st = self.breakers.get(t.key)
        if st is not None:
            new = breaker.on_success(st)
            if new is breaker.CLOSED:
                del self.breakers[t.key]
            else:
                self.breakers[t.key] = new

    def _fail(self, vm: RoutingConfig, t: Target) -> None:
        st = self.breakers.get(t.key, breaker.CLOSED)
        self.breakers[t.key] = breaker.on_failure(st, vm.circuit_breaker, time.time())

    # Calls ------------------------------------------------------------------------------------

    async def call(
        self,
        caller: Protocol,
        body: dict[str, Any],
        vm: RoutingConfig,
        targets: list[Target],
        stream: bool,
        include_usage: bool = True,
    ) -> UpstreamResult:
        """Try targets in order (with `vm.retries` retries each) until one answers."""
        if self._session is None:
            await self.start()
        attempts: list[Attempt] = []
        last: UpstreamFailure | None = None
        for t in targets:
            p = self.providers.get(t.provider)
            if p is None:
                attempts.append(Attempt(t.key, "unknown_provider"))
                continue
            now = time.time()
            st = self.breakers.get(t.key)
            if st is not None:
                if not breaker.allows(st, vm.circuit_breaker, now):
                    attempts.append(Attempt(t.key, "circuit_open"))
                    continue
                self.breakers[t.key] = breaker.on_attempt(st, vm.circuit_breaker, now)
            for _ in range(vm.retries + 1):
                try:
                    res = await self._once(caller, p, t, body, stream, include_usage)
                except UpstreamFailure as exc:
                    last = exc
                    attempts.append(Attempt(t.key, exc.code))
                    if not exc.retryable:
                        # The request itself is wrong: another target would refuse it too.
                        raise Refusal(exc.status, exc.code, exc.message) from None
                    self._fail(vm, t)
                    if not breaker.allows(self.breakers[t.key], vm.circuit_breaker, time.time()):
                        break
                    continue
                self._ok(t)
                attempts.append(Attempt(t.key, "ok"))
                res.attempts = attempts
                return res
        tried = ", ".join(f"{a.target} ({a.outcome})" for a in attempts) or "none"
        if (
            last is not None
            and last.code == "upstream_timeout"
            and all(a.outcome in ("upstream_timeout", "circuit_open") for a in attempts)
        ):
            raise Refusal(
                504,
                "upstream_timeout",
                f"every target of {vm.name!r} timed out ({last.message}); tried: {tried}",
            )
        if attempts and all(a.outcome == "circuit_open" for a in attempts):
            raise Refusal(
                503,
                "no_healthy_target",
                f"every target of {vm.name!r} has an open circuit breaker; retry later",
            )
        raise Refusal(
            502, "upstream_error", f"no target of {vm.name!r} answered successfully; tried: {tried}"
        )

    async def _once(
        self,
        caller: Protocol,
        p: Provider,
        t: Target,
        body: dict[str, Any],
        stream: bool,
        include_usage: bool,
    ) -> UpstreamResult:
        assert self._session is not None
        try:
            payload = orjson.dumps(request_for_target(caller, p.protocol, body, t.model))
        except WireError as exc:
            raise Refusal(
                400, exc.code, f"cannot send this request to {t.key}: {exc.message}"
            ) from None
        except TypeError as exc:
            raise Refusal(
                400, "invalid_request", f"request body cannot be encoded: {exc}"
            ) from None
        url = p.base_url.rstrip("/") + (
            "/v1/chat/completions" if p.protocol == "openai" else "/v1/messages"
        )
        timeout_s = t.timeout_ms / 1000
        started = time.perf_counter()
        try:
            if not stream:
                async with asyncio.timeout(timeout_s):
                    async with self._session.post(
                        url, data=payload, headers=self._headers[p.name]
                    ) as resp:
                        raw = await resp.read()
                        status = resp.status
            else:
                # The timeout bounds the wait for the response head; the body is relayed as it
                # comes, each read bounded by the same per-target timeout.
                async with asyncio.timeout(timeout_s):
                    resp = await self._session.post(
                        url,
                        data=payload,
                        headers=self._headers[p.name],
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_s),
                    )
                status = resp.status
                if status != 200:
                    raw = await resp.read()
                    resp.release()
                else:
                    upstream_ms = (time.perf_counter() - started) * 1000
                    relay = StreamRelay(caller, p.protocol, include_usage=include_usage)
                    res = UpstreamResult(
                        target=t,
                        provider=p,
                        status=200,
                        accumulator=relay.accumulator,
                        upstream_ms=upstream_ms,
                    )
                    res.stream = self._relay(resp, caller, t, relay, res)
                    return res
        except TimeoutError:
            raise UpstreamFailure(
                t, 504, "upstream_timeout", f"{t.key} did not answer within {t.timeout_ms} ms", True
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(
                t, 502, "upstream_unreachable", f"{t.key} unreachable: {type(exc).__name__}", True
            ) from None
        upstream_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            kind, msg = parse_upstream_error(p.protocol, status, raw)
            retryable = status in _RETRYABLE or status >= 500
            code = "upstream_error" if retryable else (kind or "upstream_rejected")
            return self._raise(t, status, code, f"{t.key} answered {status}: {msg}", retryable)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                t, 502, "upstream_bad_response", f"{t.key} sent a response that is not JSON", True
            ) from None
        if p.protocol == "openai":
            usage = usage_from_openai(doc)
            text = _openai_text(doc)
        else:
            usage = usage_from_anthropic(doc)
            text = _anthropic_text(doc)
        if p.protocol != caller:
            raw = orjson.dumps(response_for_caller(caller, p.protocol, doc))
        return UpstreamResult(
            target=t,
            provider=p,
            status=200,
            body=raw,
            usage=usage,
            output_text=text,
            upstream_ms=upstream_ms,
        )

    @staticmethod
    def _raise(t: Target, status: int, code: str, msg: str, retryable: bool) -> UpstreamResult:
        raise UpstreamFailure(t, status if not retryable else 502, code, msg, retryable)

    async def _relay(
        self,
        resp: aiohttp.ClientResponse,
        caller: Protocol,
        t: Target,
        relay: StreamRelay,
        res: UpstreamResult,
    ) -> AsyncIterator[bytes]:
        """Yield caller-protocol SSE bytes as upstream events complete, never buffering the
        whole stream; `res.finished` turns true just before the piece with the terminal event."""
        try:
            async for chunk in resp.content.iter_any():
                out = relay.feed(chunk)
                if out:
                    res.finished = relay.done
                    yield out
            if not relay.done:
                tail = relay.finish()  # an upstream that ended without its last blank line
                if relay.done and tail:
                    res.finished = True
                    yield tail
        except (aiohttp.ClientError, TimeoutError) as exc:
            res.stream_error = f"{type(exc).__name__}"
        finally:
            resp.release()
            res.usage = relay.accumulator.usage
            res.output_text = relay.accumulator.text
        if not relay.done:
            res.stream_error = res.stream_error or "stream ended early"
            res.finished = True
            yield stream_error(
                caller,
                "upstream_stream_interrupted",
                f"{t.key} failed after the first streamed byte ({res.stream_error}); a fallback "
                "is impossible once streaming has begun — retry the request",
                502,
            )


def _openai_text(doc: dict[str, Any]) -> str:
    try:
        c = doc["choices"][0]["message"].get("content")
        return c if isinstance(c, str) else ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _anthropic_text(doc: dict[str, Any]) -> str:
    try:
        return "".join(b.get("text", "") for b in doc["content"] if b.get("type") == "text")
    except (KeyError, TypeError, AttributeError):
        return ""
