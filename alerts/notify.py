"""Notifications, delivered for real through Apprise (Slack, PagerDuty Events v2, Microsoft Teams,
JSON webhooks, email …): one maintained library instead of a hand-written client per service.

Targets are named in a `gateway-notification-targets` document; a target's URL (which holds its
secret) comes from an environment variable (`url_env`) or `${VAR}` in `url`. Every delivery
carries an idempotency key (alert run + step + target): it is in the message (title suffix and
body) and, for JSON webhooks, in an `X-Governor-Idempotency-Key` header, so a retried delivery
is recognisable; a delivery already recorded as sent is not sent again.

A budget `notify:` entry names a target; the seed's `slack:#channel` / `pagerduty:service` names
are target names like any other (configure a target with that exact name).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING
from urllib.parse import quote

from ledger.alert_store import notification_sent, record_notification
from policies.alerts import NotificationTarget, targets_of

if TYPE_CHECKING:
    from activities.gateway import Gateway

log = logging.getLogger("governor.notify")
SEND_TIMEOUT = 15.0
SEND_THREADS = 16  # deliveries in flight at once per process; more wait (within SEND_TIMEOUT)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _send_pool() -> ThreadPoolExecutor:
    """Apprise sends block a thread until the target answers or times out, so they run in a
    pool of their own: deliveries hanging on a stuck target never take the event loop's default
    pool, which the ledger's chain hashing (under a kill), `/metrics` and sessions' tool calls
    share."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="governor-notify")
        return _pool


class DeliveryFailed(Exception):
    """A target did not accept the notification (retried by the caller's activity)."""


@dataclass(frozen=True)
class Delivery:
    target: str
    sent: bool  # False: already delivered under this idempotency key
    skipped: str = ""  # why nothing was sent (unknown target …)


def target_url(t: NotificationTarget) -> str | None:
    if t.url_env:
        return os.environ.get(t.url_env) or None
    return t.url


PAGERDUTY_DEDUP_MAX = 255  # Events v2 dedup_key, characters


def _with_header(url: str, idem_key: str) -> str:
    """Carry the idempotency key where the service can see it: Apprise's json:// and form://
    take extra headers as `+Header=value` URL arguments; PagerDuty Events v2 gets it as its
    `dedup_key` (Apprise's `dedup=`, unless the URL sets one), so PagerDuty itself folds a
    retried delivery into the same incident (a key over 255 characters: its sha256 hex)."""
    sep = "&" if "?" in url else "?"
    if url.startswith("pagerduty://"):
        if "dedup=" in url:
            return url
        dedup = idem_key if len(idem_key) <= PAGERDUTY_DEDUP_MAX else sha256(
            idem_key.encode()).hexdigest()
        return f"{url}{sep}dedup={quote(dedup, safe='')}"
    if not url.startswith(("json://", "jsons://", "form://", "forms://", "xml://", "xmls://")):
        return url
    return f"{url}{sep}+X-Governor-Idempotency-Key={quote(idem_key, safe='')}"


def _send(url: str, title: str, body: str) -> bool:
    import apprise

    ap = apprise.Apprise()
    if not ap.add(url):
        raise DeliveryFailed("the target's URL is not a notification URL Apprise understands")
    return bool(ap.notify(title=title, body=body))


async def deliver(gw: Gateway, target: str, title: str, body: str, idem_key: str) -> Delivery:
    """Send once per idempotency key; raises DeliveryFailed when the target refuses or is down."""
    targets = targets_of(gw.config.extra)
    t = targets.get(target)
    if t is None:
        log.warning("notification target %r is not configured; nothing sent", target)
        return Delivery(target, False, f"target {target!r} is not configured")
    url = target_url(t)
    if not url:
        return Delivery(target, False, f"target {target!r}: ${t.url_env} is not set")
    if await notification_sent(gw.store, idem_key):
        return Delivery(target, False, "already delivered")
    text = f"{body}\n\nidempotency-key: {idem_key}"
    loop = asyncio.get_running_loop()
    try:
        ok = await asyncio.wait_for(
            loop.run_in_executor(_send_pool(), _send, _with_header(url, idem_key),
                                 f"{title} [{idem_key}]", text),
            SEND_TIMEOUT,
        )
    except TimeoutError:
        ok = False
    await record_notification(gw.store, idem_key=idem_key, target=target, ok=ok,
                              detail="" if ok else "not accepted", ts=time.time())
    if not ok:
        raise DeliveryFailed(f"target {target!r} did not accept the notification")
    return Delivery(target, True)


async def deliver_with_retries(gw: Gateway, target: str, title: str, body: str, idem_key: str,
                               attempts: int = 5, first_delay: float = 1.0) -> Delivery | None:
    """Outside a workflow (budget thresholds on the call path's background): retry with backoff;
    the caller never waits for it."""
    delay = first_delay
    for n in range(attempts):
        try:
            return await deliver(gw, target, title, body, idem_key)
        except Exception as exc:
            log.warning("notification to %r failed (attempt %d/%d): %s", target, n + 1, attempts,
                        type(exc).__name__)
            if n + 1 < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
    return None


def budget_message(window: str, at_pct: float, spent: float, ceiling: float) -> (
    tuple[str, str, str]
):
    """(idempotency key prefix, title, body) of a budget threshold's notification; `window` is
    `<budget id>@<window start>` as in `budget_alerts.window_key`."""
    budget = window.split("@", 1)[0]
    title = f"Governor budget {budget} at {at_pct:g}%"
    body = f"Budget {budget} crossed {at_pct:g}%: ${spent:.4f} of ${ceiling:.2f} this window."
    return f"budget-{window}-{at_pct:g}", title, body


async def notify_budget(gw: Gateway, window: str, at_pct: float, spent: float, ceiling: float,
                        targets: list[str]) -> None:
    """A budget threshold's `notify:` targets, each once per (budget window, threshold).

    With Temporal (an alert hub), delivery is a NotifyWorkflow whose activities retry until the
    target takes it (up to a day); without Temporal, a background retry in this process."""
    key, title, body = budget_message(window, at_pct, spent, ceiling)
    hub = getattr(gw, "alerts", None)
    if hub is not None:
        await hub.start_notification(key, title, body, targets)
        return
    await asyncio.gather(*(
        deliver_with_retries(gw, t, title, body, f"{key}:{t}") for t in targets
    ))
