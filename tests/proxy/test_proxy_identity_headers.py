"""Identity headers: duplicated or contradicting ones are refused naming the header as sent;
every 401/403 is logged (without secrets) and counted; prompt hashes are keyed with the salt."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid

import httpx
import pytest

from activities.guardrails import gateway_salt
from activities.idempotency import idempotent_call_id
from tests.proxy.conftest import DEV_KEY
from tests.support.servers import InProcessProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROUTES = [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")]
BODY = {"model": "support-cheap", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _message(protocol: str, r: httpx.Response) -> str:
    doc = r.json()
    return str(doc["error"]["message"])


@pytest.mark.parametrize(("path", "protocol"), ROUTES)
@pytest.mark.parametrize(
    ("headers", "code", "names"),
    [
        ([("X-Governor-Project", "a"), ("X-Governor-Project", "b")],
         "duplicate_identity_header", ["X-Governor-Project"]),
        ([("X-TFY-Session-ID", "s1"), ("X-TFY-Session-ID", "s1")],
         "duplicate_identity_header", ["X-TFY-Session-ID"]),
        ([("X-TFY-Project", "a"), ("X-Governor-Project", "b")],
         "conflicting_identity_headers", ["X-TFY-Project", "X-Governor-Project"]),
        ([("X-Governor-Workflow-Tag", "t1"), ("X-TFY-Workflow-Tag", "t2")],
         "conflicting_identity_headers", ["X-Governor-Workflow-Tag", "X-TFY-Workflow-Tag"]),
    ],
)  # fmt: skip
async def test_duplicated_or_contradicting_identity_headers_are_400_naming_them(
    proxy: InProcessProxy, path: str, protocol: str, headers: list[tuple[str, str]], code: str,
    names: list[str],
) -> None:
    sent = [("Authorization", f"Bearer {DEV_KEY}"), *headers]
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post(path, json=BODY, headers=sent)
    assert r.status_code == 400, r.text
    msg = _message(protocol, r)
    assert code in (r.json()["error"].get("code") or msg) or code in r.headers.get(
        "x-governor-error-code", ""
    )
    for name in names:
        assert name in msg


async def test_agreeing_alias_headers_are_accepted(proxy: InProcessProxy) -> None:
    sent = [("Authorization", f"Bearer {DEV_KEY}"), ("X-TFY-Project", "p-agree"),
            ("X-Governor-Project", "p-agree")]  # fmt: skip
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/v1/chat/completions", json=BODY, headers=sent)
    assert r.status_code == 200, r.text


async def test_an_identity_conflict_names_the_alias_the_caller_sent(proxy: InProcessProxy) -> None:
    sent = {"Authorization": f"Bearer {DEV_KEY}", "X-TFY-Team": "someone-else"}
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/v1/chat/completions", json=BODY, headers=sent)
    assert r.status_code == 403 and r.json()["error"]["code"] == "identity_conflict"
    assert "X-TFY-Team" in r.json()["error"]["message"]
    assert "X-Governor-Team" not in r.json()["error"]["message"]


async def test_every_401_and_403_is_logged_without_secrets_and_counted(
    proxy: InProcessProxy, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-not-a-governor-key-" + uuid.uuid4().hex
    caplog.set_level(logging.WARNING, logger="governor.auth")
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r1 = await h.post("/v1/chat/completions", json=BODY,
                          headers={"Authorization": f"Bearer {secret}"})
        r2 = await h.get("/gateway/sessions", headers={"Authorization": f"Bearer {DEV_KEY}"})
        r3 = await h.get("/metrics", headers={"Authorization": f"Bearer {DEV_KEY}"})
        text = (await h.get("/metrics", headers={"Authorization": "Bearer gk-dev-metrics"})).text
    assert (r1.status_code, r2.status_code, r3.status_code) == (401, 403, 403)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "governor.auth"]
    assert any("401 invalid_api_key" in m and "llm" in m for m in lines), lines
    assert any("403 admin_required" in m and "admin" in m for m in lines), lines
    assert any("403 metrics_role_required" in m for m in lines), lines
    assert not any(secret in m or DEV_KEY in m for m in lines)
    for labels in ('code="invalid_api_key",route="llm",status="401"',
                   'code="admin_required",route="admin",status="403"',
                   'code="metrics_role_required",route="metrics",status="403"'):  # fmt: skip
        assert f"governor_auth_refusals_total{{{labels}}}" in text, labels


async def test_identity_header_refusals_are_logged_and_counted_too(
    proxy: InProcessProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A key contradicted by a header (403 identity_conflict), a header sent twice and a
    Governor header contradicted by its X-TFY alias (400) leave a log line and a count, like
    a refused key: before, the 400s left no trace at all."""
    caplog.set_level(logging.WARNING, logger="governor.auth")
    auth = ("Authorization", f"Bearer {DEV_KEY}")
    sent = [
        [auth, ("X-TFY-Team", "someone-else")],
        [auth, ("X-Governor-Project", "a"), ("X-Governor-Project", "a")],
        [auth, ("X-TFY-Project", "a"), ("X-Governor-Project", "b")],
    ]
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        statuses = [(await h.post("/v1/chat/completions", json=BODY, headers=headers)).status_code
                    for headers in sent]  # fmt: skip
        text = (await h.get("/metrics", headers={"Authorization": "Bearer gk-dev-metrics"})).text
    assert statuses == [403, 400, 400]
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "governor.auth"]
    for what in ("403 identity_conflict", "400 duplicate_identity_header",
                 "400 conflicting_identity_headers"):  # fmt: skip
        assert any(what in m and "llm" in m for m in lines), (what, lines)
    assert not any(DEV_KEY in m for m in lines)
    for labels in ('code="identity_conflict",route="llm",status="403"',
                   'code="duplicate_identity_header",route="llm",status="400"',
                   'code="conflicting_identity_headers",route="llm",status="400"'):  # fmt: skip
        assert f"governor_auth_refusals_total{{{labels}}}" in text, labels


async def test_prompt_and_completion_hashes_are_keyed_with_the_deployment_salt(
    proxy: InProcessProxy,
) -> None:
    idem = uuid.uuid4().hex
    prompt = "yes"
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/v1/chat/completions", headers={
            "Authorization": f"Bearer {DEV_KEY}", "Idempotency-Key": idem},
            json={"model": "support-cheap", "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200
    assert proxy.gw is not None
    await proxy.gw.writer.flush()
    row = await proxy.gw.store.get_call(idempotent_call_id("dev-developer", idem))  # type: ignore[attr-defined]
    salt = gateway_salt(proxy.gw)
    assert row.prompt_sha256 == hmac.new(salt, prompt.encode(), hashlib.sha256).hexdigest()
    assert row.prompt_sha256 != hashlib.sha256(prompt.encode()).hexdigest()
    answer = r.json()["choices"][0]["message"]["content"].encode()
    assert answer and row.completion_bytes == len(answer)
    assert row.completion_sha256 == hmac.new(salt, answer, hashlib.sha256).hexdigest()
    assert row.completion_sha256 != hashlib.sha256(answer).hexdigest()
