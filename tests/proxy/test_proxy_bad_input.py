"""Bad input gets a clear error in the caller's protocol, never a 500, and nothing is charged."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.proxy.conftest import ADMIN_KEY, DEV_KEY

pytestmark = pytest.mark.asyncio(loop_scope="session")

AUTH = {"authorization": f"Bearer {DEV_KEY}", "content-type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("/v1/chat/completions", b"[1,2]", 400, "invalid_request"),
        ("/v1/chat/completions", b'{"model": "support-cheap"}', 400, "invalid_request"),
        ("/v1/chat/completions", b'{"model": 7, "messages": [{"role":"user","content":"x"}]}',
         400, "invalid_request"),
        ("/v1/chat/completions",
         b'{"model": "support-cheap", "messages": [{"role":"user","content":"x"}], '
         b'"stream": "yes"}', 400, "invalid_request"),
        ("/v1/chat/completions",
         b'{"model": "support-cheap", "messages": [{"role":"user","content":"x"}], '
         b'"max_tokens": -3}', 400, "invalid_request"),
        ("/v1/messages", b'{"model": "intent-fast", "messages": [{"role":"user","content":"x"}]}',
         400, "invalid_request"),
        ("/v1/messages", b'{"model": "intent-fast", "messages": "hi", "max_tokens": 5}',
         400, "invalid_request"),
    ],
)
async def test_malformed_requests_get_400_with_a_code(proxy, path, body, status, code):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post(path, content=body, headers=AUTH)
    assert r.status_code == status
    doc = r.json()
    if path == "/v1/messages":
        assert doc["type"] == "error" and code in doc["error"]["message"]
    else:
        assert doc["error"]["code"] == code and doc["error"]["message"]


async def test_oversized_body_is_413_before_reading_it_all(proxy):
    limit = proxy.gw.config.settings.max_body_bytes
    big = b'{"model":"support-cheap","messages":[{"role":"user","content":"' + b"a" * (
        limit + 10) + b'"}]}'
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/v1/chat/completions", content=big, headers=AUTH)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        r2 = await h.post("/v1/messages", content=big, headers=AUTH)
        assert r2.status_code == 413 and r2.json()["error"]["type"] == "request_too_large"


async def test_unknown_routes_and_methods_are_404_json(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.get("/v1/chat/completions", headers=AUTH)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await h.post("/gateway/nothing", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 404


async def test_kill_with_bad_body_is_400_and_records_nothing(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.put("/gateway/sessions/sess-badkill/kill", content=b"{oops",
                        headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 400
        r = await h.put("/gateway/sessions/sess-badkill/kill", json={"reason": 5},
                        headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 400
    assert "sess-badkill" not in proxy.gw.state.killed


async def test_invalid_config_reload_keeps_the_old_config_and_names_file_line_field(proxy):
    bad = proxy.config_dir / "zzz-broken.yaml"
    bad.write_text("type: gateway-budget-config\nname: broken\nbudgets:\n"
                   "  - id: b1\n    ceiling_usd: lots\n    window: monthly\n")
    before = proxy.gw.config
    try:
        async with httpx.AsyncClient(base_url=proxy.base_url) as h:
            denied = await h.post("/gateway/config/reload", headers=AUTH)
            assert denied.status_code == 403
            r = await h.post("/gateway/config/reload",
                             headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 400
        errs = r.json()["error"]["errors"]
        assert any("zzz-broken.yaml:5" in e and "budgets.0.ceiling_usd" in e for e in errs), errs
        assert proxy.gw.config is before
    finally:
        bad.unlink()
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        ok = await h.post("/gateway/config/reload",
                          headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200 and "intent-fast" in ok.json()["virtual_models"]


async def test_metrics_expose_bounded_labels(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        await h.post("/v1/chat/completions", headers=AUTH, json={
            "model": "support-cheap", "messages": [{"role": "user", "content": "m"}]})
        text = (await h.get("/metrics", headers={"authorization": "Bearer gk-dev-metrics"})).text
    assert "governor_requests_total{" in text
    assert "governor_tokens_total{" in text and "governor_cost_usd_total{" in text
    assert "governor_gateway_overhead_seconds_bucket" in text
    assert "governor_upstream_latency_seconds_bucket" in text
    assert "session" not in "".join(line for line in text.splitlines()
                                    if line.startswith("governor_") and "{" in line)


async def test_session_listing_with_a_bad_filter_is_a_400(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        auth = {"authorization": f"Bearer {ADMIN_KEY}"}
        assert (await h.get("/gateway/sessions?status=zombie", headers=auth)).status_code == 400
        assert (await h.get("/gateway/sessions?limit=abc", headers=auth)).status_code == 400
        ok = await h.get("/gateway/sessions?status=open&limit=5", headers=auth)
        assert ok.status_code == 200 and isinstance(ok.json()["sessions"], list)


async def test_a_hostile_config_reload_is_refused_located_and_the_proxy_keeps_serving(proxy):
    from tests.governor.test_cli_config import BOMB

    bomb = proxy.config_dir / "zzz-bomb.yaml"
    bomb.write_text(BOMB)
    before = proxy.gw.config
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=proxy.base_url) as h:
            reload = asyncio.ensure_future(h.post("/gateway/config/reload", headers=admin))
            health = await h.get("/healthz")  # served while the reload is being validated
            r = await reload
        assert health.status_code == 200
        assert r.status_code == 400
        errs = r.json()["error"]["errors"]
        assert any("zzz-bomb.yaml:" in e and "aliases expand" in e for e in errs), errs
        assert proxy.gw.config is before
    finally:
        bomb.unlink()


async def test_config_reload_needs_an_admin_key_not_on_call(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/gateway/config/reload",
                         headers={"authorization": "Bearer gk-dev-oncall"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
