"""Guardrails on the governed call: the four hooks applied to real requests, responses, streams
and tool calls, with every event journaled in the ledger and counted in Prometheus.

The detection itself is pure (`policies.guardrails`); this module knows the wire shapes (what
is user content, what is a tool result, where tool-call arguments are) and does the I/O around
it (salt, ledger, metrics). A request none of whose hooks has a rule for its metadata costs a
dict lookup and a tuple scan, and no stream is ever wrapped unless an output rule applies.
"""

from __future__ import annotations

import os
import secrets as _secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from activities import classifiers, scan_pool
from activities.classifier_stream import classify_stream
from activities.gateway import Gateway
from activities.router import UpstreamResult
from activities.wire.errors import stream_error
from activities.wire.sse import SSEParser, encode_sse
from activities.wire.usage import Protocol
from policies.alerts import guardrail_class
from policies.config.gateway import GatewayConfig
from policies.config.models import METADATA_FIELDS
from policies.guardrails import GuardrailEvent, GuardrailsConfig, HookResult, StreamGuard, evaluate
from policies.guardrails.classifiers import NOT_FINDINGS, OUTPUT_HOOKS, ClassifierSpec
from policies.guardrails.config import GuardrailRule
from policies.guardrails.stream import StreamVerdict
from policies.refusals import Refusal
from policies.request_text import Path as BodyPath
from policies.request_text import (
    Piece,
    RequestText,
    Segment,
    anthropic_output_view,
    redacted_pieces,
    request_view,
    with_texts,
)

KIND = "gateway-guardrails-config"
GUARDRAIL_BLOCKED = "guardrail_blocked"
SALT_ENV = "GOVERNOR_FINGERPRINT_SALT"
SALT_FILE = "fingerprint.salt"


# Config and salt ------------------------------------------------------------------------------

_merged: dict[int, tuple[object, GuardrailsConfig | None]] = {}


def merged_config(config: GatewayConfig) -> GuardrailsConfig | None:
    """All guardrails documents of a gateway config as one (None: no rules at all), cached per
    config object so the hot path does not re-merge."""
    docs = config.extra.get(KIND)
    if not docs:
        return None
    key = id(docs)
    hit = _merged.get(key)
    if hit is not None and hit[0] is docs:
        return hit[1]
    rules: list[GuardrailRule] = []
    specs: list[ClassifierSpec] = []
    for d in docs:
        assert isinstance(d, GuardrailsConfig)
        rules.extend(d.rules)
        specs.extend(d.classifiers)
    merged: GuardrailsConfig | None = None
    if len(docs) == 1:
        merged = docs[0] if rules or specs else None  # type: ignore[assignment]
    elif rules or specs:
        names = "+".join(d.name for d in docs)  # type: ignore[attr-defined]
        merged = GuardrailsConfig(
            type="gateway-guardrails-config", name=names, rules=tuple(rules),
            classifiers=tuple(specs),
        )  # fmt: skip
    if len(_merged) > 64:
        _merged.clear()
    _merged[key] = (docs, merged)  # holding `docs` keeps its id from being reused
    return merged


_salts: dict[str, bytes] = {}


def fingerprint_salt(data_dir: Path) -> bytes:
    """The HMAC salt of fingerprints: `GOVERNOR_FINGERPRINT_SALT`, else a random salt kept in
    `<data_dir>/fingerprint.salt` (created once, mode 0600). Replicas that must agree on
    fingerprints share the env value or the data dir. Never logged."""
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode("utf-8")
    key = str(data_dir)
    hit = _salts.get(key)
    if hit is not None:
        return hit
    path = Path(data_dir) / SALT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        salt = path.read_bytes().strip()
    except FileNotFoundError:
        salt = _new_salt_file(path)
    if not salt:
        raise RuntimeError(f"fingerprint salt file {path} is empty; delete it to get a new one")
    _salts[key] = salt
    return salt


