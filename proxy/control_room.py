"""`/control-room`: the web control room, served by the proxy.

Routes (all HTML, all with `SECURITY_HEADERS`):
- `GET  /control-room` — the six panels for the query's filters (`controlroom.filters`); without
  a valid session cookie a 303 to the login page; a bad filter is a 400 page.
- `GET  /control-room/login`, `POST /control-room/login` (form `api_key`) — a viewer, auditor,
  on-call or admin key gets a signed session cookie (`controlroom.auth`: HttpOnly,
  SameSite=Strict, Path=/control-room, 8 h); any other role is 403, an unknown key 401.
- `POST /control-room/logout` — ends the session (cookie cleared, its nonce refused here).
- `POST /control-room/kill` (form `csrf`, `session_id`, `confirm=yes`, optional `reason`) —
  on-call/admin only: the same kill as `PUT /gateway/sessions/{id}/kill` (`Gateway.kill`:
  journaled, in the ledger with the actor, every replica, the session's workflow).
- `GET  /control-room/alerts/{key}` — on-call/admin: one alert's runs, runbook steps, the
  rule's runbook text and the live runbook (panel 3's runbook column links here);
  `POST …/alerts/{key}/ack|approve|resolve` (form `csrf`, optional `comment`) — the same Update
  as `POST /gateway/alerts/{key}/…`, the signed-in key's user as the actor.
- `GET  /control-room/style.css`, `/control-room/favicon.svg` — static, no session needed.

Every POST needs a same-origin `Origin` (or `Referer`) and, once signed in, the session's
CSRF token; form bodies are at most `MAX_FORM_BYTES`.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from activities.gateway import Gateway
from activities.guardrails import gateway_salt
from controlroom import auth
from controlroom.filters import ACCEPTED, FilterError, parse_page_query
from controlroom.page import (
    BASE,
    FAVICON_SVG,
    STYLESHEET,
    Viewer,
    alert_page,
    control_room_page,
    login_page,
    message_page,
)
from ledger.alert_store import list_alerts, steps_of
from ledger.errors import LedgerUnavailable
from policies.alerts import rules_of
from policies.config.models import ApiKey
from policies.refusals import Refusal
from proxy.admin import _query
from proxy.alert_routes import _person as runbook_update
from proxy.alert_routes import _workflow_status as runbook_status
from proxy.control_room_routes import panel_slot, query_panels
from proxy.errors import BUSY_RETRY_AFTER_S, note_refusal, retry_after_headers
from proxy.http import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    respond,
)
from proxy.outcome_routes import READ_ROLES as VIEWERS  # the JSON route's readers, the same
from proxy.roles import RESPONDERS

log = logging.getLogger("governor.controlroom")

MAX_FORM_BYTES = 8 * 1024
MAX_REVOKED = 10_000
# A page's panels are computed in one of the ledger store's panel slots, shared with the JSON
# route (`proxy.control_room_routes.panel_slot`): a few at once, a few queued, then a 503 page.
HTML = b"text/html; charset=utf-8"
CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class ControlRoom:
    """The control room's per-replica state: logged-out session nonces (until they expire,
    at most `MAX_REVOKED`) and the key-id index of the current config."""

    def __init__(self) -> None:
        self.revoked: dict[str, int] = {}
        self._keys: tuple[Any, dict[str, ApiKey]] | None = None
        self._secret: tuple[bytes, bytes] | None = None

    def secret(self, gw: Gateway) -> bytes:
        salt = gateway_salt(gw)
        if self._secret is None or self._secret[0] != salt:
            self._secret = (salt, auth.derive_secret(salt))
        return self._secret[1]

    def key_by_id(self, gw: Gateway, key_id: str) -> ApiKey | None:
        by_hash = gw.config.keys_by_hash
        if self._keys is None or self._keys[0] is not by_hash:
            self._keys = (by_hash, {k.id: k for k in by_hash.values()})
        return self._keys[1].get(key_id)

    def revoke(self, claims: auth.Claims, now: float) -> None:
        if len(self.revoked) >= MAX_REVOKED:
            self.revoked = {n: e for n, e in self.revoked.items() if e > now}
            while len(self.revoked) >= MAX_REVOKED:  # all still live: forget the oldest
                self.revoked.pop(next(iter(self.revoked)))
        self.revoked[claims.nonce] = claims.expires


async def _html(send: Send, status: int, page: str,
                headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await respond(send, status, page.encode("utf-8"), HTML, SECURITY_HEADERS + headers)


async def _redirect(send: Send, location: str,
                    headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await respond(send, 303, b"", HTML,
                  (*SECURITY_HEADERS, (b"location", location.encode()), *headers))


def _cookie(headers: dict[str, str]) -> str | None:
    raw = headers.get("cookie")
    if not raw or len(raw) > 8192:
        return None
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == auth.COOKIE_NAME:
            return value.strip().strip('"')
    return None


def _is_https(scope: Scope, headers: dict[str, str]) -> bool:
    return scope.get("scheme") == "https" or headers.get("x-forwarded-proto") == "https"


def _set_cookie(value: str, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    attrs = f"{auth.COOKIE_NAME}={value}; Path={BASE}; Max-Age={max_age}; HttpOnly; " \
            "SameSite=Strict" + ("; Secure" if secure else "")
    return (b"set-cookie", attrs.encode())


def same_origin(headers: dict[str, str]) -> bool:
    """Whether a POST comes from a page of this host: `Origin` (or, without it, `Referer`)
    must be http(s)://<Host>. A missing or opaque (`null`) origin is refused."""
    host = headers.get("host")
    origin = headers.get("origin")
    if not origin or origin == "null":
        origin = headers.get("referer")
    if not host or not origin:
        return False
    try:
        u = urlsplit(origin)
    except ValueError:
        return False
    return u.scheme in ("http", "https") and u.netloc == host


