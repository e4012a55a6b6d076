"""Request limits: headers, JSON depth, slow bodies, Idempotency-Key length, admin queries.

Each breach is a clear 4xx in the caller's protocol (OpenAI or Anthropic error JSON), never a 500
or a connection held open. The proxy here runs the sample config with a 1 s body timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.support.servers import EXAMPLES, InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEV = {"authorization": "Bearer gk-dev-developer", "content-type": "application/json"}
ADMIN = {"authorization": "Bearer gk-dev-admin"}
MSGS = [{"role": "user", "content": "hi"}]
ROUTES = [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path_factory.mktemp("limits-config"))
    settings = (EXAMPLES / "gateway.yaml").read_text() + "body_timeout_seconds: 1\n"
    (cfg / "gateway.yaml").write_text(settings)
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path_factory.mktemp("limits-data"), sim.base_url)
        await p.start()
        try:
            yield p
        finally:
            await p.stop()


def _code(protocol: str, r: httpx.Response) -> str:
    doc = r.json()
    if protocol == "anthropic":
        assert doc["type"] == "error"
        return str(doc["error"]["message"]).split("]")[0].lstrip("[")
    return str(doc["error"]["code"])


def _nested(depth: int) -> bytes:
    return b"[" * depth + b'"x"' + b"]" * depth


@pytest.mark.parametrize(("path", "protocol"), ROUTES)
async def test_deeply_nested_json_is_400_not_a_recursion_error(
    lp: InProcessProxy, path: str, protocol: str
) -> None:
    msgs = orjson.dumps(MSGS)
    deep_model = b'{"max_tokens": 5, "messages": ' + msgs + b', "model": ' + _nested(1000) + b"}"
    deep_content = (
        b'{"model": "intent-fast", "max_tokens": 5, "messages": [{"role": "user", "content": '
        + _nested(500) + b"}]}"
    )
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for body in (deep_model, deep_content):
            r = await h.post(path, content=body, headers=DEV)
            assert r.status_code == 400 and _code(protocol, r) == "invalid_request", r.text
            assert "nests deeper than 64" in r.text


async def test_model_that_is_not_a_string_is_400(lp: InProcessProxy) -> None:
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for model in ({"a": 1}, ["intent-fast"], "", "m" * 300):
            body = {"model": model, "messages": MSGS}
            r = await h.post("/v1/chat/completions", content=orjson.dumps(body), headers=DEV)
            assert r.status_code == 400 and "`model` must be a string" in r.text


# Every POST/PUT route that reads a body, with a key that gets it that far, and the shape of its
# refusals: "openai" / "anthropic" error JSON on /v1/*, the admin JSON error on /gateway/*, an
# HTML page on the control room's forms.
DEV_KEY, ADMIN_KEY = "Bearer gk-dev-developer", "Bearer gk-dev-admin"
BODY_ROUTES = [
    ("POST", "/v1/chat/completions", DEV_KEY, "openai"),
    ("POST", "/v1/messages", DEV_KEY, "anthropic"),
    ("POST", "/v1/responses", DEV_KEY, "openai"),
    ("POST", "/v1/embeddings", DEV_KEY, "openai"),
    ("POST", "/v1/messages/count_tokens", DEV_KEY, "anthropic"),
    ("POST", "/gateway/sessions", DEV_KEY, "admin"),
    ("PUT", "/gateway/sessions/s1/kill", ADMIN_KEY, "admin"),
    ("POST", "/gateway/sessions/s1/kill", ADMIN_KEY, "admin"),
    ("POST", "/gateway/alerts/alertmanager", ADMIN_KEY, "admin"),
    ("POST", "/gateway/alerts/silences", ADMIN_KEY, "admin"),
    ("POST", "/gateway/alerts/a1/ack", ADMIN_KEY, "admin"),
    ("POST", "/gateway/alerts/a1/approve", ADMIN_KEY, "admin"),
    ("POST", "/gateway/alerts/a1/resolve", ADMIN_KEY, "admin"),
    ("POST", "/gateway/audit/sessions/s1/erase", ADMIN_KEY, "admin"),
    ("POST", "/gateway/outcomes", ADMIN_KEY, "admin"),
    ("POST", "/control-room/login", "", "html"),
]
# The POST routes of ADMIN_ROUTES that answer before any body here: session chat/tool need
# Temporal (503 first), close and config reload read none, the outcome webhooks are not
# configured (404 first). They read it, when they do, through the same `read_body`.
ANSWERED_BEFORE_THE_BODY = {
    ("POST", "/gateway/sessions/s1/chat"), ("POST", "/gateway/sessions/s1/tool"),
    ("POST", "/gateway/sessions/s1/close"), ("POST", "/gateway/config/reload"),
    ("POST", "/gateway/outcomes/github"), ("POST", "/gateway/outcomes/webhooks/jira"),
}  # fmt: skip


def _head(method: str, path: str, key: str, length: int) -> bytes:
    form = path.startswith("/control-room/")
    ctype = "application/x-www-form-urlencoded" if form else "application/json"
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Type: {ctype}",
             f"Content-Length: {length}"]  # fmt: skip
    if key:
        lines.append(f"Authorization: {key}")
    if form:
        lines.append("Origin: http://x")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def _assert_shape(shape: str, status: int, headers: dict[str, str], body: bytes,
                  code: str) -> None:  # fmt: skip
    if shape == "html":
        assert headers["content-type"].startswith("text/html"), (headers, body)
        return
    doc = orjson.loads(body)
    if shape == "anthropic":
        assert doc["type"] == "error" and doc["error"]["code"] == code, doc
        assert doc["error"]["message"].startswith(f"[{code}]"), doc
    elif shape == "openai":
        assert set(doc) == {"error"} and doc["error"]["code"] == code, doc
        assert doc["error"]["message"].startswith(f"[{code}]") and "param" in doc["error"], doc
    else:  # the admin API's own error JSON
        assert doc == {"error": {"code": code, "message": doc["error"]["message"]}}, doc


async def test_the_body_routes_cover_every_post_and_put_admin_route() -> None:
    posted = {(m, p) for m, p in ADMIN_ROUTES if m in ("POST", "PUT")}
    tested = {(m, p) for m, p, _, _ in BODY_ROUTES if p.startswith("/gateway/")}
    assert posted == tested | ANSWERED_BEFORE_THE_BODY


@pytest.mark.parametrize(("method", "path", "key", "shape"), BODY_ROUTES)
async def test_a_body_that_never_finishes_is_408_within_the_body_timeout(
    lp: InProcessProxy, method: str, path: str, key: str, shape: str
) -> None:
    """On every route that reads a body (before, count_tokens and the admin routes passed no
    timeout: a body declared 100 bytes and sent 1 held its request past 100 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", lp.port)
    started = time.perf_counter()
    writer.write(_head(method, path, key, 100) + b"{")
    await writer.drain()
    try:
        status, headers, body = await asyncio.wait_for(_read_response(reader), 10)
    finally:
        writer.close()
    took = time.perf_counter() - started
    assert status == 408, (status, body)
    _assert_shape(shape, status, headers, body, "request_timeout")
    assert 0.9 <= took < 5  # the configured 1 s, not the 90 s it used to take


@pytest.mark.parametrize(("method", "path", "key", "shape"), BODY_ROUTES)
async def test_a_client_gone_mid_body_leaves_no_traceback_and_no_error(
    lp: InProcessProxy, caplog: pytest.LogCaptureFixture, method: str, path: str, key: str,
    shape: str,
) -> None:
    """A client that closes its connection half-way through the body is not an error of ours
    (before, the admin routes logged `unhandled error` with a ConnectionResetError traceback)."""
    uv = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    uv.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", lp.port)
        writer.write(_head(method, path, key, 100) + b'{"model": ')
        await writer.drain()
        await asyncio.sleep(0.2)  # the route is waiting on the rest of the body
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.3)  # the proxy sees the close
        async with httpx.AsyncClient(base_url=lp.base_url) as h:  # and still serves
            assert (await h.get("/healthz")).status_code == 200
    finally:
        uv.removeHandler(caplog.handler)
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [(r.name, r.getMessage(), r.exc_info) for r in bad]
    assert "Traceback" not in caplog.text and "unhandled error" not in caplog.text