def _new_salt_file(path: Path) -> bytes:
    """Make `path` hold a new random salt (mode 0600) unless another process made it first;
    the salt it holds. Written beside it and linked in, so the file appears whole or not at
    all: a replica starting at the same moment never reads it empty (and is then refused)."""
    salt = _secrets.token_hex(32).encode()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(salt)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process linked its salt first
        except FileExistsError:
            return path.read_bytes().strip()
        except OSError:  # a filesystem without hard links: created in place, as before
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                return path.read_bytes().strip()
            with os.fdopen(fd, "wb") as f:
                f.write(salt)
        return salt
    finally:
        tmp.unlink(missing_ok=True)


def salt_source(data_dir: Path) -> str:
    """Where `fingerprint_salt(data_dir)` comes from, for an error naming the setting to fix."""
    return SALT_ENV if os.environ.get(SALT_ENV) else str(Path(data_dir) / SALT_FILE)


def gateway_salt(gw: Gateway) -> bytes:
    """The deployment's HMAC salt, read once per gateway (it is on every call's path)."""
    salt = gw.fingerprint_salt
    if salt is None:
        salt = gw.fingerprint_salt = fingerprint_salt(gw.writer.journal_dir.parent)
    return salt


def metadata_of(ident: Any) -> dict[str, str]:
    """Canonical metadata (project, workflow_tag ...) of an Identity or SessionIdentity."""
    out: dict[str, str] = {}
    for k in METADATA_FIELDS:
        v = getattr(ident, k, None)
        if v is not None:
            out[k] = v
    return out


# One call's guard -------------------------------------------------------------------------------


@dataclass(slots=True)
class CallGuard:
    """The guardrails of one call: rules per hook for its metadata, and event bookkeeping."""

    gw: Gateway
    config: GuardrailsConfig
    metadata: dict[str, str]
    call_id: str
    model: str
    protocol: Protocol = "openai"
    # The call's StreamStop (None: no client to watch): a classifier wait ends when it leaves.
    stop: Any = None
    _active: dict[str, bool] = field(default_factory=dict)
    _seq: dict[str, int] = field(default_factory=dict)
    _salt: bytes = b""
    # Large texts of a response, evaluated off the event loop before the walk that applies them.
    _collect: list[tuple[str, str]] | None = None
    _pre: dict[tuple[str, str], HookResult] = field(default_factory=dict)

    def active(self, hook: str) -> bool:
        on = self._active.get(hook)
        if on is None:
            on = self._active[hook] = bool(self.config.rules_for(hook, self.metadata))
        return on

    @property
    def salt(self) -> bytes:
        if not self._salt:
            self._salt = gateway_salt(self.gw)
        return self._salt

    def check(self, hook: str, text: str) -> HookResult:
        """Evaluate `hook` on `text`, record its events; raises Refusal when it blocks."""
        if self._collect is not None:  # a dry walk: only note which texts there are
            self._collect.append((hook, text))
            return HookResult("allowed", text)
        pre = self._pre.pop((hook, text), None) if self._pre else None
        if pre is None:
            pre = evaluate(self.config, hook, text, self.metadata, self.salt)
        return self._apply(pre)

    async def precompute(self, walk: Any) -> None:
        """Run `walk()` dry to find the texts it will check; evaluate the large ones off the
        event loop now, so the real walk only applies their results."""
        self._collect = []
        try:
            walk()
        finally:
            texts, self._collect = self._collect, None
        for hook, text in texts:
            if len(text) >= scan_pool.OFFLOAD_CHARS and (hook, text) not in self._pre:
                args = (self.config, hook, text, self.metadata, self.salt)
                self._pre[(hook, text)] = await scan_pool.evaluate_off_loop(*args)

    async def check_async(self, hook: str, text: str) -> HookResult:
        """`check`, with a large text evaluated off the event loop (`scan_pool`)."""
        if len(text) < scan_pool.OFFLOAD_CHARS:
            return self.check(hook, text)
        args = (self.config, hook, text, self.metadata, self.salt)
        return self._apply(await scan_pool.evaluate_off_loop(*args))

    def _apply(self, res: HookResult) -> HookResult:
        if res.events:
            self.record(res.events)
        if res.blocking_event is not None:
            raise blocked_refusal(res.blocking_event)
        return res

    def stream_guard(self, hook: str) -> StreamGuard:
        return StreamGuard(self.config, hook, self.metadata, self.salt)

    def record(self, events: list[GuardrailEvent]) -> None:
        """Journal each event (never its value) and count it; never on the caller's wait."""
        gw, md = self.gw, self.metadata
        now = time.time()
        m = gw.metrics
        for e in events:
            seq = self._seq.get(e.hook, 0)
            self._seq[e.hook] = seq + 1
            m.child(m.guardrail_events, guardrail_class(e.detector), e.type, e.hook, e.action).inc()
            if e.action == "allowed" and gw.alerts is not None and e.type not in NOT_FINDINGS:
                gw.alerts.on_guardrail(e.detector, e.type, e.hook, e.action, md)
            row = {
                "ts": now,
                "call_id": self.call_id,
                "hook": e.hook,
                "seq": seq,
                "detector": e.detector,
                "type": e.type,
                "action": e.action,
                "rule_id": e.rule_id,
                "fingerprint": e.fingerprint,
                "session_id": md.get("session_id"),
                "project": md.get("project") or "UNTAGGED",
                "workflow_tag": md.get("workflow_tag"),
                "model": self.model,
            }
            if e.verdict is not None:
                row["verdict"] = e.verdict
            gw.writer.record_event(row)


