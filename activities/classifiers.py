"""Classifier detectors at work: an HTTP service or an LLM judge asked about a call's text.

`classify(g, hooks, texts_of)` runs after the pattern hooks, on what they left: the input hooks
from `activities.guardrails.guard_request` (`classify_request`), the output hooks from
`guard_response` (non-streamed answers), `activities.classifier_stream` (streamed answers, at
their end) and `guard_tool_arguments` (session tool calls). A call with no classifier costs its
hooks one attribute test:

- `on_match: block` classifiers are awaited (concurrently, each within its `timeout_ms`); a
  match refuses the call (`guardrail_blocked`, 400), no verdict refuses it under `fail_closed`
  (`guardrail_unavailable`, 503) or lets it through under `fail_open`; a client leaving while it
  waits refuses the call `client_closed` (499) and cancels requests no other caller waits on;
- `flag` / `allow` classifiers run off the call's path: the call goes on, the verdict is recorded
  when it arrives (at most `MAX_PENDING` in flight; beyond that a `classifier_unavailable` event).

Every verdict is a guardrail event (hook, detector `http_classifier` | `llm_judge`, type, action,
rule id, the text's fingerprint, and the verdict's JSON): never the text. Verdicts are cached per
classifier by the text's keyed hash (HMAC-SHA256 under the deployment salt), LRU-bounded by the
classifier's `cache_size`. The judge's call is a governed call (`activities.llm_call`) under its
own identity, so it is budgeted, rate-limited and in the ledger; its own hooks run no
classifiers (no judge of the judge).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from activities.stream_stop import CLIENT_CLOSED
from policies.config.models import NON_CALLING_ROLES, ApiKey
from policies.guardrails.classifiers import (
    INPUT_HOOKS,
    NOT_FINDINGS,
    OUTPUT_HOOKS,
    UNAVAILABLE,
    ClassifierSpec,
    HttpClassifier,
    LlmJudge,
    Verdict,
    VerdictError,
    classified_text,
    classifiers_for,
    http_request_body,
    judge_messages,
    parse_http_answer,
    parse_judge_answer,
    verdict_action,
    verdict_json,
)
from policies.guardrails.evaluate import GuardrailEvent
from policies.identity import resolve_identity
from policies.refusals import Refusal
from policies.request_text import RequestText

if TYPE_CHECKING:
    from activities.gateway import Gateway
    from activities.guardrails import CallGuard

log = logging.getLogger("governor.guardrails")

GUARDRAIL_UNAVAILABLE = "guardrail_unavailable"
MAX_PENDING = 256  # background (flag-mode) verdicts in flight per gateway
MAX_CACHES = 64  # classifier caches kept (a reload that changes a classifier starts a new one)
CLOSE_GRACE = 2.0  # seconds a closing gateway waits for background verdicts to be recorded

# Set while a judge's own governed call runs: its input hooks classify nothing.
_judging: contextvars.ContextVar[bool] = contextvars.ContextVar("governor_judging", default=False)


class _Asking:
    """One classifier request in flight, shared by every caller asking about the same text."""

    __slots__ = ("blocking", "task", "waiters")

    def __init__(self, task: asyncio.Task[tuple[Verdict, str | None]], blocking: bool) -> None:
        self.task = task
        self.blocking = blocking
        self.waiters = 0


class ClassifierRuntime:
    """A gateway's classifier I/O: one aiohttp pool per HTTP classifier, verdict caches, the
    background verdicts in flight. `calls` counts real classifier requests per classifier id
    (cache hits are not calls)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._sessions: dict[str, tuple[HttpClassifier, aiohttp.ClientSession]] = {}
        # Requests using each pool now, and pools a reload retired: closed when their last
        # request ends (never under a running call).
        self._users: dict[aiohttp.ClientSession, int] = {}
        self._retired: set[aiohttp.ClientSession] = set()
        self._caches: OrderedDict[tuple[Any, ...], OrderedDict[bytes, Verdict]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        # Texts being classified now, by keyed hash: concurrent callers share one request.
        self._inflight: dict[bytes, _Asking] = {}
        self._keys: tuple[object, dict[str, ApiKey]] | None = None
        self.calls: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}  # requests cancelled with no caller left, per id

    # Verdicts ----------------------------------------------------------------------------------

    async def verdict(
        self, spec: ClassifierSpec, text: str, key: bytes
    ) -> tuple[Verdict, bool, str | None]:
        """(verdict, cached, judge call id) for `text`; `key` is its keyed hash. A text being
        classified already waits for that answer (no second request: `cached`). Never raises
        for the service's failures: they are a Verdict with `error`.

        A shared request in flight counts its waiters: when the last one leaves (its caller
        cancelled) a `block` classifier's request is cancelled too (nobody will act on its
        answer; a judge's call then releases its reservation and charges nothing). A `flag` /
        `allow` request is waited on by a background task, not by a caller, so it completes:
        its verdict is the audit record of a call that already went on, and it fills the cache
        for the next identical text."""
        cache = self._cache(spec)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            cache.move_to_end(key)  # type: ignore[union-attr]
            return hit, True, None
        asking = self._inflight.get(key)
        shared = asking is not None
        if asking is None:
            task = asyncio.get_running_loop().create_task(self._ask(spec, text, key, cache))
            asking = self._inflight[key] = _Asking(task, spec.blocking)
            done = functools.partial(self._forget_done, key, asking)
            task.add_done_callback(done)
        asking.waiters += 1
        try:  # shielded: one caller leaving does not cancel the others' wait
            v, call_id = await asyncio.shield(asking.task)
        finally:
            asking.waiters -= 1
            if asking.waiters == 0 and asking.blocking and not asking.task.done():
                asking.task.cancel()  # every caller left: nobody will act on this verdict
                self._forget(key, asking)
        return v, shared, None if shared else call_id

    def _forget_done(self, key: bytes, asking: _Asking, _task: object) -> None:
        self._forget(key, asking)

    def _forget(self, key: bytes, asking: _Asking) -> None:
        if self._inflight.get(key) is asking:
            del self._inflight[key]

    async def _ask(
        self,
        spec: ClassifierSpec,
        text: str,
        key: bytes,
        cache: OrderedDict[bytes, Verdict] | None,
    ) -> tuple[Verdict, str | None]:
        self.calls[spec.id] = self.calls.get(spec.id, 0) + 1
        call_id: str | None = None
        try:
            async with asyncio.timeout(spec.timeout_s):
                if spec.http is not None:
                    v = await self._http(spec.http, text, spec.min_score)
                else:
                    assert spec.llm_judge is not None
                    v, call_id = await self._judge(spec.llm_judge, text, key.hex()[:12])
        except TimeoutError:
            v = Verdict(False, error=f"no answer within {spec.timeout_s * 1000:.0f} ms")
        except asyncio.CancelledError:
            self.cancelled[spec.id] = self.cancelled.get(spec.id, 0) + 1
            raise
        except Exception as exc:  # anything else is no verdict too, never the caller's 500
            log.exception("guardrail classifier %s failed", spec.id)
            v = Verdict(False, error=f"the classifier failed ({type(exc).__name__})")
        if v.error is None and cache is not None:
            cache[key] = v
            if len(cache) > spec.cache_size:
                cache.popitem(last=False)
        return v, call_id

    def _cache(self, spec: ClassifierSpec) -> OrderedDict[bytes, Verdict] | None:
        if spec.cache_size == 0:
            return None
        ck = (spec.id, spec.http, spec.llm_judge)
        c = self._caches.get(ck)
        if c is None:
            c = self._caches[ck] = OrderedDict()
            if len(self._caches) > MAX_CACHES:
                self._caches.popitem(last=False)
        return c

    async def _http(self, h: HttpClassifier, text: str, min_score: float) -> Verdict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if h.auth_env:
            token = os.environ.get(h.auth_env)
            if not token:
                return Verdict(False, error=f"environment variable {h.auth_env} is not set")
            bearer = h.auth_header.lower() == "authorization"
            headers[h.auth_header] = f"Bearer {token}" if bearer else token
        body = http_request_body(h.format, text, h.language)
        sess = self._session(h)
        self._users[sess] = self._users.get(sess, 0) + 1
        try:
            async with sess.post(
                h.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                if not 200 <= resp.status < 300:
                    return Verdict(False, error=f"the service answered HTTP {resp.status}")
                if (resp.content_length or 0) > h.max_response_bytes:
                    return Verdict(False, error=_too_large(h))
                data = bytearray()
                async for chunk in resp.content.iter_chunked(16_384):
                    data += chunk
                    if len(data) > h.max_response_bytes:
                        return Verdict(False, error=_too_large(h))
        except aiohttp.ClientError as exc:  # the message could carry the URL: name the type only
            return Verdict(False, error=f"the service is unreachable ({type(exc).__name__})")
        finally:
            self._release(sess)
        try:
            return parse_http_answer(h.format, bytes(data), min_score)
        except VerdictError as exc:
            return Verdict(False, error=f"unparseable answer: {exc}")

    def _session(self, h: HttpClassifier) -> aiohttp.ClientSession:
        hit = self._sessions.get(h.url)
        if hit is not None and hit[0] == h:
            return hit[1]
        if hit is not None:  # the classifier changed on a reload: a new pool
            self._retire(hit[1])
        conn = aiohttp.TCPConnector(limit=h.max_connections, keepalive_timeout=30)
        sess = aiohttp.ClientSession(
            connector=conn, timeout=aiohttp.ClientTimeout(total=None), raise_for_status=False
        )
        self._sessions[h.url] = (h, sess)
        return sess

    def _release(self, sess: aiohttp.ClientSession) -> None:
        n = self._users.pop(sess, 1) - 1
        if n:
            self._users[sess] = n
        elif sess in self._retired:
            self._retired.discard(sess)
            self._close_later(sess)

    def _retire(self, sess: aiohttp.ClientSession) -> None:
        """Close a pool no classifier uses any more, once the requests using it end."""
        if sess in self._users:
            self._retired.add(sess)
        else:
            self._close_later(sess)

    def prune(self, specs: tuple[ClassifierSpec, ...]) -> None:
        """After a reload: forget what belongs to classifiers `specs` (the new config's) no
        longer has: their pools (closed once their running requests end), verdict caches and
        counters. Without this a reload kept them, and reloads that changed URLs piled up open
        pools. A call still running on the old config that asks again makes a new one, which
        the next reload prunes."""
        http = {s.http.url: s.http for s in specs if s.http is not None}
        for url, (h, sess) in list(self._sessions.items()):
            if http.get(url) != h:
                del self._sessions[url]
                self._retire(sess)
        live = {(s.id, s.http, s.llm_judge) for s in specs}
        for ck in [ck for ck in self._caches if ck not in live]:
            del self._caches[ck]
        ids = {s.id for s in specs}
        for counts in (self.calls, self.cancelled):
            for cid in [cid for cid in counts if cid not in ids]:
                del counts[cid]

    def _close_later(self, sess: aiohttp.ClientSession) -> None:
        """Close a retired pool off the caller's path. Not subject to MAX_PENDING (one per
        reload that changes a classifier): a full queue must not leave the pool open."""
        task = asyncio.get_running_loop().create_task(sess.close(), name="classifier-pool-close")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _judge(self, j: LlmJudge, text: str, nonce: str) -> tuple[Verdict, str | None]:
        from activities.gateway import new_call_id
        from activities.llm_call import CallRequest, governed_call

        key = self._judge_key(j.key_id)
        if key is None:
            return Verdict(False, error=f"judge key {j.key_id!r} is not a calling api key"), None
        settings = self.gw.config.settings
        headers = {"x-governor-workflow-tag": j.workflow_tag}
        if j.project is not None:
            headers["x-governor-project"] = j.project
        body = {
            "model": j.model,
            "messages": judge_messages(text, nonce),
            "max_tokens": j.max_output_tokens,
            "temperature": 0,
        }
        call_id = new_call_id()
        token = _judging.set(True)
        try:
            ident = resolve_identity(key, headers, settings)
            req = CallRequest(
                protocol="openai",
                body=body,
                ident=ident,
                call_id=call_id,
                body_bytes=len(orjson.dumps(body)),
                replayable=False,
            )
            out = await governed_call(self.gw, req)
        except Refusal as r:
            return Verdict(False, error=f"the judge's call was refused: {r.code}"), call_id
        finally:
            _judging.reset(token)
        try:
            return parse_judge_answer(_answer(out.body)), call_id
        except VerdictError as exc:
            return Verdict(False, error=f"unparseable verdict: {exc}"), call_id

    def _judge_key(self, key_id: str) -> ApiKey | None:
        by_hash = self.gw.config.keys_by_hash
        if self._keys is None or self._keys[0] is not by_hash:
            self._keys = (by_hash, {k.id: k for k in by_hash.values()})
        k = self._keys[1].get(key_id)
        return k if k is not None and k.role not in NON_CALLING_ROLES else None

    # Background --------------------------------------------------------------------------------

    def background(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` off the caller's path; False (and `work` closed) when MAX_PENDING are
        already in flight."""
        if len(self._tasks) >= MAX_PENDING:
            work.close()
            return False
        task = asyncio.get_running_loop().create_task(work, name="guardrail-classifier")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for the background verdicts in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for asking in list(self._inflight.values()):
            asking.task.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for sess in [s for _, s in self._sessions.values()] + list(self._retired):
            await sess.close()
        self._sessions.clear()
        self._retired.clear()


def _too_large(h: HttpClassifier) -> str:
    return f"the answer is larger than {h.max_response_bytes} bytes"


def _answer(body: bytes) -> str:
    """The judge's text from an OpenAI chat completion body ('' when there is none)."""
    try:
        c = orjson.loads(body)["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return ""
    return c if isinstance(c, str) else ""


def runtime(gw: Gateway) -> ClassifierRuntime:
    rt = gw.classifiers
    if rt is None:
        rt = gw.classifiers = ClassifierRuntime(gw)
    return rt  # type: ignore[no-any-return]


# One call ----------------------------------------------------------------------------------------


def wanted(g: CallGuard) -> bool:
    """Whether this call's hooks may have classifiers to ask (not within a judge's call)."""
    return bool(g.config.classifiers) and not _judging.get()


def output_specs(g: CallGuard) -> tuple[ClassifierSpec, ...]:
    """The classifiers of this call's output hooks (request-output, tool-input); () within a
    judge's own call."""
    if not wanted(g):
        return ()
    return tuple(
        s for s in g.config.classifiers
        if s.when.matches(g.metadata) and any(h in s.hooks for h in OUTPUT_HOOKS)
    )  # fmt: skip


async def classify_request(g: CallGuard, view: RequestText) -> None:
    """Ask the classifiers of each input hook about the call's text at that hook (`view`: the
    normalised request text, after the pattern hooks' redactions); raises Refusal when a
    `block` classifier matches or, under `fail_closed`, gives no verdict."""
    await classify(g, INPUT_HOOKS, lambda hook: [s.text for s in view.for_hook(hook)])


async def classify(
    g: CallGuard, hooks: tuple[str, ...], texts_of: Callable[[str], list[str]]
) -> None:
    """Ask the classifiers of each of `hooks` about the text `texts_of(hook)` gives (its parts,
    newline-joined and cut to each classifier's `max_text_chars`): `block` ones awaited
    concurrently, `flag` / `allow` ones off the call's path. Raises Refusal when a `block`
    classifier matches or, under `fail_closed`, gives no verdict."""
    rt = runtime(g.gw)
    waits: list[Coroutine[Any, Any, GuardrailEvent]] = []
    for hook in hooks:
        specs = classifiers_for(g.config.classifiers, hook, g.metadata)
        texts = [t for t in texts_of(hook) if t] if specs else []
        if not texts:
            continue
        for spec in specs:
            text = classified_text(texts, spec.max_text_chars)
            if spec.blocking:
                waits.append(_event(rt, g, spec, hook, text))
            elif not rt.background(_record_when_known(rt, g, spec, hook, text)):
                v = Verdict(False, error=f"more than {MAX_PENDING} verdicts pending")
                _record(g, spec, hook, _key(g, spec, text)[1], v, False, 0.0, None)
    if not waits:
        return
    events = await _while_caller_waits(g.stop, waits)
    for e in events:
        if e.action == "blocked":
            raise _refusal(e)


async def _gather(waits: list[Coroutine[Any, Any, GuardrailEvent]]) -> list[GuardrailEvent]:
    return list(await asyncio.gather(*waits)) if len(waits) > 1 else [await waits[0]]


async def _while_caller_waits(
    stop: Any, waits: list[Coroutine[Any, Any, GuardrailEvent]]
) -> list[GuardrailEvent]:
    """Await the `block` verdicts; a client that leaves meanwhile (`stop`: the call's
    StreamStop, None when there is no client to watch) cancels the wait — and with it each
    classifier request nobody else waits on — and refuses the call `client_closed` 499."""
    if stop is None:
        return await _gather(waits)
    if stop.reason is None:
        stop.bind()
        stop.reading = True
        try:
            return await _gather(waits)
        except asyncio.CancelledError:
            if not stop.absorb():
                raise
        finally:
            stop.reading = False
    else:  # gone before the verdicts were asked for: ask nothing
        for w in waits:
            w.close()
    if stop.reason != CLIENT_CLOSED:  # a kill of the call's session
        raise Refusal(403, stop.reason, f"the session was killed while a guardrail classifier "
                      f"was judging this call ({stop.detail or 'no reason given'})")
    raise Refusal(499, CLIENT_CLOSED, "the client closed the request while a guardrail "
                  "classifier was judging it; the classifier request was cancelled")


def _key(g: CallGuard, spec: ClassifierSpec, text: str) -> tuple[bytes, str]:
    """(cache key, event fingerprint) of `text`: keyed hashes, useless without the salt."""
    raw = text.encode("utf-8", "surrogatepass")
    key = hmac.digest(g.salt, spec.id.encode() + b"\0" + raw, hashlib.sha256)
    return key, hmac.digest(g.salt, raw, hashlib.sha256).hex()[:16]


async def _event(
    rt: ClassifierRuntime, g: CallGuard, spec: ClassifierSpec, hook: str, text: str
) -> GuardrailEvent:
    key, fp = _key(g, spec, text)
    started = time.perf_counter()
    v, cached, call_id = await rt.verdict(spec, text, key)
    ms = (time.perf_counter() - started) * 1000
    return _record(g, spec, hook, fp, v, cached, ms, call_id)


async def _record_when_known(
    rt: ClassifierRuntime, g: CallGuard, spec: ClassifierSpec, hook: str, text: str
) -> None:
    try:
        await _event(rt, g, spec, hook, text)
    except Exception as exc:  # a background verdict must never take the loop down
        log.warning("classifier %s: verdict not recorded (%s)", spec.id, type(exc).__name__)


def _record(
    g: CallGuard,
    spec: ClassifierSpec,
    hook: str,
    fp: str,
    v: Verdict,
    cached: bool,
    ms: float,
    call_id: str | None,
) -> GuardrailEvent:
    etype, action = verdict_action(spec, v)
    if v.error is not None:
        log.warning("guardrail classifier %s unavailable at %s: %s", spec.id, hook, v.error)
    e = GuardrailEvent(
        hook, spec.detector, etype, action, spec.id, fp,
        verdict_json(v, cached=cached, ms=ms, judge_call_id=call_id),
    )  # fmt: skip
    g.record([e])
    return e


def _refusal(e: GuardrailEvent) -> Refusal:
    if e.type == UNAVAILABLE:
        return Refusal(
            503,
            GUARDRAIL_UNAVAILABLE,
            f"guardrail classifier {e.rule_id!r} ({e.detector}) was unavailable at hook "
            f"{e.hook} and its fail_closed policy refuses calls without a verdict; retry later",
            retry_after=1.0,
        )
    from activities.guardrails import blocked_refusal

    return blocked_refusal(e)


__all__ = [
    "NOT_FINDINGS", "ClassifierRuntime", "classify", "classify_request", "output_specs",
    "runtime", "wanted",
]
