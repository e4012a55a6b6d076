"""Admin API: kill a session, look one up, list them, reload config; the alert and audit routes.

Every route checks its caller's role against `proxy.roles` (kill: on-call or admin; sessions
list and show: also auditor; config reload: admin only)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qs, unquote

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from ledger.errors import LedgerUnavailable
from ledger.models import CLOSE_ACTOR
from policies.config.yamlsource import ConfigErrors
from policies.refusals import Refusal
from proxy.admin_queries import accepted_query
from proxy.errors import BUSY_RETRY_AFTER_S, note_refusal, retry_after_headers
from proxy.http import BodyTooLarge, Receive, Scope, Send, read_body, respond_json
from proxy.llm_routes import parse_json_body
from proxy.roles import ADMINS, RESPONDERS, SESSION_READERS, require_role
from proxy.sessions import open_session, session_op

log = logging.getLogger("governor.admin")
_MAX_ADMIN_BODY = 64 * 1024
_MAX_LIST = 1000
QUERY = "governor.query"  # the scope key of the checked query parameters


def _admin_error(r: Refusal) -> dict[str, Any]:
    return {"error": {"code": r.code, "message": r.message}}


def require_admin(gw: Gateway, scope: Scope) -> str:
    """The acting user of an on-call or admin key (kill); 403 for any other role."""
    return require_role(gw, scope, RESPONDERS, "this action", "admin_required").user


_SESSION_OPS = ("chat", "tool", "close", "status")


async def handle_admin(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        await _dispatch(gw, scope, receive, send)
    except Refusal as r:
        note_refusal(gw, r, "admin", scope)
        await respond_json(send, r.status, _admin_error(r), retry_after_headers(r))
    except LedgerUnavailable:
        down = Refusal(503, "ledger_unavailable",
                       "the ledger database is unreachable; nothing changed, retry soon",
                       retry_after=BUSY_RETRY_AFTER_S)
        await respond_json(send, down.status, _admin_error(down), retry_after_headers(down))


async def _dispatch(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    method, path = scope["method"], scope["path"]
    parts = [unquote(p) for p in path.strip("/").split("/")]
    names = accepted_query(method, parts[1:])
    if names is not None:  # the URL's shape before its key, like a 404 or a 431
        scope[QUERY] = _query(scope, names)
    # /gateway/sessions/{id}/kill, /gateway/sessions/{id}, /gateway/sessions, /gateway/config/reload
    if len(parts) >= 2 and parts[1] == "audit":
        from proxy.audit_routes import handle_audit_routes

        await handle_audit_routes(gw, parts, scope, receive, send)
    elif len(parts) >= 2 and parts[1] in ("alerts", "overrides"):
        from proxy.alert_routes import handle_alert_routes

        await handle_alert_routes(gw, parts, scope, receive, send)
    elif len(parts) >= 2 and parts[1] == "outcomes":
        from proxy.outcome_routes import handle_outcome_routes

        await handle_outcome_routes(gw, parts, scope, receive, send)
    elif len(parts) >= 2 and parts[1] == "control-room":
        from proxy.control_room_routes import handle_control_room_routes

        await handle_control_room_routes(gw, parts, scope, send)
    elif len(parts) == 4 and parts[1] == "sessions" and parts[3] == "kill":
        if method not in ("PUT", "POST"):
            raise Refusal(405, "method_not_allowed", "use PUT /gateway/sessions/{id}/kill")
        actor = require_admin(gw, scope)
        await _kill(gw, parts[2], actor, scope, receive, send)
    elif len(parts) == 2 and parts[1] == "sessions" and method == "POST":
        await open_session(gw, scope, receive, send)
    elif len(parts) == 4 and parts[1] == "sessions" and parts[3] in _SESSION_OPS:
        op = parts[3]
        if method != ("GET" if op == "status" else "POST"):
            raise Refusal(405, "method_not_allowed", f"wrong method for /gateway/sessions/ID/{op}")
        await session_op(gw, op, parts[2], scope, receive, send)
    elif len(parts) == 3 and parts[1] == "sessions" and method == "GET":
        require_role(gw, scope, SESSION_READERS, "reading sessions", "admin_required")
        await _show(gw, parts[2], send)
    elif len(parts) == 2 and parts[1] == "sessions" and method == "GET":
        require_role(gw, scope, SESSION_READERS, "reading sessions", "admin_required")
        q = route_query(scope)
        limit = q.get("limit", "100")
        ok = limit.isascii() and limit.isdigit() and len(limit) <= 6
        if not ok or not 0 < int(limit) <= _MAX_LIST:
            raise Refusal(400, "invalid_request", f"`limit` must be an integer 1-{_MAX_LIST}")
        try:
            rows = await gw.store.list_sessions(
                status=q.get("status"), project=q.get("project"), limit=int(limit)
            )
        except ValueError as exc:
            raise Refusal(400, "invalid_request", f"bad session query: {exc}") from None
        await respond_json(send, 200, {"sessions": [r.model_dump() for r in rows]})
    elif parts[1:] == ["config", "reload"] and method == "POST":
        # changes every control: admin only, not on-call
        require_role(gw, scope, ADMINS, "config reload", "admin_required")
        await respond_json(send, *await reload_config_off_loop(gw))
    else:
        raise Refusal(404, "not_found", f"no admin route {method} {path}")


def route_query(scope: Scope) -> dict[str, str]:
    """The route's query parameters, as the dispatcher checked them (`proxy.admin_queries`)."""
    q: dict[str, str] = scope[QUERY]
    return q