def call_guard(
    gw: Gateway, ident: Any, call_id: str, model: str, protocol: Protocol = "openai"
) -> CallGuard | None:
    """The guard of one call, or None when the gateway has no guardrail rules at all."""
    cfg = merged_config(gw.config)
    if cfg is None:
        return None
    return CallGuard(gw, cfg, metadata_of(ident), call_id, model, protocol)


def blocked_refusal(e: GuardrailEvent) -> Refusal:
    """The caller's error: hook, detector and type named; the value never."""
    return Refusal(
        400,
        GUARDRAIL_BLOCKED,
        f"guardrail rule {e.rule_id!r} blocked this call at hook {e.hook}: detector {e.detector} "
        f"found {e.type}; remove it and retry (fingerprint {e.fingerprint})",
    )


# Request side: request-input and tool-output -------------------------------------------------


async def guard_request(gw: Gateway, req: Any, view: RequestText) -> CallGuard | None:
    """Run the input hooks on the request's text segments (`view`: the normalised view of
    `req.body`, each segment's parts joined as the model reads them); a redaction replaces
    `req.body`, so only the redaction goes upstream (and into any stored text). Raises Refusal
    when a hook blocks. Large segments are scanned off the event loop (`scan_pool`)."""
    g = call_guard(gw, req.ident, req.call_id, str(req.body.get("model", "")), req.protocol)
    if g is None:
        return None
    texts: dict[BodyPath, str] = {}
    for seg in view.segments:
        if not seg.text or not seg.hook or not g.active(seg.hook):
            continue
        res = await g.check_async(seg.hook, seg.text)
        if res.redactions:
            found = ((f.start, f.end, f.type) for f in res.redactions)
            texts.update(redacted_pieces(seg, found))
    if texts:
        req.body = with_texts(req.body, texts)
    if g.config.classifiers and classifiers.wanted(g):
        # Classifier detectors see the text after the pattern hooks (so redacted).
        g.stop = getattr(req, "stop", None)
        await classifiers.classify_request(
            g, request_view(req.protocol, req.body) if texts else view
        )
    return g


_SAME: Any = object()


def _text(g: CallGuard, hook: str, text: object) -> Any:
    """The text after `hook` (redacted under mutate), or _SAME when unchanged."""
    if not isinstance(text, str) or not text or not g.active(hook):
        return _SAME
    res = g.check(hook, text)
    return res.text if res.text is not text and res.text != text else _SAME


