"""Request fuzz: 10,000 seeded malformed requests over the LLM and admin routes of a real proxy
process (chat, messages, count_tokens, responses, embeddings, models; sessions, config reload,
alerts, overrides, audit, control-room panels, outcomes, metrics). Every answer is below 500
(but the honest 503s of a proxy without Temporal and of shed control-room panels), the proxy's
log holds no traceback, and its RSS stays bounded (the SIMULATED provider answers what gets
through).

Each request is a valid one with a few random mutations: methods, paths and query strings;
missing, unknown, oversized or duplicated credentials and identity headers; bodies that are not
JSON, not objects, truncated, deeply nested, huge numbers, wrong types in every field the
gateway reads (`model`, `messages`, roles, content parts, `stream`, `max_tokens`, tools),
invalid UTF-8, Idempotency-Keys of every length. A few requests with a body are delivered over a
raw socket instead (`RAW_SHARE`): cut (part of the body, then the connection closed), stalled
(part of the body, then nothing: a 408 in the caller's shape within the body timeout, or the
refusal the route gives before reading a body), or slow (the body in pieces with pauses, all
within the timeout: answered as any other). No request that was not cut may see the proxy
close its connection without an answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator.server import SimServer
from tests.proxy.test_proxy_memory_soak import rss_mb
from tests.support.servers import EXAMPLES, SubprocessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

REQUESTS = 10_000
# Honest 503s, not the input's fault: this proxy runs without Temporal (workflow sessions, the
# alert hub's routes), and control-room panels past their bound are shed with Retry-After.
NO_TEMPORAL = ('"workflow_sessions_unavailable"', '"alerting_unavailable"', '"control_room_busy"')
SEED = 9
BODY_TIMEOUT_S = 2.0
RAW_SHARE = 0.08  # of the requests with a body: ~400, a third each cut, stalled, slow
RAW_KINDS = ("cut", "stall", "slow")
ANSWER_WITHIN_S = BODY_TIMEOUT_S + 8  # a raw request not cut is answered by then
KEYS = ["gk-dev-developer", "gk-dev-admin", "gk-dev-oncall", "gk-dev-metrics", "gk-dev-intern",
        "nope", "", "x" * 5000]  # fmt: skip
IDENTITY = ["X-Governor-Project", "X-TFY-Project", "X-Governor-Session-ID", "X-TFY-Session-ID",
            "X-Governor-Team", "X-TFY-Team", "X-Governor-User-ID", "X-Governor-Workflow-Tag",
            "X-TFY-Environment", "X-Governor-Cost-Center"]  # fmt: skip
WEIRD = ["", " ", "\t", "a" * 300, "ü", "%00", "../..", "🙂" * 50, "0", "-1", "null", "{}", "[]"]
PATHS = ["/v1/chat/completions", "/v1/messages", "/gateway/sessions", "/gateway/sessions/{s}",
         "/gateway/sessions/{s}/kill", "/v1/models", "/metrics", "/healthz", "/gateway/x/y",
         "/v1/chat/completions/extra", "/gateway/sessions/%ZZ", "/" + "a" * 3000]  # fmt: skip
# The other LLM routes and every admin route family (alerts, overrides, audit, control room,
# outcomes, config reload, session operations), each also reached with an admin-side key.
MORE_LLM = ["/v1/responses", "/v1/embeddings", "/v1/messages/count_tokens"]
ADMIN = ["/gateway/config/reload", "/gateway/alerts", "/gateway/alerts/{s}",
         "/gateway/alerts/{s}/ack", "/gateway/alerts/silences", "/gateway/alerts/alertmanager",
         "/gateway/overrides", "/gateway/overrides/{s}", "/gateway/audit/sessions/{s}",
         "/gateway/audit/sessions/{s}/export", "/gateway/audit/sessions/{s}/decisions",
         "/gateway/audit/sessions/{s}/erase", "/gateway/audit/verify",
         "/gateway/control-room/panels", "/gateway/outcomes", "/gateway/outcomes/{s}",
         "/gateway/outcomes/github", "/gateway/outcomes/webhooks/{s}",
         "/gateway/sessions/{s}/chat", "/gateway/sessions/{s}/status",
         "/gateway/sessions/{s}/close"]  # fmt: skip
ADMIN_KEYS = ["gk-dev-admin", "gk-dev-oncall", "gk-dev-auditor", "gk-dev-viewer",
              "gk-dev-service"]  # fmt: skip
POSTED = ("/v1/", "/reload", "/ack", "/silences", "/alertmanager", "/erase", "/outcomes",
          "/github", "/chat", "/close")  # fmt: skip
QUERIES = ["limit=99999999999999999999", "limit=-1", "status=zz", "limit=1&limit=2",
           "x=" + "y" * 5000, "project=%FF", "limit=5", "since=-1", "since=7d", "offset=-5",
           "offset=1&limit=1", "panel=9", "panel=1,3", "view=zz", "until=x", "since=%00",
           "status=firing"]  # fmt: skip


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 10**30, 1.5, -0.0, 1e308])
    if kind in (3, 4, 5):
        return rng.choice([*WEIRD, "support-cheap", "intent-fast", "user", "assistant", "tool"])
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["type", "text", "role", "content", "x", "model", "image_url", "input"]):
            _value(rng, depth + 1) for _ in range(rng.randrange(4))}  # fmt: skip


def _body(rng: random.Random, anthropic: bool) -> bytes:
    doc: dict[str, Any] = {
        "model": rng.choice(["support-cheap", "intent-fast", "haiku"]),
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    for _ in range(rng.randrange(1, 4)):
        field = rng.choice(["model", "messages", "stream", "max_tokens", "tools", "system",
                            "stream_options", "max_completion_tokens", "tool_choice", "content",
                            "role", "parts", "temperature"])  # fmt: skip
        if field in ("content", "role"):
            msgs = doc.get("messages")
            msg = msgs[0] if isinstance(msgs, list) and msgs else None
            if isinstance(msg, dict):
                msg[field] = _value(rng)
        elif field == "parts":
            doc["messages"] = [{"role": "user", "content": [_value(rng) for _ in range(3)]}]
        else:
            doc[field] = _value(rng)
    kind = rng.randrange(12)
    raw = json.dumps(doc).encode() if kind < 8 else b""  # stdlib: ints past 64 bits too
    if kind == 8:
        raw = rng.choice([b"", b"{", b"[1,2]", b"null", b'"x"', b"{\"model\": }", b"\xff\xfe{}",
                          b'{"model": "\xc3"}', b"{" * 2000 + b"}" * 2000, b"NaN"])  # fmt: skip
    elif kind == 9:
        depth = rng.randrange(50, 1500)
        raw = b'{"model": ' + b"[" * depth + b"1" + b"]" * depth + b', "messages": []}'
    elif kind == 10:
        raw = json.dumps(doc).encode()[: rng.randrange(1, 40)]
    elif kind == 11:
        raw = b'{"model": "support-cheap", "max_tokens": 5, "messages": [{"role": "user", ' \
              b'"content": "' + b"\\ud800" * rng.randrange(1, 5) + b'"}]}'
    return raw


def _admin_body(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice([b"", b"{", b"[]", b"null", b"\xff", b"{" * 2000 + b"}" * 2000])
    doc = {rng.choice(["reason", "rule", "matchers", "duration", "comment", "alerts", "version",
                       "event_id", "kind", "source", "url", "ts", "status", "labels", "project",
                       "session_id", "messages", "model"]): _value(rng)
           for _ in range(rng.randrange(6))}  # fmt: skip
    if kind == 1:
        doc["alerts"] = [{"status": _value(rng), "labels": _value(rng)}]
    return json.dumps(doc).encode()


def _request(rng: random.Random, n: int) -> tuple[str, str, list[tuple[str, str]], bytes]:
    sid = rng.choice(["s1", f"f-{n}", "%20", "a" * 300, "..", "%FF"])
    path = rng.choice(PATHS[:2] * 4 + PATHS + MORE_LLM + ADMIN).replace("{s}", sid)
    admin = path.startswith("/gateway/")
    method = "POST" if path.endswith(POSTED) or "/v1/c" in path or "/v1/m" in path else "GET"
    if path.startswith("/v1/models"):
        method = "GET"
    if path.endswith("/kill"):
        method = "PUT"
    if rng.random() < 0.1:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
    if rng.random() < 0.2:
        path += "?" + rng.choice(QUERIES)
    headers: list[tuple[str, str]] = []
    if rng.random() < 0.9:
        key = KEYS[0] if rng.random() < 0.6 else rng.choice(KEYS)  # mostly past the auth
        if admin and rng.random() < 0.7:
            key = rng.choice(ADMIN_KEYS)
        headers.append(("x-api-key", key) if rng.random() < 0.2 else
                       ("Authorization", rng.choice(["Bearer ", "bearer ", "Basic ", ""]) + key))
    for _ in range(rng.randrange(4)):
        headers.append((rng.choice(IDENTITY), rng.choice([*WEIRD, "p1", "s1", "data-platform"])))
    if rng.random() < 0.15:
        headers.append(("Idempotency-Key", "k" * rng.choice([0, 1, 255, 256, 4000])))
    if rng.random() < 0.05:
        headers.extend((f"x-pad-{i}", "1") for i in range(120))
    body = b""
    if method in ("POST", "PUT"):
        body = _admin_body(rng) if admin else _body(rng, path.startswith("/v1/messages"))
    if path.endswith("/kill") and rng.random() < 0.5:
        body = json.dumps({"reason": _value(rng)}).encode()
    if path.startswith(("/v1/responses", "/v1/embeddings")) and rng.random() < 0.5:
        body = json.dumps({"model": rng.choice(["support-cheap", "intent-fast", _value(rng)]),
                           "input": _value(rng)}).encode()  # fmt: skip
    return method, path, headers, body


def _raw_plan(rng: random.Random, body: bytes) -> tuple[str, list[bytes], list[float]]:
    """How a body goes over the raw socket: its kind, the pieces sent (cut and stalled: a
    strict prefix; slow: all of it) and the pauses before each piece after the first."""
    kind = rng.choice(RAW_KINDS)
    if kind == "slow":
        n = min(rng.randrange(2, 5), len(body))
        cuts = sorted(rng.sample(range(1, len(body)), n - 1)) if n > 1 else []
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        return kind, pieces, [rng.uniform(0.01, 0.15) for _ in pieces[1:]]
    pieces = [body[: rng.randrange(len(body))]]
    return kind, pieces, [rng.choice([0.0, 0.05, 0.3])] if kind == "cut" else []  # to the close


def _raw_head(method: str, path: str, headers: list[tuple[str, str]], length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
             *(f"{k}: {v}" for k, v in headers)]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer: its head, then its body by Content-Length or chunks (a stream). The
    connection stays open (a proxy that answered before the body keeps reading it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    fields = dict(ln.split(b":", 1) for ln in head.split(b"\r\n")[1:] if b":" in ln)
    fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
    if fields.get(b"transfer-encoding") == b"chunked":
        body = await reader.readuntil(b"\r\n0\r\n\r\n")
    else:
        body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return head + body


async def _raw(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
               plan: tuple[str, list[bytes], list[float]]) -> bytes | None:
    """Send one request as planned; its answer, or None when cut (b"" when the proxy closed
    the connection without one)."""
    kind, pieces, pauses = plan
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_raw_head(method, path, headers, len(body)) + pieces[0])
        await writer.drain()
        if kind == "cut":
            await asyncio.sleep(pauses[0])
            return None
        for piece, pause in zip(pieces[1:], pauses, strict=True):
            await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
        try:
            return await asyncio.wait_for(_answer(reader), ANSWER_WITHIN_S)
        except asyncio.IncompleteReadError as exc:
            return exc.partial
    finally:
        writer.close()


def _refusal_shape_ok(path: str, doc: Any) -> bool:
    """The caller's error shape: Anthropic's on /v1/messages*, OpenAI's on the other /v1/*,
    the admin API's `{"error": {"code", "message"}}` on /gateway/*."""
    if path.startswith("/v1/messages"):
        return bool(doc.get("type") == "error" and doc["error"]["code"] == "request_timeout")
    if path.startswith("/v1/"):
        return set(doc) == {"error"} and doc["error"].get("code") == "request_timeout" \
            and "param" in doc["error"]
    return doc == {"error": {"code": "request_timeout", "message": doc["error"]["message"]}}