def _query(scope: Scope, allowed: set[str] | frozenset[str]) -> dict[str, str]:
    """A route's query parameters: known names only (`?x` and `?x=` name one too), each once,
    each at most 256 characters; a known name with a blank value is as if not given."""
    raw = scope.get("query_string", b"")
    if len(raw) > 4096:
        raise Refusal(400, "invalid_request", "query string longer than 4096 bytes")
    try:
        q = parse_qs(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "invalid_request", "query string is not valid UTF-8") from None
    out: dict[str, str] = {}
    for name, given in q.items():
        if name not in allowed:
            use = f"use {', '.join(sorted(allowed))}" if allowed else "this route takes none"
            raise Refusal(400, "invalid_request", f"unknown query parameter; {use}")
        values = [v for v in given if v]
        if not values:
            continue
        if len(values) != 1 or len(values[0]) > 256:
            raise Refusal(400, "invalid_request", f"`{name}` must be given once, ≤ 256 characters")
        out[name] = values[0]
    return out


async def _kill(gw: Gateway, session_id: str, actor: str, scope: Scope, receive: Receive,
                send: Send) -> None:
    try:
        raw = await read_body(scope, receive, _MAX_ADMIN_BODY)
    except BodyTooLarge:
        raise Refusal(413, "request_too_large", "kill body is too large") from None
    reason = "(no reason given)"
    if raw.strip():
        doc = parse_json_body(raw)
        r = doc.get("reason")
        if r is not None and not isinstance(r, str):
            raise Refusal(400, "invalid_request", "`reason` must be a string")
        reason = (r or reason)[:1000]
    if not session_id or len(session_id) > 256:
        raise Refusal(400, "invalid_request", "session id must be 1-256 characters")
    rec, created = await gw.kill(session_id, actor, reason)
    doc: dict[str, Any] = {
        "session_id": session_id,
        "killed": True,
        "already_killed": created is False,
        "actor": rec.actor,
        "reason": rec.reason,
        "ts": rec.ts,
        "recorded": created is not None,
    }
    if created is None:  # accepted: in force here, in the ledger (every replica) when it is back
        doc["message"] = (
            "the ledger database is unreachable: the kill is journaled and in force on this "
            "replica; it is written to the ledger and reaches every replica when it returns"
        )
    await respond_json(send, 200 if created is not None else 202, doc)


async def _show(gw: Gateway, session_id: str, send: Send) -> None:
    rec = await gw.store.get_session(session_id)
    live = gw.state.sessions.get(session_id)
    # Optional hooks (set by `governor up`): a workflow session's own `status` query.
    workflow = None
    for hook in getattr(gw, "session_status_hooks", ()):
        try:
            workflow = await hook(session_id)
        except Exception as exc:
            log.warning("session status hook failed: %s", type(exc).__name__)
        if workflow is not None:
            break
    if rec is None and live is None and workflow is None and session_id not in gw.state.killed:
        raise Refusal(404, "session_not_found", f"no session {session_id!r} is known")
    doc: dict[str, Any] = {"session_id": session_id}
    if rec is not None:
        doc.update(rec.model_dump())
    if workflow is not None:  # the workflow's own state wins over the ledger's copy
        doc.update(status=workflow["status"], workflow=workflow)
    if live is not None:
        doc["live"] = {"calls": live.calls, "tokens": live.tokens, "cost_usd": live.cost_usd}
    kills = [
        k for k in await gw.store.kills_after(0)
        if k.session_id == session_id and k.actor != CLOSE_ACTOR  # a close is no kill
    ]
    if kills:
        k = kills[0]
        doc["status"] = "killed"
        doc["kill"] = {"actor": k.actor, "reason": k.reason, "ts": k.ts}
    await respond_json(send, 200, doc)


async def reload_config_off_loop(gw: Gateway) -> tuple[int, dict[str, Any]]:
    """`reload_config`, with the files read and validated in a thread: a large or hostile config
    directory never stalls the calls being served (YAML parsing is pure Python, so the GIL is
    handed back every few milliseconds). Applying the result happens back on the loop.
    Leases of shared limits whose ceiling the new config lowered are handed back to the shared
    rows before the answer, so other replicas can lease under the new ceiling at once."""
    if gw.config_dir is None:
        return reload_config(gw)
    try:
        new = await asyncio.to_thread(load_config_dir, gw.config_dir)
    except ConfigErrors as exc:
        return _refused(exc)
    out = _apply(gw, new)
    if gw.shared is not None:
        try:
            await gw.shared.push()
        except Exception as exc:  # kept pending: the next push or lease hands them back
            log.warning("shared limit push after reload failed: %s", type(exc).__name__)
    return out


def _refused(exc: ConfigErrors) -> tuple[int, dict[str, Any]]:
    log.warning("config reload refused: %d error(s); old config stays", len(exc.errors))
    return 400, {
        "error": {
            "code": "invalid_config",
            "message": "config not applied; the previous config stays in force",
            "errors": [str(e) for e in exc.errors],
        }
    }


def _apply(gw: Gateway, new: Any) -> tuple[int, dict[str, Any]]:
    gw.apply_config(new)
    log.info("config reloaded from %s at %s", gw.config_dir, time.strftime("%H:%M:%S"))
    return 200, {
        "applied": True,
        "config_version": gw.config_version,
        "virtual_models": sorted(new.virtual_models),
        "files": list(new.sources),
    }


def reload_config(gw: Gateway) -> tuple[int, dict[str, Any]]:
    """Atomic: validate the whole directory first; any error leaves the old config in force."""
    if gw.config_dir is None:
        return 409, {
            "error": {
                "code": "no_config_dir",
                "message": "this gateway was not started from a config directory",
            }
        }
    try:
        new = load_config_dir(gw.config_dir)
    except ConfigErrors as exc:
        return _refused(exc)
    return _apply(gw, new)
