"""Outcomes over real HTTP: the API (roles, idempotency, bounds), the GitHub webhook
(signature, merged PRs, several sessions), a Zendesk-shaped and a Jira-shaped ticket webhook,
and the control room's JSON route (roles, filters, the same numbers as compute_panels)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from controlroom.model import Filters
from controlroom.outcomes import outcomes_of_event
from controlroom.panels import compute_panels
from examples.control_room_traffic import iter_traffic, write_traffic
from tests.support.pg import fresh_database
from tests.support.servers import InProcessProxy, make_config_dir

GITHUB_SECRET = "gh-test-secret-1"
ZENDESK_SECRET = "zd-test-secret-2"
JIRA_TOKEN = "jira-test-token-3"
OVERLAY = {
    "zz-test-keys.yaml": """
type: gateway-api-keys
name: test-keys
keys:
  - {id: t-viewer, hash: "sha256:f591dd44d238f614304e1606965af07f3ad76e7514faef4b61fadd00ac7577bb",
     user: u_viewer, team: finance, role: viewer}
  - {id: t-auditor, hash: "sha256:6fa4f41804b088bf0f2e9e2e7ffba556db7ba889103ae0f04dea09375aa1620b",
     user: u_auditor, team: security, role: auditor}
""",
}
SETTINGS_TAIL = """
outcome_webhooks:
  github: {secret_env: T_GITHUB_SECRET}
  tickets:
    - name: zendesk
      kind: ticket_closed
      auth: zendesk
      secret_env: T_ZENDESK_SECRET
      session_id_path: ticket.custom_fields[id=360001].value
      event_id_path: ticket.id
      url_path: ticket.url
      ts_path: ticket.updated_at
      when_path: ticket.status
      when_in: [solved, closed]
    - name: jira
      kind: incident_resolved
      auth: token
      signature_header: authorization
      secret_env: T_JIRA_TOKEN
      session_id_path: issue.fields.customfield_10042
      event_id_path: issue.key
      url_path: issue.self
