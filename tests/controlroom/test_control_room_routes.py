"""`/control-room` over real HTTP on loopback against a real proxy: sign-in, roles, cookie
tampering, CSRF and Origin checks, filter validation, the kill action, security headers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from html import unescape
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio

from activities.guardrails import gateway_salt
from controlroom import auth
from controlroom.model import Filters
from controlroom.panels import compute_panels
from examples.control_room_traffic import Traffic
from ledger.alert_store import open_alert, record_step
from tests.controlroom.cr_client import (
    ADMIN_KEY,
    DEV_KEY,
    METRICS_KEY,
    ONCALL_KEY,
    VIEWER_KEY,
    csrf_of,
    generated_proxy,
    iso,
    origin_of,
    sign_in,
)
from tests.ledger.ledger_testdb import BACKENDS
from tests.support.pg import fresh_database
from tests.support.servers import InProcessProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=20, follow_redirects=False)


def assert_secure_headers(r: httpx.Response) -> None:
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_without_a_session_the_page_redirects_to_the_login_form(proxy):
    async with client() as h:
        r = await h.get(proxy.base_url + "/control-room")
        assert r.status_code == 303 and r.headers["location"] == "/control-room/login"
        assert_secure_headers(r)
        login = await h.get(proxy.base_url + "/control-room/login")
        assert login.status_code == 200 and login.headers["content-type"].startswith("text/html")
        assert 'type="password" name="api_key"' in login.text
        assert 'method="post" action="/control-room/login"' in login.text
        assert "<script" not in login.text
        assert_secure_headers(login)


async def test_a_viewer_signs_in_with_a_form_and_gets_a_signed_httponly_strict_cookie(proxy):
    async with client() as h:
        r = await sign_in(h, proxy.base_url, VIEWER_KEY)
        assert r.status_code == 303 and r.headers["location"] == "/control-room"
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith(auth.COOKIE_NAME + "=v1.")
        for attr in ("HttpOnly", "SameSite=Strict", "Path=/control-room",
                     f"Max-Age={auth.SESSION_TTL_S}"):
            assert attr in set_cookie
        assert VIEWER_KEY not in set_cookie  # the key is exchanged, never stored in the cookie
        page = await h.get(proxy.base_url + "/control-room")
        assert page.status_code == 200, page.text
        assert "u_viewer · viewer" in page.text
        assert 'data-simulated="true"' in page.text  # the sample config's simulated providers
        assert_secure_headers(page)
        assert VIEWER_KEY not in page.text


@pytest.mark.parametrize("key", ["gk-not-a-key", "", "x" * 600])
async def test_an_unknown_key_is_refused_401_and_gets_no_cookie(proxy, key):
    async with client() as h:
        r = await sign_in(h, proxy.base_url, key)
        assert r.status_code == 401
        assert "set-cookie" not in r.headers
        assert "Sign-in refused" in r.text
        assert (await h.get(proxy.base_url + "/control-room")).status_code == 303


@pytest.mark.parametrize("key", [DEV_KEY, METRICS_KEY, "gk-dev-service"])
async def test_keys_whose_role_cannot_read_the_control_room_are_refused_403(proxy, key):
    async with client() as h:
        r = await sign_in(h, proxy.base_url, key)
        assert r.status_code == 403
        assert "set-cookie" not in r.headers
        assert "needs a viewer, auditor, on-call or admin key" in r.text


async def test_the_login_form_is_refused_from_another_origin_or_without_one(proxy):
    async with client() as h:
        url = proxy.base_url + "/control-room/login"
        evil = await h.post(url, data={"api_key": VIEWER_KEY},
                            headers={"origin": "http://evil.example"})
        assert evil.status_code == 403 and "set-cookie" not in evil.headers
        none = await h.post(url, data={"api_key": VIEWER_KEY})
        assert none.status_code == 403 and "set-cookie" not in none.headers
        opaque = await h.post(url, data={"api_key": VIEWER_KEY}, headers={"origin": "null"})
        assert opaque.status_code == 403


def _tampered(value: str) -> list[str]:
    _, kid, exp, nonce, mac = value.split(".")
    admin_kid = auth.issue(b"x" * 32, "dev-admin", "h", time.time())[0].split(".")[1]
    flip = "0" if mac[-1] != "0" else "1"
    return [
        f"v1.{kid}.{int(exp) + 3600}.{nonce}.{mac}",  # extended expiry
        f"v1.{admin_kid}.{exp}.{nonce}.{mac}",  # another key's id (the admin's)
        f"v1.{kid}.{exp}.{nonce}.{mac[:-1]}{flip}",  # one MAC digit changed
        f"v1.{kid}.{exp}.{'0' * 32}.{mac}",  # another nonce
        f"v2.{kid}.{exp}.{nonce}.{mac}",
        f"v1.{kid}.{exp}.{nonce}",
        "garbage",
        "v1.%%%.1.2.3",
    ]


async def test_a_tampered_or_forged_cookie_is_not_a_session(proxy):
    async with client() as h:
        assert (await sign_in(h, proxy.base_url, VIEWER_KEY)).status_code == 303
        good = h.cookies[auth.COOKIE_NAME]
        for bad in _tampered(good):
            r = await h.get(proxy.base_url + "/control-room",
                            headers={"cookie": f"{auth.COOKIE_NAME}={bad}"})
            assert r.status_code == 303, bad
        # A cookie signed with another deployment's secret for the admin key.
        admin_hash = next(k.hash for k in proxy.gw.config.keys_by_hash.values()
                          if k.id == "dev-admin")
        forged, _ = auth.issue(b"another deployment", "dev-admin", admin_hash, time.time())
        r = await h.get(proxy.base_url + "/control-room",
                        headers={"cookie": f"{auth.COOKIE_NAME}={forged}"})
        assert r.status_code == 303


async def test_an_expired_cookie_or_one_of_a_key_no_longer_allowed_is_not_a_session(proxy):
    secret = auth.derive_secret(gateway_salt(proxy.gw))
    keys = {k.id: k for k in proxy.gw.config.keys_by_hash.values()}
    old, _ = auth.issue(secret, "dev-viewer", keys["dev-viewer"].hash,
                        time.time() - auth.SESSION_TTL_S - 1)
    dev, _ = auth.issue(secret, "dev-developer", keys["dev-developer"].hash, time.time())
    fresh, _ = auth.issue(secret, "dev-viewer", keys["dev-viewer"].hash, time.time())
    async with client() as h:
        for value, status in ((old, 303), (dev, 303), (fresh, 200)):
            r = await h.get(proxy.base_url + "/control-room",
                            headers={"cookie": f"{auth.COOKIE_NAME}={value}"})
            assert r.status_code == status


async def test_logout_ends_the_session_even_for_a_copy_of_the_cookie(proxy):
    async with client() as h:
        await sign_in(h, proxy.base_url, VIEWER_KEY)
        copy = h.cookies[auth.COOKIE_NAME]
        page = await h.get(proxy.base_url + "/control-room")
        out = await h.post(proxy.base_url + "/control-room/logout",
                           data={"csrf": csrf_of(page.text)}, headers=origin_of(proxy.base_url))
        assert out.status_code == 303 and out.headers["location"] == "/control-room/login"
        assert "Max-Age=0" in out.headers["set-cookie"]
        r = await h.get(proxy.base_url + "/control-room",
                        headers={"cookie": f"{auth.COOKIE_NAME}={copy}"})
        assert r.status_code == 303


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "since=99999999999999d",
        "since=0d",
        "since=1999-01-01",
        "since=2026-11-02&until=2026-11-01",
        "tag=a&workflow_tag=b",
        "since=400d",
        "until=2999-01-01",
        "panel=7",
        "panel=1.5",
        "view=boss",
        "team=" + "t" * 200,
        "project=%01",
        "colour=red",
        "team=a&team=b",
        "since=%ff",
        "since=2026-13-45",
        "x=" + "y" * 5000,
    ],
)
async def test_bad_filters_are_a_400_page_never_a_500(proxy, query):
    async with client() as h:
        await sign_in(h, proxy.base_url, VIEWER_KEY)
        r = await h.get(proxy.base_url + "/control-room?" + query)
        assert r.status_code == 400, (query, r.status_code)
        assert r.headers["content-type"].startswith("text/html")
        assert "Bad filter" in r.text
        assert_secure_headers(r)


async def test_good_filters_are_shown_back_in_the_form(proxy):
    async with client() as h:
        await sign_in(h, proxy.base_url, VIEWER_KEY)
        r = await h.get(proxy.base_url + "/control-room",
                        params={"since": "20d", "until": "3d", "team": "<b>x</b>",
                                "project": "p1", "workflow_tag": "code-review",
                                "view": "executive", "panel": "2"})
        assert r.status_code == 200, r.text
        assert 'value="&lt;b&gt;x&lt;/b&gt;"' in r.text and "<b>x</b>" not in r.text
        assert 'value="code-review"' in r.text
        assert '<option value="executive" selected>' in r.text


async def _session_page(h: httpx.AsyncClient, base: str, key: str) -> str:
    assert (await sign_in(h, base, key)).status_code == 303
    page = await h.get(base + "/control-room")
    assert page.status_code == 200
    return page.text


async def _call(h: httpx.AsyncClient, base: str, sid: str, text: str) -> httpx.Response:
    return await h.post(
        base + "/v1/chat/completions",
        json={"model": "support-cheap", "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {DEV_KEY}", "x-governor-session-id": sid,
                 "x-governor-project": "cr-test"},
    )


async def test_a_kill_post_without_the_csrf_token_or_with_a_wrong_one_is_refused(proxy):
    sid = "cr-csrf-1"
    async with client() as h, client() as other:
        assert (await _call(h, proxy.base_url, sid, "hello")).status_code == 200
        await _session_page(h, proxy.base_url, ONCALL_KEY)
        other_csrf = csrf_of(await _session_page(other, proxy.base_url, ONCALL_KEY))
        url = proxy.base_url + "/control-room/kill"
        form = {"session_id": sid, "confirm": "yes"}
        for extra in ({}, {"csrf": ""}, {"csrf": "0" * 40}, {"csrf": other_csrf},
                      {"csrf": "é" * 40}):
            r = await h.post(url, data={**form, **extra}, headers=origin_of(proxy.base_url))
            assert r.status_code == 403 and "CSRF" in r.text, extra
        assert sid not in proxy.gw.state.killed
        assert (await _call(h, proxy.base_url, sid, "still alive")).status_code == 200


async def test_a_kill_post_from_another_origin_is_refused_even_with_the_token(proxy):
    sid = "cr-origin-1"
    async with client() as h:
        csrf = csrf_of(await _session_page(h, proxy.base_url, ONCALL_KEY))
        url = proxy.base_url + "/control-room/kill"
        form = {"session_id": sid, "confirm": "yes", "csrf": csrf}
        for hdrs in ({"origin": "http://evil.example"}, {},
                     {"referer": "http://evil.example/x"},
                     {"origin": proxy.base_url.replace("127.0.0.1", "localhost")}):
            r = await h.post(url, data=form, headers=hdrs)
            assert r.status_code == 403, hdrs
        # A same-origin Referer (no Origin) is enough.
        r = await h.post(url, data=form, headers={"referer": proxy.base_url + "/control-room"})
        assert r.status_code == 200
        assert sid in proxy.gw.state.killed


async def test_a_viewer_sees_the_kill_disabled_and_its_post_is_refused_403(proxy):
    sid = "cr-viewer-1"
    async with client() as h:
        csrf = csrf_of(await _session_page(h, proxy.base_url, VIEWER_KEY))
        r = await h.post(proxy.base_url + "/control-room/kill",
                         data={"session_id": sid, "confirm": "yes", "csrf": csrf},
                         headers=origin_of(proxy.base_url))
        assert r.status_code == 403 and "on-call or admin" in r.text
        assert sid not in proxy.gw.state.killed


async def test_a_post_without_a_session_is_refused_403(proxy):
    async with client() as h:
        r = await h.post(proxy.base_url + "/control-room/kill",
                         data={"session_id": "x", "confirm": "yes", "csrf": "0" * 40},
                         headers=origin_of(proxy.base_url))
        assert r.status_code == 403 and "sign in" in r.text


async def test_on_call_kills_a_session_from_the_control_room_and_its_next_call_is_refused(proxy):
    sid = "cr-kill-1"
    async with client() as h:
        assert (await _call(h, proxy.base_url, sid, "first turn")).status_code == 200
        csrf = csrf_of(await _session_page(h, proxy.base_url, ONCALL_KEY))
        unconfirmed = await h.post(proxy.base_url + "/control-room/kill",
                                   data={"session_id": sid, "csrf": csrf},
                                   headers=origin_of(proxy.base_url))
        assert unconfirmed.status_code == 400
        r = await h.post(proxy.base_url + "/control-room/kill",
                         data={"session_id": sid, "confirm": "yes", "csrf": csrf,
                               "reason": "looping <agent>"},
                         headers=origin_of(proxy.base_url))
        assert r.status_code == 200, r.text
        assert f"Session {sid} killed by u_oncall" in r.text
        assert "looping &lt;agent&gt;" in r.text
        nxt = await _call(h, proxy.base_url, sid, "second turn")
        assert nxt.status_code == 403 and nxt.json()["error"]["code"] == "session_killed"
        kills = [k for k in await proxy.gw.store.kills_after(0) if k.session_id == sid]
        assert len(kills) == 1 and kills[0].actor == "u_oncall"
        assert kills[0].reason == "control room: looping <agent>"
        again = await h.post(proxy.base_url + "/control-room/kill",
                             data={"session_id": sid, "confirm": "yes", "csrf": csrf},
                             headers=origin_of(proxy.base_url))
        assert again.status_code == 200 and "already killed" in again.text
        # The admin API shows the same record: one kill path.
        show = await h.get(proxy.base_url + f"/gateway/sessions/{sid}",
                           headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert show.json()["kill"]["actor"] == "u_oncall"


async def test_form_bodies_are_bounded_and_must_be_form_encoded(proxy):
    async with client() as h:
        url = proxy.base_url + "/control-room/login"
        big = await h.post(url, data={"api_key": "k" * 20_000},
                           headers=origin_of(proxy.base_url))
        assert big.status_code == 413
        js = await h.post(url, json={"api_key": VIEWER_KEY}, headers=origin_of(proxy.base_url))
        assert js.status_code == 415
        extra = await h.post(url, data={"api_key": VIEWER_KEY, "next": "http://evil"},
                             headers=origin_of(proxy.base_url))
        assert extra.status_code == 400


async def test_unknown_pages_and_methods_are_html_4xx(proxy):
    async with client() as h:
        assert (await h.get(proxy.base_url + "/control-room/nope")).status_code == 404
        assert (await h.delete(proxy.base_url + "/control-room")).status_code == 405
        assert (await h.get(proxy.base_url + "/control-room/kill")).status_code == 405
        css = await h.get(proxy.base_url + "/control-room/style.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_concurrent_page_loads_all_succeed(proxy):
    async with client() as h:
        await sign_in(h, proxy.base_url, ADMIN_KEY)
        rs = await asyncio.gather(*(h.get(proxy.base_url + "/control-room") for _ in range(8)))
        assert all(r.status_code == 200 for r in rs)


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=BACKENDS)
async def filled(request, sim, tmp_path_factory) -> AsyncIterator[tuple[InProcessProxy, Traffic]]:
    """A proxy whose SQLite or PostgreSQL ledger holds two days of generated traffic."""
    async with AsyncExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = await stack.enter_async_context(fresh_database())
        yield await stack.enter_async_context(generated_proxy(
            sim.base_url, tmp_path_factory, days=2, seed=5, sessions_per_day=12, ledger_url=url))


async def test_the_page_shows_the_six_panels_with_compute_panels_figures(filled):
    p, tr = filled
    assert p.gw is not None
    expected = await compute_panels(p.gw.store, Filters(tr.start, tr.end), config=p.gw.config)
    async with client() as h:
        await sign_in(h, p.base_url, VIEWER_KEY)
        r = await h.get(p.base_url + "/control-room",
                        params={"since": iso(tr.start), "until": iso(tr.end)})
    assert r.status_code == 200, r.text
    html = r.text
    assert len(expected) == 6
    for panel in expected:
        assert f'data-panel="{panel.number}" data-layer="{panel.layer}"' in html
        for name, value in panel.figures.items():
            m = re.search(rf'data-figure="{re.escape(name)}" data-value="([^"]*)"', html)
            assert m, (panel.number, name)
            assert json.loads(unescape(m.group(1))) == value, (panel.number, name)
    assert html.count("<svg") == sum(min(len(x.charts), 8) for x in expected)
    empty = sum(1 for x in expected for c in x.charts if not any(s.points for s in c.series))
    assert html.count("no data in this range") == empty
    assert 'data-action="kill_session" data-target="sess-loop-0001"' in html
    # The layer view keeps the seed's audiences apart.
    async with client() as h:
        await sign_in(h, p.base_url, VIEWER_KEY)
        oncall = await h.get(p.base_url + "/control-room",
                             params={"since": iso(tr.start), "until": iso(tr.end),
                                     "view": "oncall"})
    layers = set(re.findall(r'data-layer="([a-z]+)"', oncall.text))
    assert layers == {"oncall"}


async def test_a_project_named_script_reaches_the_page_as_text(proxy):
    """A caller-chosen project name goes through a real call, the ledger and compute_panels,
    and is shown escaped (table cell and chart label), never as markup."""
    hostile = '<script>alert("cr")</script>'
    async with client() as h:
        r = await h.post(
            proxy.base_url + "/v1/chat/completions",
            json={"model": "support-cheap", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {DEV_KEY}", "x-governor-project": hostile})
        assert r.status_code == 200, r.text
        await sign_in(h, proxy.base_url, VIEWER_KEY)
        for _ in range(100):  # the ledger writer flushes every 20 ms
            page = await h.get(proxy.base_url + "/control-room", params={"panel": "2"})
            if "&lt;script&gt;alert(&quot;cr&quot;)&lt;/script&gt;" in page.text:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the hostile project never showed on panel 2")
    assert page.status_code == 200
    assert "<script" not in page.text


async def test_runaway_alerts_on_panel_3_link_to_their_runbook_page_for_on_call(proxy):
    key = "alert-runaway_agent,session_id=cr-alert-1"
    now = time.time()
    await open_alert(proxy.gw.store, run_id="cr-run-1", alert_key=key, name="runaway_agent",
                     labels={"session_id": "cr-alert-1", "note": "<script>x</script>"},
                     source="embedded", severity="critical", ts=now)
    await record_step(proxy.gw.store, run_id="cr-run-1", alert_key=key, step=1,
                      action="kill_session", phase="done", actor="runbook",
                      result="session cr-alert-1 killed", ts=now + 1)
    href = f"/control-room/alerts/{quote(key, safe='')}"
    async with client() as h:
        await sign_in(h, proxy.base_url, ONCALL_KEY)
        page = await h.get(proxy.base_url + "/control-room", params={"panel": "3"})
        assert f'<a href="{href}">/gateway/alerts/{key}</a>' in page.text
        r = await h.get(proxy.base_url + href)
        assert r.status_code == 200, r.text
        assert "Alert runaway_agent" in r.text and "Identify session_id" in r.text  # runbook
        assert "session cr-alert-1 killed" in r.text and "kill_session" in r.text  # its step
        assert "&lt;script&gt;x&lt;/script&gt;" in r.text and "<script" not in r.text
        assert_secure_headers(r)
        missing = await h.get(proxy.base_url + "/control-room/alerts/alert-nope")
        assert missing.status_code == 404
        long = await h.get(proxy.base_url + "/control-room/alerts/" + "a" * 300)
        assert long.status_code == 400
        assert (await h.post(proxy.base_url + href, headers=origin_of(proxy.base_url))
                ).status_code == 404  # actions are href/ack|approve|resolve
        csrf = csrf_of(r.text)
        no_token = await h.post(proxy.base_url + href + "/ack", data={"comment": "x"},
                                headers=origin_of(proxy.base_url))
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        cross = await h.post(proxy.base_url + href + "/ack", data={"csrf": csrf},
                             headers={"origin": "http://evil.example"})
        assert cross.status_code == 403
        no_hub = await h.post(proxy.base_url + href + "/ack", data={"csrf": csrf},
                              headers=origin_of(proxy.base_url))
        assert no_hub.status_code == 503 and "no alert hub" in no_hub.text
    async with client() as h:
        assert (await h.get(proxy.base_url + href)).status_code == 303  # not signed in
        await sign_in(h, proxy.base_url, VIEWER_KEY)
        r = await h.get(proxy.base_url + href)
        assert r.status_code == 403 and "on-call or admin" in r.text
        csrf = csrf_of((await h.get(proxy.base_url + "/control-room")).text)
        r = await h.post(proxy.base_url + href + "/resolve", data={"csrf": csrf},
                         headers=origin_of(proxy.base_url))
        assert r.status_code == 403 and "on-call or admin" in r.text


async def test_pages_and_panels_json_share_one_bound_per_ledger_store(proxy, monkeypatch):
    """Straight on the ASGI handlers: the web page and the JSON panels route compute in the
    same slots of the ledger store — at most MAX_PANELS_IN_FLIGHT at once between them, then
    MAX_PANELS_WAITING queue, beyond which both answer a 503 with Retry-After."""
    import proxy.control_room_routes as routes
    from proxy.admin import handle_admin
    from proxy.control_room import ControlRoom, handle_control_room
    from proxy.control_room_routes import MAX_PANELS_IN_FLIGHT, MAX_PANELS_WAITING, slots_of

    gw = proxy.gw
    real = await compute_panels(gw.store, Filters(since=time.time() - 86400,
                                                  until=time.time()), None, config=gw.config)
    gate = asyncio.Event()
    running = [0, 0]  # now, most at once

    async def gated(*_a, **_k):
        running[0] += 1
        running[1] = max(running)
        try:
            await gate.wait()
            return real
        finally:
            running[0] -= 1

    monkeypatch.setattr(routes, "compute_panels", gated)
    cr = ControlRoom()
    viewer = next(k for k in gw.config.keys_by_hash.values() if k.id == "dev-viewer")
    cookie, _ = auth.issue(cr.secret(gw), viewer.id, viewer.hash, time.time())
    page = {"type": "http", "method": "GET", "path": "/control-room", "query_string": b"",
            "headers": [(b"host", b"cr.test"),
                        (b"cookie", f"{auth.COOKIE_NAME}={cookie}".encode())]}
    panels = {"type": "http", "method": "GET", "path": "/gateway/control-room/panels",
              "query_string": b"panel=1",
              "headers": [(b"host", b"cr.test"),
                          (b"authorization", f"Bearer {VIEWER_KEY}".encode())]}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def answer(scope) -> tuple[int, dict[bytes, bytes], bytes]:
        sent = []

        async def send(msg):
            sent.append(msg)

        if scope is page:
            await handle_control_room(gw, cr, scope, receive, send)
        else:
            await handle_admin(gw, scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), sent[1].get("body", b"")

    slots = slots_of(gw.store)

    async def settled(computing: int, waiting: int) -> None:
        for _ in range(500):
            if running[0] == computing and slots.waiting == waiting:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"running {running[0]}, waiting {slots.waiting}")

    # pages and JSON requests, one after another: four compute, the rest queue
    first = [asyncio.create_task(answer(page if i % 2 else panels))
             for i in range(MAX_PANELS_IN_FLIGHT + MAX_PANELS_WAITING)]
    await settled(MAX_PANELS_IN_FLIGHT, MAX_PANELS_WAITING)
    for scope, kind in ((page, b"text/html"), (panels, b"application/json")):
        status, headers, body = await answer(scope)
        assert status == 503 and headers[b"retry-after"] == b"5", (status, body)
        assert headers[b"content-type"].startswith(kind)
        assert b"control_room_busy" in body or b"Busy" in body
    gate.set()
    done = await asyncio.wait_for(asyncio.gather(*first), 60)
    assert [d[0] for d in done] == [200] * len(first)
    assert running[1] == MAX_PANELS_IN_FLIGHT  # between both surfaces, never more
    assert slots.waiting == 0 and not slots.computing.locked()


