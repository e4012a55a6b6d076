"""Signing in to `/control-room` over real HTTP, as a browser would (Origin header, form body)."""

from __future__ import annotations

import re

import httpx

VIEWER_KEY = "gk-dev-viewer"
ONCALL_KEY = "gk-dev-oncall"
ADMIN_KEY = "gk-dev-admin"
DEV_KEY = "gk-dev-developer"
METRICS_KEY = "gk-dev-metrics"


def origin_of(base_url: str) -> dict[str, str]:
    return {"origin": base_url}


async def sign_in(h: httpx.AsyncClient, base_url: str, key: str) -> httpx.Response:
    """POST the login form; on success `h` holds the session cookie."""
    return await h.post(base_url + "/control-room/login", data={"api_key": key},
                        headers=origin_of(base_url))


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m, "no CSRF token in the page"
    return m.group(1)