async def _form(scope: Scope, receive: Receive, headers: dict[str, str],
                allowed: set[str]) -> dict[str, str]:
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise Refusal(415, "unsupported_media_type", "send the form as "
                      "application/x-www-form-urlencoded")
    try:
        raw = await read_body(scope, receive, MAX_FORM_BYTES, headers.get("content-length"))
    except BodyTooLarge:
        raise Refusal(413, "request_too_large",
                      f"form body larger than {MAX_FORM_BYTES} bytes") from None
    try:
        q = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "invalid_request", "the form is not valid UTF-8 form data") from None
    out: dict[str, str] = {}
    for name, values in q.items():
        if name not in allowed:
            raise Refusal(400, "invalid_request", f"unknown form field; use {sorted(allowed)}")
        if len(values) != 1:
            raise Refusal(400, "invalid_request", f"form field {name!r} given more than once")
        out[name] = values[0]
    return out


async def handle_control_room(gw: Gateway, cr: ControlRoom, scope: Scope, receive: Receive,
                              send: Send) -> None:
    """Serve one `/control-room…` request; refusals become HTML pages with their status."""
    try:
        await _dispatch(gw, cr, scope, receive, send)
    except Refusal as r:
        note_refusal(gw, r, "control-room", scope)
        await _html(send, r.status, message_page(_TITLES.get(r.status, "Refused"), r.message))
    except LedgerUnavailable:
        await _html(send, 503, message_page(
            "Ledger unavailable",
            "the ledger database is unreachable; the panels cannot be read. Retry soon."),
            ((b"retry-after", str(BUSY_RETRY_AFTER_S).encode()),))


_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Not found",
           405: "Method not allowed", 408: "Too slow", 413: "Too large",
           415: "Unsupported form"}


async def _dispatch(gw: Gateway, cr: ControlRoom, scope: Scope, receive: Receive,
                    send: Send) -> None:
    method, path = scope["method"], scope["path"].rstrip("/") or "/"
    routes = {BASE: ("GET",), f"{BASE}/login": ("GET", "POST"), f"{BASE}/logout": ("POST",),
              f"{BASE}/kill": ("POST",)}
    static = (f"{BASE}/style.css", f"{BASE}/favicon.svg")
    if path != BASE and (path in routes or path in static or path.startswith(f"{BASE}/alerts/")):
        _query(scope, frozenset())  # the page takes its filters (`_page`); no other any query
    if path == f"{BASE}/style.css" and method == "GET":
        await respond(send, 200, STYLESHEET.encode(), b"text/css; charset=utf-8",
                      SECURITY_HEADERS)
        return
    if path == f"{BASE}/favicon.svg" and method == "GET":
        await respond(send, 200, FAVICON_SVG.encode(), b"image/svg+xml", SECURITY_HEADERS)
        return
    if path.startswith(f"{BASE}/alerts/"):
        await _alert_route(gw, cr, scope, receive, send, path[len(f"{BASE}/alerts/"):])
        return
    if path not in routes:
        raise Refusal(404, "not_found", "no such control-room page")
    if method not in routes[path]:
        raise Refusal(405, "method_not_allowed",
                      f"{method} is not served here; use {' or '.join(routes[path])}")
    headers = header_map(scope)
    if path == f"{BASE}/login":
        if method == "POST":
            _require_same_origin(headers)
            await _login(gw, cr, scope, receive, send, headers)
        else:
            await _html(send, 200, login_page())
        return
    if path == BASE:
        who = _signed_in(gw, cr, headers, time.time())
        if who is None:
            await _redirect(send, f"{BASE}/login")
            return
        await _page(gw, cr, scope, send, *who)
        return
    key, claims, form = await _signed_form(gw, cr, scope, receive, headers,
                                           {"csrf", "session_id", "reason", "confirm"})
    if path == f"{BASE}/logout":
        cr.revoke(claims, time.time())
        await _redirect(send, f"{BASE}/login",
                        (_set_cookie("", 0, _is_https(scope, headers)),))
        return
    await _kill(gw, cr, send, key, claims, form)