# Response side: request-output and tool-input -------------------------------------------------


def _arguments(g: CallGuard, args: str) -> Any:
    """Tool-call arguments (a JSON string) after tool-input; _SAME when unchanged."""
    new = _text(g, "tool-input", args)
    if new is _SAME:
        return _SAME
    try:
        orjson.loads(new)
    except orjson.JSONDecodeError:
        # A redaction that cut through JSON syntax: hand over no argument values at all.
        return orjson.dumps({"redacted": "[REDACTED:tool_arguments]"}).decode()
    return new


async def guard_response(
    g: CallGuard | None, res: UpstreamResult, model: str, stop: Any = None
) -> Refusal | None:
    """Run the output hooks on a non-streamed response; redactions rewrite `res.body` and
    `res.output_text`. Then the output hooks' classifiers see what the patterns left: `block`
    ones hold the answer until their verdict, `flag` / `allow` ones run off the call's path.
    Returns the Refusal to answer with when a hook blocks (the call still happened and is
    accounted)."""
    if g is None:
        return None
    patterns = g.active("request-output") or g.active("tool-input")
    specs = classifiers.output_specs(g) if g.config.classifiers else ()
    if not (patterns or specs):
        return None
    g.model = model
    try:
        doc = orjson.loads(res.body)
    except orjson.JSONDecodeError:
        return None
    if specs and g.stop is None:
        g.stop = stop
    walk = _openai_response if g.protocol == "openai" else _anthropic_response
    if patterns:
        if len(res.body) >= scan_pool.OFFLOAD_CHARS:
            await g.precompute(lambda: walk(g, doc))
        try:
            changed = walk(g, doc)
        except Refusal as r:
            return r
        if changed:
            res.body = orjson.dumps(doc)
            res.output_text = _output_text(g.protocol, doc)
    if specs:
        texts = _response_texts(g.protocol, doc)
        try:
            await classifiers.classify(g, OUTPUT_HOOKS, lambda hook: texts.get(hook, []))
        except Refusal as r:
            return r
    return None


def _response_texts(protocol: Protocol, doc: Any) -> dict[str, list[str]]:
    """{hook: texts} of a response body: the answer's text (request-output) and each tool
    call's arguments as JSON text (tool-input)."""
    out: dict[str, list[str]] = {"request-output": [], "tool-input": []}
    if not isinstance(doc, dict):
        return out
    if protocol == "openai":
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            msg = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(msg, dict):
                continue
            if isinstance(msg.get("content"), str):
                out["request-output"].append(msg["content"])
            calls = msg.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    out["tool-input"].append(fn["arguments"])
        return out
    content = doc.get("content")
    out["request-output"] = [seg.text for seg in anthropic_output_view(content)]
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") in ("tool_use", "server_tool_use"):
            out["tool-input"].append(_json_text(block.get("input") or {}))
    return out


def _openai_response(g: CallGuard, doc: dict[str, Any]) -> bool:
    changed = False
    choices = doc.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        msg = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(msg, dict):
            continue
        t = _text(g, "request-output", msg.get("content"))
        if t is not _SAME:
            msg["content"] = t
            changed = True
        calls = msg.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                a = _arguments(g, fn["arguments"])
                if a is not _SAME:
                    fn["arguments"] = a
                    changed = True
    return changed


def _anthropic_response(g: CallGuard, doc: dict[str, Any]) -> bool:
    changed = False
    content = doc.get("content")
    if g.active("request-output"):  # adjacent text blocks are read, and scanned, as one text
        for seg in anthropic_output_view(content):
            res = g.check("request-output", seg.text)
            if res.redactions:
                found = ((f.start, f.end, f.type) for f in res.redactions)
                for path, text in redacted_pieces(seg, found).items():
                    node: Any = doc
                    for key in path[:-1]:
                        node = node[key]
                    node[path[-1]] = text
                    changed = True
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        if btype in ("tool_use", "server_tool_use") and g.active("tool-input"):
            a = _arguments(g, orjson.dumps(block.get("input") or {}).decode())
            if a is not _SAME:
                block["input"] = orjson.loads(a)
                changed = True
    return changed


