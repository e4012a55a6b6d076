"""A refusal that means "try later" says when: the admin API's 503 `ledger_unavailable` (any
route) and the control room's (web page and JSON) carry `Retry-After`, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from ledger.errors import LedgerUnavailable
from tests.controlroom.cr_client import ADMIN_KEY, VIEWER_KEY, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_ledger_unavailable_on_admin_routes_and_the_control_room_says_when_to_retry(
    proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proxy.control_room_routes as routes

    gw = proxy.gw

    async def down(*_a, **_k):
        raise LedgerUnavailable("ledger down (injected)")

    monkeypatch.setattr(gw.store, "list_sessions", down)
    monkeypatch.setattr(routes, "compute_panels", down)
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=20,
                                 follow_redirects=False) as h:
        for path, key in (("/gateway/sessions", ADMIN_KEY),
                          ("/gateway/control-room/panels?panel=1", VIEWER_KEY)):
            r = await h.get(path, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "ledger_unavailable"
            assert r.headers["retry-after"] == "5", path
        await sign_in(h, proxy.base_url, VIEWER_KEY)
        r = await h.get("/control-room")
        assert r.status_code == 503 and "Ledger unavailable" in r.text
        assert r.headers["retry-after"] == "5"