@pytest.mark.parametrize(("path", "protocol"), ROUTES)
async def test_too_many_or_too_large_headers_are_431(
    lp: InProcessProxy, path: str, protocol: str
) -> None:
    body = orjson.dumps({"model": "intent-fast", "max_tokens": 5, "messages": MSGS})
    many = {**DEV, **{f"x-pad-{i}": "1" for i in range(150)}}
    large = {**DEV, "x-pad": "a" * 40_000}
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for headers in (many, large):
            r = await h.post(path, content=body, headers=headers)
            assert r.status_code == 431 and _code(protocol, r) == "headers_too_large", r.text


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [("GET", "/gateway/sessions", "gk-dev-admin"), ("GET", "/metrics", "gk-dev-metrics"),
     ("GET", "/v1/models", "gk-dev-developer"), ("POST", "/v1/messages/count_tokens",
     "gk-dev-developer"), ("GET", "/gateway/control-room/panels", "gk-dev-admin"),
     ("GET", "/healthz", "gk-dev-developer")],
)  # fmt: skip
async def test_header_limits_apply_to_every_route_not_only_the_llm_calls(
    lp: InProcessProxy, method: str, path: str, key: str
) -> None:
    """`max_headers` / `max_header_bytes` bound admin, metrics, models, count_tokens and
    control-room requests too (before, only chat and messages checked them)."""
    many = {"authorization": f"Bearer {key}", **{f"x-pad-{i}": "1" for i in range(150)}}
    large = {"authorization": f"Bearer {key}", "x-pad": "a" * 40_000}
    body = orjson.dumps({"model": "intent-fast", "messages": MSGS})
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for headers in (many, large):
            r = await h.request(method, path, headers=headers,
                                content=body if method == "POST" else None)  # fmt: skip
            assert r.status_code == 431, r.text
            protocol = "anthropic" if path.startswith("/v1/messages") else "openai"
            assert _code(protocol, r) == "headers_too_large", r.text