def _require_same_origin(headers: dict[str, str]) -> None:
    if not same_origin(headers):
        raise Refusal(403, "cross_origin", "this form must be sent from the control room's own "
                      "pages (Origin does not match the host)")


async def _signed_form(gw: Gateway, cr: ControlRoom, scope: Scope, receive: Receive,
                       headers: dict[str, str],
                       fields: set[str]) -> tuple[ApiKey, auth.Claims, dict[str, str]]:
    """A POST's key, session and form fields, once it is same-origin, signed in and carries
    its session's CSRF token (each a 403 otherwise)."""
    _require_same_origin(headers)
    who = _signed_in(gw, cr, headers, time.time())
    if who is None:
        raise Refusal(403, "not_signed_in", "sign in to the control room first")
    form = await _form(scope, receive, headers, fields)
    if not auth.csrf_ok(cr.secret(gw), who[1].nonce, form.get("csrf")):
        raise Refusal(403, "csrf_failed",
                      "the form's CSRF token is missing or wrong; reload the page and retry")
    return who[0], who[1], form


def _signed_in(gw: Gateway, cr: ControlRoom, headers: dict[str, str],
               now: float) -> tuple[ApiKey, auth.Claims] | None:
    value = _cookie(headers)
    if value is None:
        return None
    key_id = auth.key_id_of(value)
    key = cr.key_by_id(gw, key_id) if key_id is not None else None
    if key is None or key.role not in VIEWERS:
        return None
    claims = auth.verify(cr.secret(gw), value, key.hash, now)
    if claims is None or claims.nonce in cr.revoked:
        return None
    return key, claims


def _viewer(gw: Gateway, cr: ControlRoom, key: ApiKey, claims: auth.Claims) -> Viewer:
    return Viewer(user=key.user, role=key.role, can_act=key.role in RESPONDERS,
                  csrf=auth.csrf_token(cr.secret(gw), claims.nonce))


async def _login(gw: Gateway, cr: ControlRoom, scope: Scope, receive: Receive, send: Send,
                 headers: dict[str, str]) -> None:
    form = await _form(scope, receive, headers, {"api_key"})
    secret = form.get("api_key", "").strip()
    try:
        if len(secret) > 512:  # longer than any key: unknown, and not worth hashing
            raise Refusal(401, "invalid_api_key", "this API key is not known to the gateway")
        key = gw.authenticate(secret or None)
    except Refusal as r:
        note_refusal(gw, r, "control-room", scope)
        await _html(send, 401, login_page(f"Sign-in refused: {r.message}"))
        return
    if key.role not in VIEWERS:
        denied = Refusal(403, "role_not_allowed", f"key {key.id!r} has role {key.role!r}; the "
                         "control room needs a viewer, auditor, on-call or admin key")
        note_refusal(gw, denied, "control-room", scope)
        await _html(send, 403, login_page(denied.message))
        return
    value, _ = auth.issue(cr.secret(gw), key.id, key.hash, time.time())
    log.info("control room sign-in", extra={"key_id": key.id, "role": key.role})
    await _redirect(send, BASE,
                    (_set_cookie(value, auth.SESSION_TTL_S, _is_https(scope, headers)),))


async def _page(gw: Gateway, cr: ControlRoom, scope: Scope, send: Send, key: ApiKey,
                claims: auth.Claims) -> None:
    viewer = _viewer(gw, cr, key, claims)
    try:
        raw = _query(scope, set(ACCEPTED))
        query = parse_page_query(raw, time.time())
    except (Refusal, FilterError) as exc:
        msg = exc.message if isinstance(exc, Refusal) else str(exc)
        await _html(send, 400, message_page("Bad filter", msg, viewer))
        return
    try:
        async with panel_slot(gw.store):  # shared with the JSON route, per ledger store
            # priced by the repository's config, as the JSON route and `governor report` are
            panels = await query_panels(gw.store, query, gw.base_config or gw.config)
    except Refusal as busy:
        if busy.code != "control_room_busy":
            raise
        await _html(send, busy.status, message_page("Busy", busy.message, viewer),
                    tuple(retry_after_headers(busy)))
        return
    except ValueError as exc:  # compute_panels' own checks (range, panel numbers)
        await _html(send, 400, message_page("Bad filter", str(exc), viewer))
        return
    simulated = any(p.simulated for p in gw.config.providers.values())
    page = control_room_page(panels, viewer, query.form, query.filters.since,
                             query.filters.until, simulated=simulated)
    await _html(send, 200, page)