def _output_text(protocol: Protocol, doc: dict[str, Any]) -> str:
    try:
        if protocol == "openai":
            c = doc["choices"][0]["message"].get("content")
            return c if isinstance(c, str) else ""
        return "".join(b.get("text", "") for b in doc["content"] if b.get("type") == "text")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


# Streams ------------------------------------------------------------------------------------------


def guard_stream(g: CallGuard | None, res: UpstreamResult, model: str) -> None:
    """Wrap `res.stream` so output hooks see every delta before the caller does (only when an
    output rule applies to this call: otherwise the relay is left untouched), and the output
    hooks' classifiers judge the answer at its end (`activities.classifier_stream`)."""
    if g is None or res.stream is None:
        return
    text_on, tools_on = g.active("request-output"), g.active("tool-input")
    specs = classifiers.output_specs(g) if g.config.classifiers else ()
    if not (text_on or tools_on or specs):
        return
    g.model = model
    if text_on or tools_on:
        rw: _Rewriter = (
            _OpenAIRewriter(g, text_on, tools_on)
            if g.protocol == "openai"
            else _AnthropicRewriter(g, text_on, tools_on)
        )
        res.stream = _guarded(rw, res, res.stream)
    if specs:  # the classifiers see what the pattern hooks let through, at the stream's end
        classify_stream(g, res, specs)