"""
VIEWER, AUDITOR = "gk-test-viewer", "gk-test-auditor"
ADMIN, SERVICE, DEV, ONCALL = "gk-dev-admin", "gk-dev-service", "gk-dev-developer", "gk-dev-oncall"


@pytest_asyncio.fixture
async def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InProcessProxy]:
    monkeypatch.setenv("T_GITHUB_SECRET", GITHUB_SECRET)
    monkeypatch.setenv("T_ZENDESK_SECRET", ZENDESK_SECRET)
    monkeypatch.setenv("T_JIRA_TOKEN", JIRA_TOKEN)
    cfg = make_config_dir(tmp_path / "config", OVERLAY)
    gw_yaml = cfg / "gateway.yaml"
    gw_yaml.write_text(gw_yaml.read_text() + SETTINGS_TAIL)
    p = await InProcessProxy(cfg, tmp_path / "data", "http://127.0.0.1:9").start()
    try:
        yield p
    finally:
        await p.stop()


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def post(p: InProcessProxy, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    async with httpx.AsyncClient(base_url=p.base_url, timeout=30) as c:
        return await c.post(path, content=raw, headers=headers)


async def get(p: InProcessProxy, path: str, key: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=p.base_url, timeout=60) as c:
        return await c.get(path, params=params, headers=auth(key))


@pytest.mark.asyncio
async def test_outcome_api_is_idempotent_by_event_id_and_needs_a_service_or_admin_key(
        proxy: InProcessProxy) -> None:
    body = {"event_id": "ev-1", "kind": "eval", "pass_rate": 0.93, "source": "evals",
            "ts": "2026-11-29T10:00:00Z", "session_ids": ["s-a", "s-b"]}
    r = await post(proxy, "/gateway/outcomes", body, auth(SERVICE))
    assert r.status_code == 200, r.text
    assert r.json()["recorded"] == 2 and r.json()["session_ids"] == ["s-a", "s-b"]
    again = await post(proxy, "/gateway/outcomes", body, auth(ADMIN))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert proxy.gw is not None
    rows = await outcomes_of_event(proxy.gw.store, "ev-1")
    ts = datetime(2026, 11, 29, 10, tzinfo=UTC).timestamp()
    assert [(r.session_id, r.pass_rate, r.ts, r.actor) for r in rows] == [
        ("s-a", 0.93, ts, "dev-service"), ("s-b", 0.93, ts, "dev-service")]
    for key in (DEV, VIEWER, ONCALL):
        r = await post(proxy, "/gateway/outcomes", body, auth(key))
        assert r.status_code == 403 and r.json()["error"]["code"] == "role_required"
    r = await post(proxy, "/gateway/outcomes", body, {})
    assert r.status_code == 401
    shown = await get(proxy, "/gateway/outcomes/ev-1", AUDITOR)
    assert shown.status_code == 200 and len(shown.json()["rows"]) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[]", 400, "JSON object"),
    ({"event_id": "e", "kind": "shipped"}, 400, "kind"),
    ({"event_id": "e", "kind": "eval"}, 400, "pass_rate"),
    ({"event_id": "e", "kind": "eval", "pass_rate": 1.5}, 400, "pass_rate"),
    ({"event_id": "e", "kind": "pr_merged", "pass_rate": 0.5}, 400, "eval outcomes only"),
    ({"event_id": "", "kind": "pr_merged"}, 400, "event_id"),
    ({"event_id": "e", "kind": "pr_merged", "session_id": "a b/c"}, 400, "session id"),
    ({"event_id": "e", "kind": "pr_merged", "session_ids": ["s"] * 51}, 400, "at most 50"),
    ({"event_id": "e", "kind": "pr_merged", "ts": "yesterday"}, 400, "ISO 8601"),
    ({"event_id": "e", "kind": "pr_merged", "ts": 1e300}, 400, "out of range"),
    ({"event_id": "e", "kind": "pr_merged", "extra": 1}, 400, "unknown field"),
    ({"event_id": "e", "kind": "pr_merged", "url": "x" * 5000}, 400, "url"),
    ({"event_id": "e", "kind": "pr_merged", "source": {"a": [[[[]]]]}}, 400, "source"),
    (b"[" * 40 + b"]" * 40, 400, "JSON"),
    (b'{"event_id": "' + b"x" * 70000 + b'"}', 413, "larger than"),
])
async def test_outcome_api_refuses_bad_bodies_with_a_clear_4xx(
        proxy: InProcessProxy, body: Any, status: int, needle: str) -> None:
    r = await post(proxy, "/gateway/outcomes", body, auth(SERVICE))
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def gh_sig(raw: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def pr_event(number: int, merged: bool, body: str, branch: str) -> bytes:
    return orjson.dumps({
        "action": "closed", "number": number,
        "repository": {"full_name": "acme/monorepo"},
        "pull_request": {"number": number, "merged": merged, "body": body,
                         "html_url": f"https://github.com/acme/monorepo/pull/{number}",
                         "merged_at": "2026-11-29T12:00:00Z" if merged else None,
                         "head": {"ref": branch}},
    })


@pytest.mark.asyncio
async def test_github_merged_pr_joins_every_session_it_names_and_checks_the_signature(
        proxy: InProcessProxy) -> None:
    raw = pr_event(42, True, "Refactor\n\nGovernor-Session: s-one, s-two\n"
                   "Co-authored-by: x\nGovernor-Session: s-three\n", "feat/session/s-four")
    h = {"x-github-event": "pull_request", "content-type": "application/json"}
    signed = {**h, "x-hub-signature-256": gh_sig(raw)}
    r = await post(proxy, "/gateway/outcomes/github", raw, signed)
    assert r.status_code == 200, r.text
    assert r.json()["event_id"] == "github:acme/monorepo#42"
    assert r.json()["session_ids"] == ["s-one", "s-two", "s-three", "s-four"]
    # redelivery: nothing new
    signed = {**h, "x-hub-signature-256": gh_sig(raw)}
    r = await post(proxy, "/gateway/outcomes/github", raw, signed)
    assert r.json()["duplicate"] is True
    # wrong secret, tampered body, missing signature: 401, nothing recorded
    bad = pr_event(43, True, "Governor-Session: s-x", "main")
    for sig in (gh_sig(bad, "wrong"), gh_sig(raw), None):
        hh = dict(h) if sig is None else {**h, "x-hub-signature-256": sig}
        r = await post(proxy, "/gateway/outcomes/github", bad, hh)
        assert r.status_code == 401, r.text
    assert proxy.gw is not None
    assert await outcomes_of_event(proxy.gw.store, "github:acme/monorepo#43") == []
    # closed without merging, and other events: acknowledged, ignored
    unmerged = pr_event(44, False, "Governor-Session: s-y", "main")
    r = await post(proxy, "/gateway/outcomes/github", unmerged,
                   {**h, "x-hub-signature-256": gh_sig(unmerged)})
    assert r.status_code == 200 and r.json()["ignored"] is True
    ping = b'{"zen": "hi"}'
    r = await post(proxy, "/gateway/outcomes/github", ping,
                   {"x-github-event": "ping", "x-hub-signature-256": gh_sig(ping)})
    assert r.status_code == 200 and r.json()["event"] == "ping"
    big = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    r = await post(proxy, "/gateway/outcomes/github", big,
                   {**h, "x-hub-signature-256": gh_sig(big)})
    assert r.status_code == 413


@pytest.mark.asyncio
async def test_ticket_webhooks_zendesk_signature_and_jira_token_with_configured_paths(
        proxy: InProcessProxy) -> None:
    ticket = {"ticket": {"id": 9876, "status": "solved", "url": "https://acme.zendesk.com/t/9876",
                         "updated_at": "2026-11-29T09:30:00Z",
                         "custom_fields": [{"id": 1, "value": "no"},
                                           {"id": 360001, "value": "s-z1 s-z2"}]}}
    raw = orjson.dumps(ticket)
    stamp = "2026-11-29T09:30:01Z"
    sig = base64.b64encode(hmac.new(ZENDESK_SECRET.encode(), stamp.encode() + raw,
                                    hashlib.sha256).digest()).decode()
    zh = {"x-zendesk-webhook-signature": sig, "x-zendesk-webhook-signature-timestamp": stamp}
    r = await post(proxy, "/gateway/outcomes/webhooks/zendesk", raw, zh)
    assert r.status_code == 200, r.text
    assert r.json()["event_id"] == "zendesk:9876" and r.json()["session_ids"] == ["s-z1", "s-z2"]
    r = await post(proxy, "/gateway/outcomes/webhooks/zendesk", raw,
                   {**zh, "x-zendesk-webhook-signature": base64.b64encode(b"x" * 32).decode()})
    assert r.status_code == 401
    ticket["ticket"]["status"] = "open"
    raw2 = orjson.dumps(ticket)
    sig2 = base64.b64encode(hmac.new(ZENDESK_SECRET.encode(), stamp.encode() + raw2,
                                     hashlib.sha256).digest()).decode()
    r = await post(proxy, "/gateway/outcomes/webhooks/zendesk", raw2,
                   {**zh, "x-zendesk-webhook-signature": sig2})
    assert r.status_code == 200 and r.json()["ignored"] is True
    issue = {"issue": {"key": "OPS-7", "self": "https://acme.atlassian.net/rest/api/2/issue/1",
                       "fields": {"customfield_10042": ["s-j1"]}}}
    r = await post(proxy, "/gateway/outcomes/webhooks/jira", issue,
                   {"authorization": f"Bearer {JIRA_TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "incident_resolved" and r.json()["session_ids"] == ["s-j1"]
    r = await post(proxy, "/gateway/outcomes/webhooks/jira", issue,
                   {"authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await post(proxy, "/gateway/outcomes/webhooks/jira",
                   {"issue": {"fields": {"customfield_10042": "s-j2"}}},
                   {"authorization": f"Bearer {JIRA_TOKEN}"})
    assert r.status_code == 400 and "issue.key" in r.json()["error"]["message"]
    r = await post(proxy, "/gateway/outcomes/webhooks/nosuch", issue, {})
    assert r.status_code == 404


@pytest.mark.asyncio
async def test_panels_json_route_needs_a_reading_role_and_matches_compute_panels(
        proxy: InProcessProxy) -> None:
    assert proxy.gw is not None
    end = 1_764_460_800.0
    await write_traffic(proxy.gw.store, iter_traffic(3, 5, end, 20))
    params = {"since": "3d", "until": str(end), "team": "platform"}
    r = await get(proxy, "/gateway/control-room/panels", VIEWER, **params)
    assert r.status_code == 200, r.text
    doc = r.json()
    want = await compute_panels(proxy.gw.store, Filters(end - 3 * 86400, end, team="platform"),
                                config=proxy.gw.config)
    assert doc["panels"] == orjson.loads(orjson.dumps([p.to_json() for p in want]))
    assert [p["number"] for p in doc["panels"]] == [1, 2, 3, 4, 5, 6]
    for key in (AUDITOR, ONCALL, ADMIN):
        r = await get(proxy, "/gateway/control-room/panels", key, panels="3", **params)
        assert r.status_code == 200 and [p["number"] for p in r.json()["panels"]] == [3]
    # one parser with the web page: its names, the old `tag`/`panels` as aliases, its views
    by_alias = await get(proxy, "/gateway/control-room/panels", VIEWER, tag="code-review",
                         panels="6,2", **params)
    by_name = await get(proxy, "/gateway/control-room/panels", VIEWER,
                        workflow_tag="code-review", panel="2,6", **params)
    assert by_alias.status_code == by_name.status_code == 200, by_alias.text
    assert by_alias.json() == by_name.json()
    assert by_name.json()["filters"]["workflow_tag"] == "code-review"
    assert [p["number"] for p in by_name.json()["panels"]] == [2, 6]
    r = await get(proxy, "/gateway/control-room/panels", VIEWER, view="oncall", **params)
    assert {p["layer"] for p in r.json()["panels"]} == {"oncall"}
    for key in (DEV, SERVICE, "gk-dev-metrics"):
        r = await get(proxy, "/gateway/control-room/panels", key)
        assert r.status_code == 403
    for bad in ({"since": "7x"}, {"since": "abc"}, {"panels": "7"}, {"until": "1", "since": "5"},
                {"since": "999d"}, {"user": "x"}):
        r = await get(proxy, "/gateway/control-room/panels", VIEWER, **bad)
        assert r.status_code == 400, (bad, r.text)


@pytest.mark.asyncio
async def test_nul_characters_in_outcome_ids_and_urls_are_a_400_or_404_on_postgresql(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL text cannot hold NUL: the API refuses it with a 400 naming the field, the
    webhooks drop it from a URL or refuse it in an event id, and a read of such an id is a
    404, never a 500 from the ledger."""
    monkeypatch.setenv("T_GITHUB_SECRET", GITHUB_SECRET)
    monkeypatch.setenv("T_ZENDESK_SECRET", ZENDESK_SECRET)
    monkeypatch.setenv("T_JIRA_TOKEN", JIRA_TOKEN)
    cfg = make_config_dir(tmp_path / "config", OVERLAY)
    gw_yaml = cfg / "gateway.yaml"
    gw_yaml.write_text(gw_yaml.read_text() + SETTINGS_TAIL)
    async with fresh_database() as url:
        p = await InProcessProxy(cfg, tmp_path / "data", "http://127.0.0.1:9",
                                 ledger_url=url).start()
        try:
            for field in ("event_id", "url", "source"):
                body = {"event_id": "e", "kind": "pr_merged", field: "a\u0000b"}
                r = await post(p, "/gateway/outcomes", body, auth(SERVICE))
                assert r.status_code == 400, r.text
                assert "NUL" in r.json()["error"]["message"] and field in r.text
            jira = orjson.dumps({"issue": {"key": "OPS-\u00001", "self": "u",
                                           "fields": {"customfield_10042": "s-n"}}})
            r = await post(p, "/gateway/outcomes/webhooks/jira", jira,
                           {"authorization": f"Bearer {JIRA_TOKEN}"})
            assert r.status_code == 400 and "NUL" in r.json()["error"]["message"], r.text
            raw = pr_event(7, True, "Governor-Session: s-gh", "main")
            doc = orjson.loads(raw)
            doc["pull_request"]["html_url"] = "https://x/\u0000pr/7"
            raw = orjson.dumps(doc)
            r = await post(p, "/gateway/outcomes/github", raw,
                           {"x-hub-signature-256": gh_sig(raw), "x-github-event": "pull_request"})
            assert r.status_code == 200 and r.json()["recorded"] == 1, r.text
            r = await get(p, "/gateway/outcomes/a%00b", ADMIN)  # the path decodes to a NUL
            assert r.status_code == 404 and r.json()["error"]["code"] == "outcome_not_found"
        finally:
            await p.stop()