async def _kill(gw: Gateway, cr: ControlRoom, send: Send, key: ApiKey, claims: auth.Claims,
                form: dict[str, str]) -> None:
    if key.role not in RESPONDERS:
        raise Refusal(403, "oncall_required", f"key {key.id!r} has role {key.role!r}; killing a "
                      "session needs an on-call or admin key")
    sid = form.get("session_id", "").strip()
    if not sid or len(sid) > 256 or not sid.isprintable():
        raise Refusal(400, "invalid_request", "session id must be 1-256 printable characters")
    if form.get("confirm") != "yes":
        raise Refusal(400, "not_confirmed", "tick `confirm` to kill the session")
    reason = form.get("reason", "").strip()[:500] or "(no reason given)"
    rec, created = await gw.kill(sid, key.user, f"control room: {reason}")
    if created is None:
        text = (f"Session {sid} is killed on this replica and journaled; the ledger is "
                "unreachable, so it reaches the other replicas when the ledger is back.")
    elif created:
        text = f"Session {sid} killed by {rec.actor}: {rec.reason}."
    else:
        text = f"Session {sid} was already killed (by {rec.actor}: {rec.reason})."
    await _html(send, 200, message_page("Session killed", text, _viewer(gw, cr, key, claims),
                                        ok=True))



ALERT_ACTIONS = ("ack", "approve", "resolve")


async def _alert_route(gw: Gateway, cr: ControlRoom, scope: Scope, receive: Receive, send: Send,
                       rest: str) -> None:
    """`GET alerts/{key}` (the page) and `POST alerts/{key}/ack|approve|resolve` (the same
    Update as `POST /gateway/alerts/{key}/…`, the signed-in key's user as the actor)."""
    method, headers = scope["method"], header_map(scope)
    if method == "GET":
        await _alert(gw, cr, send, headers, rest)
        return
    if method != "POST":
        raise Refusal(405, "method_not_allowed", f"{method} is not served here")
    alert_key, _, what = rest.rpartition("/")
    if what not in ALERT_ACTIONS or not alert_key:
        raise Refusal(404, "not_found", "alert actions are ack, approve and resolve")
    key, claims, form = await _signed_form(gw, cr, scope, receive, headers, {"csrf", "comment"})
    _check_alert(key, alert_key)
    await runbook_update(gw, alert_key, what, key, {"comment": form.get("comment", "")[:1000]})
    await _html(send, 200, message_page(
        "Alert updated", f"{what} recorded on alert {alert_key} by {key.user}.",
        _viewer(gw, cr, key, claims), ok=True))


def _check_alert(key: ApiKey, alert_key: str) -> None:
    if key.role not in RESPONDERS:
        raise Refusal(403, "oncall_required", f"key {key.id!r} has role {key.role!r}; alerts "
                      "need an on-call or admin key")
    if not 0 < len(alert_key) <= 256 or not alert_key.isprintable():
        raise Refusal(400, "invalid_request", "an alert key is 1-256 printable characters")


async def _alert(gw: Gateway, cr: ControlRoom, send: Send, headers: dict[str, str],
                 alert_key: str) -> None:
    """One alert's page (on-call/admin: alerts are theirs, as on the admin API): its runs
    from the ledger, each run's runbook steps, the rule's runbook text, and its live runbook
    (waiting for whom) where this replica runs the alert hub."""
    who = _signed_in(gw, cr, headers, time.time())
    if who is None:
        await _redirect(send, f"{BASE}/login")
        return
    key, claims = who
    _check_alert(key, alert_key)
    rows = await list_alerts(gw.store, key=alert_key, limit=20)
    if not rows:
        raise Refusal(404, "alert_not_found", "no alert with this key is in the ledger")
    runs = [{**r.model_dump(), "steps": [s.model_dump() for s in await steps_of(gw.store,
                                                                                 r.run_id)]}
            for r in rows]
    runbook = next((r.runbook for r in rules_of(gw.config.extra) if r.name == rows[0].name),
                   None)
    live = await runbook_status(gw, alert_key)
    await _html(send, 200, alert_page(_viewer(gw, cr, key, claims), alert_key, runs, runbook,
                                      live))