async def _guarded(
    rw: _Rewriter, res: UpstreamResult, inner: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    try:
        async for piece in inner:
            try:
                out = rw.piece(piece)
            except Refusal as r:
                # End the stream with a well-formed error event; the relay is closed below, so
                # the provider stops generating what nobody will see.
                res.stream_error = GUARDRAIL_BLOCKED
                res.finished = True
                yield rw.pending() + stream_error(rw.g.protocol, r.code, r.message, r.status)
                return
            if out:
                yield out
    finally:
        await inner.aclose()  # type: ignore[attr-defined]


class _Rewriter:
    """Re-encodes a caller-protocol SSE stream with guarded text and tool arguments."""

    def __init__(self, g: CallGuard, text_on: bool, tools_on: bool) -> None:
        self.g = g
        self.text_on = text_on
        self.tools_on = tools_on
        self.parser = SSEParser()
        self.out: list[bytes] = []

    def pending(self) -> bytes:
        """What was rewritten before a block in the same piece (safe: already checked)."""
        data = b"".join(self.out)
        self.out = []
        return data

    def piece(self, data: bytes) -> bytes:
        for ev in self.parser.feed(data):
            self.event(ev.event, ev.data)
        return self.pending()

    def event(self, name: str | None, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def feed(self, guard: StreamGuard, text: str, final: bool) -> str:
        v = guard.feed(text) if text else None
        out = v.text if v is not None else ""
        events = list(v.events) if v is not None else []
        if v is not None and v.blocking_event is not None:
            self.g.record(events)
            raise blocked_refusal(v.blocking_event)
        if final:
            f = guard.finish()
            events.extend(f.events)
            if f.blocking_event is not None:
                self.g.record(events)
                raise blocked_refusal(f.blocking_event)
            out += f.text
        if events:
            self.g.record(events)
        return out


class _OpenAIRewriter(_Rewriter):
    def __init__(self, g: CallGuard, text_on: bool, tools_on: bool) -> None:
        super().__init__(g, text_on, tools_on)
        self.guard = g.stream_guard("request-output") if text_on else None
        self.tools: dict[int, dict[str, Any]] = {}
        self.flushed = False

    def event(self, name: str | None, data: bytes) -> None:
        if data == b"[DONE]":
            self.flush()
            self.out.append(b"data: [DONE]\n\n")
            return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.out.append(encode_sse(data, name))
            return
        choices = doc.get("choices") if isinstance(doc, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            self.out.append(encode_sse(data, name))
            return
        finish = choice.get("finish_reason")  # type: ignore[union-attr]
        changed = False
        if self.tools_on and delta.get("tool_calls"):
            self._hold_tools(delta.pop("tool_calls"))
            changed = True
        if self.guard is not None and (isinstance(delta.get("content"), str) or finish):
            text = delta.get("content") or ""
            out = self.feed(self.guard, text, final=bool(finish))
            if finish:
                self.flushed = True
            if out != text:
                delta["content"] = out
                changed = True
        if finish:
            self._emit_tools(doc)
        if changed:
            if not finish and not delta.get("content") and set(delta) <= {"content"}:
                return  # nothing left to send in this chunk yet
            self.out.append(encode_sse(orjson.dumps(doc), name))
        else:
            self.out.append(encode_sse(data, name))

    def flush(self) -> None:
        """At [DONE] without a finish chunk: release the held-back text before the end."""
        if self.guard is not None and not self.flushed:
            self.flushed = True
            text = self.feed(self.guard, "", final=True)
            if text:
                chunk = {
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                }
                self.out.append(encode_sse(orjson.dumps(chunk)))

    def _hold_tools(self, calls: object) -> None:
        for c in calls if isinstance(calls, list) else ():
            if not isinstance(c, dict):
                continue
            idx = c.get("index", len(self.tools))
            t = self.tools.get(idx)
            f = c.get("function")
            fn: dict[str, Any] = f if isinstance(f, dict) else {}
            if t is None:
                t = self.tools[idx] = {
                    "index": idx,
                    "id": c.get("id"),
                    "type": c.get("type", "function"),
                    "function": {"name": fn.get("name"), "arguments": ""},
                }
            elif c.get("id"):
                t["id"] = c["id"]
            if fn.get("name"):
                t["function"]["name"] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                t["function"]["arguments"] += fn["arguments"]

    def _emit_tools(self, doc: dict[str, Any]) -> None:
        if not self.tools:
            return
        calls = []
        for t in self.tools.values():
            a = _arguments(self.g, t["function"]["arguments"] or "{}")
            if a is not _SAME:
                t["function"]["arguments"] = a
            calls.append(t)
        self.tools = {}
        head = {k: v for k, v in doc.items() if k not in ("choices", "usage")}
        head["choices"] = [
            {"index": 0, "delta": {"tool_calls": calls}, "logprobs": None, "finish_reason": None}
        ]
        self.out.append(encode_sse(orjson.dumps(head)))


class _AnthropicRewriter(_Rewriter):
    """Adjacent text blocks are one text to the guard (one `StreamGuard` per run of them), as
    in a non-streamed answer (`anthropic_output_view`): a secret split over two blocks is
    caught. Each released piece of the run's text goes back to the block it came from (a
    redaction over two blocks: its marker where it starts), so block boundaries do not move;
    a text block's stop, and what follows it, wait until all of its text is released (at the
    latest when the run ends: a block that is not text, or the message's end). Each delta's
    characters are kept as its block's, wherever the run's other blocks are: blocks that
    interleave, or a delta after its block's stop (the API sends neither), lose or repeat no
    text."""

    def __init__(self, g: CallGuard, text_on: bool, tools_on: bool) -> None:
        super().__init__(g, text_on, tools_on)
        self.tools: dict[int, list[Any]] = {}  # index -> [start doc, [partial json]]
        self.run: StreamGuard | None = None  # the guard of the current run of text blocks
        # The run's text not yet released, by the block it came from, in text order:
        # [index, first char, end] (a block's deltas in a row are one).
        self.parts: list[list[int]] = []
        # The text blocks of the run, each with where its text fed so far ends (its stop waits
        # until the guard has released that far).
        self.blocks: dict[int, int] = {}
        self.fed = 0  # characters of the run's text fed to its guard
        self.released = 0  # ... and released by it
        # Events held behind a text block's stop until that block's text is all released:
        # ("text", index, text) | ("stop", index, sse) | ("raw", -1, sse)
        self.queue: list[tuple[str, int, Any]] = []

    def event(self, name: str | None, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._put("raw", -1, encode_sse(data, name))
            return
        kind = doc.get("type", name) if isinstance(doc, dict) else None
        idx = doc.get("index") if isinstance(doc, dict) else None
        in_run = isinstance(idx, int) and idx in self.blocks
        if kind == "content_block_start" and isinstance(idx, int):
            block = doc.get("content_block") or {}
            btype = block.get("type")
            if btype == "text" and self.text_on:
                if self.run is None:
                    self.run = self.g.stream_guard("request-output")
                self.blocks.setdefault(idx, self.fed)
                first = block.get("text")
                if first:
                    block["text"] = ""
                    data = orjson.dumps(doc)
                self._put("raw", -1, encode_sse(data, name))
                if isinstance(first, str) and first:
                    self._feed_run(idx, first, final=False)
                return
            self._end_run()
            if btype in ("tool_use", "server_tool_use") and self.tools_on:
                start = block.get("input")
                self.tools[idx] = [doc, [orjson.dumps(start).decode()] if start else []]
                return
        elif kind == "content_block_delta" and isinstance(idx, int):
            delta = doc.get("delta") or {}
            if idx in self.tools and delta.get("type") == "input_json_delta":
                part = delta.get("partial_json")
                if isinstance(part, str):
                    self.tools[idx][1].append(part)
                return
            if in_run and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    self._feed_run(idx, text, final=False)
                return
        elif kind == "content_block_stop" and isinstance(idx, int):
            if in_run:
                self._put("stop", idx, encode_sse(data, name))
                self._drain()
                return
            tool = self.tools.pop(idx, None)
            if tool is not None:
                self._emit_tool(idx, tool)
        elif kind == "message_delta" or kind == "message_stop":
            self._end_run()
        self._put("raw", -1, encode_sse(data, name))

    def _feed_run(self, idx: int, text: str, final: bool) -> None:
        """Feed the run's guard (`text`: block `idx`'s); hand what it releases back to the
        blocks it came from."""
        guard = self.run
        if guard is None:
            return
        if text:
            parts = self.parts
            if parts and parts[-1][0] == idx and parts[-1][2] == self.fed:
                parts[-1][2] += len(text)
            else:
                parts.append([idx, self.fed, self.fed + len(text)])
            self.fed += len(text)
            self.blocks[idx] = self.fed
        verdicts: list[StreamVerdict] = []
        if text:
            verdicts.append(guard.feed(text))
        if final and not guard.blocked:
            verdicts.append(guard.finish())
        events = [e for v in verdicts for e in v.events]
        blocking = next((v.blocking_event for v in verdicts if v.blocking_event), None)
        if events:
            self.g.record(events)
        if blocking is not None:
            raise blocked_refusal(blocking)
        for v in verdicts:
            if v.raw:
                self._release(v.raw, v.spans)
        self._drain()

    def _release(self, raw: str, spans: tuple[tuple[int, int, str], ...]) -> None:
        lo = self.released
        hi = lo + len(raw)
        pieces: list[Piece] = []
        owners: list[int] = []
        for idx, first, end in self.parts:
            a, b = max(first, lo), min(end, hi)
            if a < b:  # (a path of its own: a block may have several parts in `raw`)
                pieces.append(Piece((len(pieces),), a - lo, b - lo))
                owners.append(idx)
        new = redacted_pieces(Segment("request-output", raw, tuple(pieces)), spans)
        for p, idx in zip(pieces, owners, strict=True):
            text = new.get(p.path, raw[p.start : p.end])
            if text:
                self._put("text", idx, text)
        self.released = hi
        self.parts = [p for p in self.parts if p[2] > hi]

    def _end_run(self) -> None:
        """The run of text blocks ended: its guard's held text is scanned as complete."""
        if self.run is not None:
            self._feed_run(-1, "", final=True)
            self.run, self.parts, self.blocks = None, [], {}
        self._drain()

    def _put(self, kind: str, idx: int, item: Any) -> None:
        """Queue an event; a block's text goes before that block's stop if it is queued."""
        q = self.queue
        if kind == "text":
            at = next((i for i, e in enumerate(q) if e[0] == "stop" and e[1] == idx), len(q))
            q.insert(at, (kind, idx, item))
        else:
            q.append((kind, idx, item))
        if kind != "stop":
            self._drain()

    def _drain(self) -> None:
        """Send queued events up to the first text block stop whose text is not all out."""
        q = self.queue
        n = 0
        for kind, idx, item in q:
            if kind == "stop" and self.blocks.get(idx, -1) > self.released:
                break
            if kind == "text":
                self._text_delta(idx, item)
            else:
                self.out.append(item)
            n += 1
        del q[:n]

    def _text_delta(self, idx: int, text: str) -> None:
        ev = {
            "type": "content_block_delta",
            "index": idx,
            "delta": {"type": "text_delta", "text": text},
        }
        self.out.append(encode_sse(orjson.dumps(ev), "content_block_delta"))

    def _emit_tool(self, idx: int, tool: list[Any]) -> None:
        start, parts = tool
        args = "".join(parts) or "{}"
        a = _arguments(self.g, args)
        if a is not _SAME:
            args = a
        block = start.get("content_block") or {}
        block["input"] = {}
        self.out.append(encode_sse(orjson.dumps(start), "content_block_start"))
        ev = {
            "type": "content_block_delta",
            "index": idx,
            "delta": {"type": "input_json_delta", "partial_json": args},
        }
        self.out.append(encode_sse(orjson.dumps(ev), "content_block_delta"))


# Session tools --------------------------------------------------------------------------------


async def guard_tool_arguments(
    gw: Gateway, ident: Any, call_id: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """tool-input on a session tool call's arguments, before the tool runs: the pattern hooks,
    then the tool-input classifiers on what they left (one guard). Raises Refusal when either
    refuses the call."""
    g = call_guard(gw, ident, call_id, "")
    if g is None:
        return arguments
    out = arguments
    if g.active("tool-input"):
        new = _arguments(g, orjson.dumps(arguments).decode())
        if new is not _SAME:
            parsed = orjson.loads(new)
            out = parsed if isinstance(parsed, dict) else {"redacted": parsed}
    if g.config.classifiers and classifiers.wanted(g):
        text = _json_text(out)
        await classifiers.classify(g, ("tool-input",), lambda _hook: [text])
    return out


async def guard_tool_result(gw: Gateway, ident: Any, call_id: str, result: Any) -> Any:
    """tool-output on what a session tool returned, before the workflow (and model) sees it:
    the pattern hooks, then the classifier detectors on what they left (one guard, so their
    events follow in the call's sequence). Raises Refusal when either refuses the result."""
    g = call_guard(gw, ident, call_id, "")
    out = _tool_result(g, result)
    if g is not None and out is not None and g.config.classifiers and classifiers.wanted(g):
        text = out if isinstance(out, str) else _json_text(out)
        await classifiers.classify_request(g, RequestText((Segment("tool-output", text, ()),)))
    return out


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def _tool_result(g: CallGuard | None, result: Any) -> Any:
    if g is None or not g.active("tool-output") or result is None:
        return result
    if isinstance(result, str):
        new = _text(g, "tool-output", result)
        return result if new is _SAME else new
    new = _text(g, "tool-output", _json_text(result))
    if new is _SAME:
        return result
    try:
        return orjson.loads(new)
    except orjson.JSONDecodeError:
        return new
