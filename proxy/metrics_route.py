"""`GET /metrics`: authenticated, rendered off the event loop, and cached briefly.

A scrape needs a key with the `metrics` or `admin` role, or the configured scrape token
(`metrics_token_hash`), unless `metrics_public: true`. Rendering walks every series in pure
Python, so it runs in a thread (the GIL is handed back every few milliseconds: calls keep being
served), and scrapers arriving while a render runs share it: any number of concurrent scrapers
costs one render at a time.
"""

from __future__ import annotations

import asyncio
import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from activities.gateway import Gateway, hash_key
from policies.refusals import Refusal
from proxy.errors import note_refusal, send_refusal
from proxy.http import Scope, Send, header_map, respond
from proxy.llm_routes import bearer

SCRAPE_ROLES = ("metrics", "admin")


class MetricsPage:
    """Renders in a thread; scrapers that arrive while a render runs share its result."""

    def __init__(self) -> None:
        self._inflight: asyncio.Future[bytes] | None = None

    async def render(self, gw: Gateway) -> bytes:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(
                asyncio.to_thread(generate_latest, gw.metrics.registry)
            )
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    def _done(self, _: asyncio.Future[bytes]) -> None:
        self._inflight = None


def check_scraper(gw: Gateway, scope: Scope) -> None:
    """Raise the refusal (401/403) for a caller who may not read /metrics."""
    settings = gw.config.settings
    if settings.metrics_public:
        return
    secret = bearer(header_map(scope))
    token = settings.metrics_token_hash
    if secret and token and hmac.compare_digest(hash_key(secret), token):
        return
    key = gw.authenticate(secret)  # 401 when missing or unknown
    if key.role not in SCRAPE_ROLES:
        raise Refusal(
            403,
            "metrics_role_required",
            f"key {key.id!r} has role {key.role!r}; /metrics needs a key with the metrics or "
            "admin role, or the configured scrape token",
        )


async def serve_metrics(gw: Gateway, page: MetricsPage, scope: Scope, send: Send) -> None:
    try:
        check_scraper(gw, scope)
    except Refusal as r:
        note_refusal(gw, r, "metrics", scope)
        await send_refusal(send, "openai", r)
        return
    await respond(send, 200, await page.render(gw), CONTENT_TYPE_LATEST.encode())