@pytest.mark.parametrize(("path", "protocol"), ROUTES)
async def test_idempotency_key_longer_than_255_characters_is_400(
    lp: InProcessProxy, path: str, protocol: str
) -> None:
    body = orjson.dumps({"model": "intent-fast", "max_tokens": 5, "messages": MSGS})
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        r = await h.post(path, content=body, headers={**DEV, "idempotency-key": "k" * 256})
        assert r.status_code == 400 and _code(protocol, r) == "invalid_idempotency_key"
        assert "k" * 256 not in r.text and "k" * 256 not in str(r.headers)
        ok = await h.post(path, content=body, headers={**DEV, "idempotency-key": "k" * 255})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    "query",
    ["limit=99999999999999999999", "limit=0", "limit=-1", "limit=abc", "limit=1001",
     "limit=1&limit=2", "color=red", "project=" + "p" * 300, "status=nope"],
)  # fmt: skip
async def test_admin_session_list_rejects_bad_query_parameters_with_400(
    lp: InProcessProxy, query: str
) -> None:
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        r = await h.get(f"/gateway/sessions?{query}", headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "query",
    ["color=red", "status=bogus", "status=firing&status=resolved", "status=" + "s" * 300,
     "status=%FF"],
)  # fmt: skip
async def test_admin_alert_list_rejects_bad_query_parameters_with_400(
    lp: InProcessProxy, query: str
) -> None:
    """The alert list validates its query like the session list: known names once, known
    statuses; before, any parameter was ignored and an unknown status listed nothing."""
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        r = await h.get(f"/gateway/alerts?{query}", headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


async def test_admin_alert_list_accepts_a_known_status(lp: InProcessProxy) -> None:
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for query in ("", "?status=firing", "?status=waiting", "?status=resolved"):
            r = await h.get(f"/gateway/alerts{query}", headers=ADMIN)
            assert r.status_code == 200 and isinstance(r.json()["alerts"], list), r.text


async def test_admin_session_list_accepts_a_limit_within_bounds(lp: InProcessProxy) -> None:
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        r = await h.get("/gateway/sessions?limit=1000&status=open", headers=ADMIN)
    assert r.status_code == 200 and isinstance(r.json()["sessions"], list)


# Every admin route (method, path) of every family: sessions and their operations, config
# reload, alerts, overrides, audit, control-room panels, outcomes (their webhooks too).
ADMIN_ROUTES = [
    ("GET", "/gateway/sessions"), ("POST", "/gateway/sessions"), ("GET", "/gateway/sessions/s1"),
    ("PUT", "/gateway/sessions/s1/kill"), ("POST", "/gateway/sessions/s1/kill"),
    ("POST", "/gateway/sessions/s1/chat"), ("POST", "/gateway/sessions/s1/tool"),
    ("POST", "/gateway/sessions/s1/close"), ("GET", "/gateway/sessions/s1/status"),
    ("POST", "/gateway/config/reload"),
    ("GET", "/gateway/alerts"), ("POST", "/gateway/alerts/alertmanager"),
    ("GET", "/gateway/alerts/silences"), ("POST", "/gateway/alerts/silences"),
    ("GET", "/gateway/alerts/a1"), ("POST", "/gateway/alerts/a1/ack"),
    ("POST", "/gateway/alerts/a1/approve"), ("POST", "/gateway/alerts/a1/resolve"),
    ("GET", "/gateway/overrides"), ("DELETE", "/gateway/overrides"),
    ("DELETE", "/gateway/overrides/7"),
    ("GET", "/gateway/audit/verify"), ("GET", "/gateway/audit/sessions/s1"),
    ("GET", "/gateway/audit/sessions/s1/decisions"), ("GET", "/gateway/audit/sessions/s1/export"),
    ("POST", "/gateway/audit/sessions/s1/erase"),
    ("GET", "/gateway/control-room/panels"),
    ("POST", "/gateway/outcomes"), ("POST", "/gateway/outcomes/github"),
    ("POST", "/gateway/outcomes/webhooks/jira"), ("GET", "/gateway/outcomes/e1"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_every_admin_route_refuses_an_unknown_query_parameter_with_400(
    lp: InProcessProxy, method: str, path: str
) -> None:
    """Known parameters only, on every admin route: before, a route taking none ignored a query
    string (`GET /gateway/overrides?x=1` answered 200). Nothing of the route ran: no body read,
    nothing changed."""
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        r = await h.request(method, f"{path}?x=1", headers=ADMIN)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and "unknown query parameter" in err["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/gateway/sessions?limit=5&status=open&project=p"),
     ("GET", "/gateway/alerts?status=closed"),
     ("GET", "/gateway/audit/verify?since=9999999999"),
     ("GET", "/gateway/audit/sessions/no-such-session?offset=0&limit=5"),
     ("GET", "/gateway/control-room/panels?since=1d&panel=1&view=all"),
     ("GET", "/gateway/overrides"), ("GET", "/gateway/audit/sessions/no-such-session/export")],
)  # fmt: skip
async def test_admin_routes_still_take_their_known_parameters(
    lp: InProcessProxy, method: str, path: str
) -> None:
    # (A verify runs in a child Python process: ~1 s here, over httpx's default 5 s on a loaded
    # machine.)
    async with httpx.AsyncClient(base_url=lp.base_url, timeout=60) as h:
        r = await h.request(method, path, headers=ADMIN)
    assert r.status_code in (200, 404), r.text  # 404: the session named is not known
    if r.status_code == 404:
        assert r.json()["error"]["code"] == "session_not_found"


@pytest.mark.parametrize("query", ["x", "x=", "x=1&x=2", "limit=5&x=1", "%FF=1"])
async def test_an_unknown_name_with_no_or_a_blank_value_is_refused_too(
    lp: InProcessProxy, query: str
) -> None:
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for path in ("/gateway/overrides", "/gateway/audit/sessions/s1"):
            r = await h.get(f"{path}?{query}", headers=ADMIN)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
        # a known name left blank is as if not given (the control room's form sends blanks)
        r = await h.get("/gateway/control-room/panels?since=1d&team=&project=", headers=ADMIN)
        assert r.status_code == 200, r.text


async def test_an_unknown_admin_path_or_method_with_a_query_is_still_404_or_405(
    lp: InProcessProxy,
) -> None:
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        r = await h.get("/gateway/no/such/route?x=1", headers=ADMIN)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        r = await h.get("/gateway/sessions/s1/kill?x=1", headers=ADMIN)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        # The URL's shape is checked before the key, like an unknown path.
        r = await h.get("/gateway/overrides?x=1")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


async def test_the_web_control_room_pages_refuse_a_query_they_do_not_take(
    lp: InProcessProxy,
) -> None:
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for path in ("/control-room/login", "/control-room/style.css", "/control-room/alerts/a1"):
            r = await h.get(f"{path}?x=1")
            assert r.status_code == 400 and "text/html" in r.headers["content-type"], path
        assert (await h.get("/control-room/login")).status_code == 200
        assert (await h.get("/control-room/no-such-page?x=1")).status_code == 404


async def test_protocol_routes_ignore_query_parameters_real_clients_send(
    lp: InProcessProxy,
) -> None:
    """Not the admin rule: SDKs put parameters on these (the Anthropic SDK's `?beta=true`, its
    models pagination, Azure-style `api-version`), and health checks and scrapers may add their
    own. The gateway reads none of them, so none can change what it does."""
    body = orjson.dumps({"model": "intent-fast", "max_tokens": 5, "messages": MSGS})
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for path in ("/v1/chat/completions?api-version=2024-06-01", "/v1/messages?beta=true"):
            r = await h.post(path, content=body, headers=DEV)
            assert r.status_code == 200, (path, r.text)
        assert (await h.get("/v1/models?limit=20&after_id=x", headers=DEV)).status_code == 200
        assert (await h.get("/healthz?probe=1")).status_code == 200
        assert (await h.get("/metrics?x=1", headers=ADMIN)).status_code == 200




def _head_refusals(p: InProcessProxy, status: str, code: str) -> float:
    """`governor_http_refusals_total{route="head"}`: refusals of a request head, which the
    server answers before any route runs."""
    assert p.gw is not None
    labels = {"route": "head", "status": status, "code": code}
    return p.gw.metrics.registry.get_sample_value("governor_http_refusals_total", labels) or 0.0


async def test_a_request_head_past_64_kib_is_431_before_it_is_buffered_whole(
    lp: InProcessProxy,
) -> None:
    """The server's own bound, for a head that has not ended (one that ended within a read is
    the route's 431, by `max_header_bytes`)."""
    before = _head_refusals(lp, "431", "headers_too_large")
    reader, writer = await asyncio.open_connection("127.0.0.1", lp.port)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 431 ")
    doc = orjson.loads(data.partition(b"\r\n\r\n")[2])
    assert doc["type"] == "error" and "headers_too_large" in doc["error"]["message"]
    assert _head_refusals(lp, "431", "headers_too_large") == before + 1  # counted like any other


async def test_unknown_api_keys_are_never_cached(lp: InProcessProxy) -> None:
    assert lp.gw is not None
    body = orjson.dumps({"model": "intent-fast", "max_tokens": 5, "messages": MSGS})
    async with httpx.AsyncClient(base_url=lp.base_url) as h:
        for i in range(200):
            bad = {**DEV, "authorization": f"Bearer unknown-{i}-" + "k" * 4000}
            r = await h.post("/v1/chat/completions", content=body, headers=bad)
            assert r.status_code == 401
        assert (await h.post("/v1/chat/completions", content=body, headers=DEV)).status_code == 200
    assert all(not k.startswith("unknown-") for k in lp.gw._key_cache)
    assert "gk-dev-developer" in lp.gw._key_cache


@pytest.mark.parametrize("sent", [b"", b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"])
async def test_a_head_that_never_finishes_is_408_within_the_head_timeout(
    lp: InProcessProxy, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    from proxy.server import BoundedHttpTools

    monkeypatch.setattr(BoundedHttpTools, "HEAD_TIMEOUT_SECONDS", 1.0)
    before = _head_refusals(lp, "408", "request_timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", lp.port)
    started = time.perf_counter()
    writer.write(sent)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    took = time.perf_counter() - started
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"request_timeout" in data and 0.9 <= took < 5
    assert _head_refusals(lp, "408", "request_timeout") == before + 1


@pytest.mark.parametrize(
    "ledger", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_a_255_character_idempotency_key_is_stored_as_a_fixed_length_id_in_either_ledger(
    tmp_path_factory: pytest.TempPathFactory, ledger: str
) -> None:
    """On PostgreSQL a ~2,700-character key broke the call-id index and the row ended up only
    in a rejects file; keys are now at most 255 characters and the ledger holds a hash."""
    from contextlib import AsyncExitStack

    from activities.idempotency import idempotent_call_id
    from tests.support.pg import fresh_database

    key = "k" * 255
    body = orjson.dumps({"model": "intent-fast", "max_tokens": 5, "messages": MSGS})
    async with AsyncExitStack() as stack:
        url = None
        if ledger == "postgresql":
            url = await stack.enter_async_context(fresh_database())
        sim = await stack.enter_async_context(SimServer(port=0))
        cfg = make_config_dir(tmp_path_factory.mktemp("idem-config"))
        p = await InProcessProxy(cfg, tmp_path_factory.mktemp("idem-data"), sim.base_url,
                                 ledger_url=url).start()  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=p.base_url) as h:
                r = await h.post("/v1/chat/completions", content=body,
                                 headers={**DEV, "idempotency-key": key})  # fmt: skip
            assert r.status_code == 200, r.text
            assert p.gw is not None
            await p.gw.writer.flush()
            call_id = idempotent_call_id("dev-developer", key)
            row = await p.gw.store.get_call(call_id)  # type: ignore[attr-defined]
            assert row is not None and len(call_id) < 64 and key not in call_id
        finally:
            await p.stop()