@pytest.mark.asyncio
async def test_an_outcome_body_that_does_not_arrive_in_time_is_a_408_not_a_500(
        proxy: InProcessProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that declares a body and then stalls gets a 408 naming the timeout (real
    socket, the body timeout shortened for the test)."""
    import dataclasses
    from urllib.parse import urlsplit

    assert proxy.gw is not None
    cfg = proxy.gw.config
    settings = cfg.settings.model_copy(update={"body_timeout_seconds": 0.3})
    monkeypatch.setattr(proxy.gw, "config", dataclasses.replace(cfg, settings=settings))
    u = urlsplit(proxy.base_url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(b"POST /gateway/outcomes HTTP/1.1\r\nHost: t\r\n"
                     b"Authorization: Bearer " + SERVICE.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ev")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 408"), head
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_panels_json_requests_computed_at_once_are_bounded_and_the_queue_too(
        proxy: InProcessProxy) -> None:
    """Straight on the admin handler: with every computing slot of the ledger store taken a
    panels request waits for one; with the queue full it is a 503 `control_room_busy`."""
    from proxy.admin import handle_admin
    from proxy.control_room_routes import MAX_PANELS_IN_FLIGHT, MAX_PANELS_WAITING, slots_of

    assert proxy.gw is not None
    gw = proxy.gw
    scope = {"type": "http", "method": "GET", "path": "/gateway/control-room/panels",
             "query_string": b"panel=1",
             "headers": [(b"host", b"t"), (b"authorization", f"Bearer {VIEWER}".encode())]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    retry_after: list[bytes | None] = []

    async def status_of() -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        await handle_admin(gw, scope, receive, send)
        retry_after.append(dict(sent[0]["headers"]).get(b"retry-after"))
        return sent[0]["status"], sent[1].get("body", b"")

    slots = slots_of(gw.store)
    for _ in range(MAX_PANELS_IN_FLIGHT):
        await slots.computing.acquire()
    waiting = asyncio.create_task(status_of())
    for _ in range(100):
        if slots.waiting == 1:
            break
        await asyncio.sleep(0.01)
    assert slots.waiting == 1 and not waiting.done()
    slots.waiting = MAX_PANELS_WAITING
    status, body = await status_of()
    assert status == 503 and b"control_room_busy" in body
    assert retry_after[-1] == b"5"
    slots.waiting = 1
    for _ in range(MAX_PANELS_IN_FLIGHT):
        slots.computing.release()
    assert (await asyncio.wait_for(waiting, 30))[0] == 200
    assert slots.waiting == 0