async def test_10000_malformed_requests_get_4xx_never_5xx_or_a_traceback(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path / "cfg")
    (cfg / "gateway.yaml").write_text((EXAMPLES / "gateway.yaml").read_text()
                                      + f"body_timeout_seconds: {BODY_TIMEOUT_S:g}\n")  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(SEED)
    statuses: Counter[int] = Counter()
    fives: list[str] = []
    broken: list[str] = []  # a request not cut that got no answer, or a wrong 408
    kinds: Counter[str] = Counter()
    async with SimServer(port=0) as sim:
        p = SubprocessProxy(cfg, data, sim.base_url).start()
        try:
            assert p.proc is not None
            sem = asyncio.Semaphore(32)
            raw_sem = asyncio.Semaphore(48)  # stalled bodies wait out the timeout beside them
            conn = aiohttp.TCPConnector(limit=32)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=conn, timeout=timeout) as h:

                def judge(method: str, path: str, status: int, text: str) -> None:
                    statuses[status] += 1
                    honest = status == 503 and any(c in text for c in NO_TEMPORAL)
                    if status >= 500 and not honest:
                        fives.append(f"{status} {method} {path[:80]} {text[:200]}")

                async def raw(method: str, path: str, headers: list[tuple[str, str]],
                              body: bytes, plan: tuple[str, list[bytes], list[float]]) -> None:
                    kind = plan[0]
                    async with raw_sem:
                        started = time.perf_counter()
                        try:
                            answer = await _raw(p.port, method, path, headers, body, plan)
                        except TimeoutError:
                            broken.append(f"{kind}: no answer in {ANSWER_WITHIN_S:g} s to "
                                          f"{method} {path[:80]}")
                            return
                        except OSError as exc:  # the proxy dropped the connection mid-request
                            broken.append(f"{kind}: {exc!r} on {method} {path[:80]}")
                            return
                        took = time.perf_counter() - started
                    if answer is None:
                        statuses[0] += 1  # cut: no answer to read
                        kinds[kind] += 1
                        return
                    head, _, rest = answer.partition(b"\r\n\r\n")
                    if not head.startswith(b"HTTP/1.1 "):
                        broken.append(f"{kind}: no answer to {method} {path[:80]}: {answer[:80]!r}")
                        return
                    status = int(head.split()[1])
                    kinds[f"{kind}-{status}"] += 1
                    judge(method, path, status, rest.decode(errors="replace"))
                    if status == 408 and (kind != "stall" or not _refusal_shape_ok(
                            path, json.loads(rest))):  # fmt: skip
                        broken.append(f"{kind}: 408 to {method} {path[:80]}: {rest[:200]!r}")
                    if kind == "stall" and took > BODY_TIMEOUT_S + 5:
                        broken.append(f"stall: answered after {took:.1f} s: {method} {path[:80]}")

                async def one(n: int) -> None:
                    method, path, headers, body = _request(rng, n)
                    if body and rng.random() < RAW_SHARE:
                        await raw(method, path, headers, body, _raw_plan(rng, body))
                        return
                    async with sem:
                        try:
                            async with h.request(method, p.base_url + path, headers=headers,
                                                 data=body, skip_auto_headers=["Content-Type"]
                                                 ) as r:  # fmt: skip
                                judge(method, path, r.status, await r.text(errors="replace"))
                        except aiohttp.ClientError as exc:  # the request was whole: no excuse
                            broken.append(f"{method} {path[:80]}: {type(exc).__name__} {exc}")

                await asyncio.gather(*(one(n) for n in range(1_000)))
                before = rss_mb(p.proc.pid)
                await asyncio.gather(*(one(n) for n in range(1_000, REQUESTS)))
                after = rss_mb(p.proc.pid)
                async with h.get(p.base_url + "/healthz") as r:
                    assert r.status == 200
        finally:
            p.stop()
    log = (data / "proxy.log").read_text(errors="replace")
    print(dict(sorted(statuses.items())), dict(sorted(kinds.items())),
          f"RSS {before:.0f} -> {after:.0f} MB")
    assert not fives, sorted({f[:300] for f in fives})[:20]
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    assert not broken, broken[:20]
    # Each raw kind was sent, and stalled bodies reached the body timeout on some routes.
    assert kinds["cut"] > 100 and kinds["stall-408"] >= 8, kinds
    assert sum(v for k, v in kinds.items() if k.startswith("slow-")) > 100, kinds
    assert sum(statuses.values()) == REQUESTS
    assert statuses[200] > 100 and sum(v for s, v in statuses.items() if 400 <= s < 500) > 5_000
    assert after - before < 50
