"""Admin API of the audit (auditor, on-call or admin keys; erasure: admin only).

  GET /gateway/audit/sessions/{id}/decisions   what `governor audit replay` re-decides: the
      session's call rows (no text), the config versions that decided them, and the workflow's
      history while the Temporal server still has it (null otherwise); a session with more
      than `archive.max_export_calls` calls is refused 413 session_too_large
  GET /gateway/audit/verify[?since=EPOCH]      walk the ledger's tamper-evident chains: the
      `audit.verify` report, computed in a child process (one at a time per replica: a second
      gets 409; stopped after VERIFY_TIMEOUT)
  GET  /gateway/audit/sessions/{id}[?offset=N&limit=M]
                                             the session's timeline (`governor audit show`):
                                             {"session", "source", "entries", "total_entries",
                                             "offset", "more", "tombstones"}; one page of at
                                             most `limit` entries (default 1000, at most 5000)
  GET  /gateway/audit/sessions/{id}/export   its bundle (`governor audit export`), JSON lines
                                             (audit/bundle.py), streamed in chunks

Show and export are built in a worker thread (audit/offloop.py), two at a time per replica
(more: 429 audit_busy); a session with more than `archive.max_export_calls` calls, or a bundle
past `archive.max_export_bytes`, is refused 413 export_too_large.
  POST /gateway/audit/sessions/{id}/erase    {"reason"}: delete it from the archive and the
                                             ledger, leaving tombstones (admin)

Timeline and bundle rows come from the ledger while it has them, else from the archive; the
workflow history from Temporal while the server keeps it, else from the archive
(`audit.session_source`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson

from activities.gateway import Gateway
from audit.offloop import (
    DEFAULT_SHOW_LIMIT,
    MAX_SHOW_LIMIT,
    ExportTooLarge,
    Source,
    build_export,
    build_show,
    calls_within,
    read_off_loop,
)
from audit.versions import load_versions
from policies.config.models import ApiKey
from policies.refusals import Refusal
from proxy.errors import BUSY_RETRY_AFTER_S
from proxy.http import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    respond,
    respond_json,
)
from proxy.llm_routes import bearer, parse_json_body

AUDIT_ROLES = ("auditor", "oncall", "admin")
MAX_ID = 256
VERIFY_TIMEOUT = 1800.0  # seconds a verify may run before it is stopped
_verifying: set[int] = set()  # id() of the gateways running a verify
log = logging.getLogger("governor.audit")
MAX_REASON = 1000
_MAX_BODY = 64 * 1024
T = TypeVar("T")


def audit_key(gw: Gateway, scope: Scope) -> ApiKey:
    key = gw.authenticate(bearer(header_map(scope)))
    if key.role not in AUDIT_ROLES:
        raise Refusal(403, "auditor_required",
                      f"key {key.id!r} has role {key.role!r}; audit routes need an auditor, "
                      "on-call or admin key")
    return key


async def handle_audit_routes(gw: Gateway, parts: list[str], scope: Scope, receive: Receive,
                              send: Send) -> None:
    audit_key(gw, scope)
    method = scope["method"]
    if len(parts) == 5 and parts[2] == "sessions" and parts[4] == "decisions":
        if method != "GET":
            raise Refusal(405, "method_not_allowed", "use GET for /gateway/audit/sessions/ID/...")
        sid = parts[3]
        if not sid or len(sid) > MAX_ID:
            raise Refusal(400, "invalid_request", f"session id must be 1-{MAX_ID} characters")
        doc = await decisions_record(gw, sid)  # up to max_export_calls rows: JSON off the loop
        await respond(send, 200, await asyncio.to_thread(orjson.dumps, doc))
        return
    if parts[2:] == ["verify"] and method == "GET":
        from proxy.admin import route_query

        await _verify(gw, _since(route_query(scope).get("since")), send)
        return
    if len(parts) in (4, 5) and parts[2] == "sessions":
        sid = parts[3]
        if not sid or len(sid) > MAX_ID:
            raise Refusal(400, "invalid_request", f"session id must be 1-{MAX_ID} characters")
        tail = parts[4:]
        if not tail and method == "GET":
            from proxy.admin import route_query

            q = route_query(scope)
            offset = _count(q.get("offset"), "offset", 0, 10**9)
            limit = _count(q.get("limit"), "limit", DEFAULT_SHOW_LIMIT, MAX_SHOW_LIMIT)
            async with _building(gw):
                doc = await _off_loop(gw, sid, lambda src, h: build_show(
                    src, sid, h, offset, limit, gw.config.settings.archive.max_export_calls))
            await respond_json(send, 200, doc)
            return
        if tail == ["export"] and method == "GET":
            await _export(gw, sid, send)
            return
        if tail == ["erase"] and method == "POST":
            from proxy.roles import ADMINS, require_role

            key = require_role(gw, scope, ADMINS, "erasing a session", "admin_required")
            await _erase(gw, sid, key, scope, receive, send)
            return
    raise Refusal(404, "not_found", f"no audit route {method} {scope['path']}")


async def decisions_record(gw: Gateway, session_id: str) -> dict[str, Any]:
    from activities.guardrails import gateway_salt
    from audit.replay import (
        histories_from_archive,
        histories_from_temporal,
        record_from_ledger,
        text_checks_doc,
    )
    from workflows.session import session_workflow_id

    await gw.writer.flush()
    most = gw.config.settings.archive.max_export_calls  # the bound of show and export too
    try:  # one indexed COUNT, before any row is read
        await calls_within(gw.store, session_id, most)
    except ExportTooLarge as exc:
        raise Refusal(413, "session_too_large", str(exc)) from None
    salt = gateway_salt(gw)  # stays in the proxy: the stored-text check is made here

    async def read(store: Any) -> Any:
        return await record_from_ledger(store, session_id, salt)

    # reading, decoding and checking up to `most` rows takes seconds of CPU: off the loop
    rec = await read_off_loop(Source(gw.store.secret_url(), gw.store.schema, None), read)
    if not rec.calls:
        raise Refusal(404, "session_not_found", f"no calls of session {session_id!r} in the ledger")
    histories: list[tuple[str, dict[str, Any]]] = []
    if any(r["path"] == "workflow" for r in rec.calls):
        sw = gw.session_workflows
        failed: str | None = None  # why Temporal, there, did not answer
        if sw is not None:
            from temporalio.service import RPCError

            try:
                histories = await histories_from_temporal(sw.client,
                                                          session_workflow_id(session_id))
            except RPCError as exc:  # NOT_FOUND is [] already: this is the server failing
                failed = exc.status.name
                log.warning("workflow history of %s unavailable: %s", session_id, failed)
        archive = getattr(gw, "archive", None)
        if not histories and archive is not None:  # the server forgot it: the archive has it
            from audit.archive import ArchiveError
            from audit.sealing import SealingError

            try:
                histories = await histories_from_archive(archive, session_id)
            except (ArchiveError, SealingError) as exc:  # as show and export answer it
                raise Refusal(503, "archive_unreadable", f"the session archive: {exc}") from None
        if failed is not None and not histories:  # a replay without them would be incomplete
            raise Refusal(503, "temporal_unavailable",
                          f"the Temporal server did not give the session's workflow history "
                          f"({failed}) and the archive does not have it; retry soon",
                          retry_after=BUSY_RETRY_AFTER_S)
    found = await load_versions(gw.store, list(rec.versions))
    return {
        "session_id": session_id,
        "calls": rec.calls[:most],  # calls written since the COUNT stay out
        "config_versions": list(found.values()),
        "histories": [{"workflow_id": w, "history": h} for w, h in histories],
        # A session can have more guardrail events than calls: at most `most` are sent, and
        # the answer says so (the stored-text check below covers all of them).
        "guardrail_events": rec.guardrail_events[:most],
        "guardrail_events_total": len(rec.guardrail_events),
        "guardrail_events_truncated": len(rec.guardrail_events) > most,
        "guardrail_text_checks": text_checks_doc(rec.text_checks) if rec.text_checks else None,
    }


def _since(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise Refusal(400, "invalid_request", "`since` must be epoch seconds (a number >= 0)")
    return v


async def _verify(gw: Gateway, since: float | None, send: Send) -> None:
    if id(gw) in _verifying:
        raise Refusal(409, "verify_running", "a verify is already running; retry when it ends")
    _verifying.add(id(gw))
    try:
        doc = await _verify_in_child(gw, since)
    finally:
        _verifying.discard(id(gw))
    await respond_json(send, 200, doc)


async def _verify_in_child(gw: Gateway, since: float | None) -> dict[str, Any]:
    """Run `audit.verify` in a child process on this runtime's ledger: it reads and hashes the
    whole ledger, which must not hold this proxy's event loop. The database URL goes in the
    child's environment."""
    await gw.writer.flush()  # what this replica recorded so far is in the ledger
    args = [sys.executable, "-m", "audit.verify"]
    if since is not None:
        args += ["--since", repr(since)]
    if gw.store.schema is not None:
        args += ["--schema", gw.store.schema]
    from activities.guardrails import SALT_ENV, gateway_salt

    # the salt the chain's record keys are keyed under (`ledger.chain.ChainKey`)
    env = {**os.environ, "GOVERNOR_LEDGER_URL": gw.store.secret_url(),
           SALT_ENV: gateway_salt(gw).decode("utf-8", "surrogateescape")}
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), VERIFY_TIMEOUT)
    except (TimeoutError, asyncio.CancelledError) as exc:
        proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise Refusal(504, "verify_timeout", f"verify ran over {VERIFY_TIMEOUT:.0f} s and "
                          "was stopped; verify a shorter window with `since`") from None
        raise
    if proc.returncode != 0:
        log.warning("audit verify failed (exit %s): %s", proc.returncode,
                    err.decode(errors="replace")[:500])  # fmt: skip
        raise Refusal(503, "ledger_unavailable",
                      "the ledger could not be read to verify it; retry soon",
                      retry_after=BUSY_RETRY_AFTER_S)  # fmt: skip
    doc: dict[str, Any] = orjson.loads(out)
    return doc


MAX_BUILDS = 2  # shows/exports built at once per replica; more: 429
EXPORT_CHUNK = 256 * 1024  # bytes per body message of a streamed export
_building_now: dict[int, int] = {}  # id(gateway) -> builds running


def _count(raw: str | None, name: str, default: int, most: int) -> int:
    if raw is None:
        return default
    # ASCII digits only: `str.isdigit()` is true of `²` (which `int()` refuses) and of other
    # scripts' digits; the length check keeps `int()` off a 256-digit value.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(most)) or int(raw) > most:
        raise Refusal(400, "invalid_request", f"`{name}` must be an integer 0-{most}")
    return int(raw)


@contextlib.asynccontextmanager
async def _building(gw: Gateway) -> AsyncIterator[None]:
    n = _building_now.get(id(gw), 0)
    if n >= MAX_BUILDS:
        raise Refusal(429, "audit_busy", f"{MAX_BUILDS} audit shows/exports are being built on "
                      "this replica; retry when one ends", retry_after=BUSY_RETRY_AFTER_S)
    _building_now[id(gw)] = n + 1
    try:
        yield
    finally:
        _building_now[id(gw)] -= 1


async def _off_loop(gw: Gateway, sid: str,
                    build: Callable[[Source, list[dict[str, Any]]], Awaitable[T]]) -> T:
    """Check the session's size, fetch its live histories here (the Temporal client is this
    loop's), then `build` in a worker thread (audit/offloop.py). 404, 413, 503 as Refusals."""
    from audit.archive import ArchiveError
    from audit.sealing import SealingError
    from audit.session_source import session_histories

    settings = gw.config.settings.archive
    wf = getattr(gw, "session_workflows", None)
    try:  # the calls counted before the histories are fetched and any row is read
        await calls_within(gw.store, sid, settings.max_export_calls)
        histories = await session_histories(
            wf.client, sid, settings.max_export_bytes) if wf is not None else []
    except ExportTooLarge as exc:
        raise Refusal(413, "export_too_large", str(exc)) from None
    src = Source(gw.store.secret_url(), gw.store.schema, getattr(gw, "archive", None))
    try:
        out = await build(src, histories)
    except (ArchiveError, SealingError) as exc:
        raise Refusal(503, "archive_unreadable", f"the session archive: {exc}") from None
    except ExportTooLarge as exc:
        raise Refusal(413, "export_too_large", str(exc)) from None
    if out is None:
        raise Refusal(404, "session_not_found",
                      f"no session {sid!r} in the ledger, the archive or Temporal")
    return out


async def _export(gw: Gateway, sid: str, send: Send) -> None:
    """The bundle, built off the loop into a temporary file, then streamed in chunks."""
    settings = gw.config.settings.archive
    async with _building(gw):
        built = await _off_loop(gw, sid, lambda src, h: build_export(
            src, sid, h, settings.max_export_bytes, settings.max_export_calls))
    assert built is not None  # _off_loop answered 404 for None
    head, body = built
    try:
        size = len(head) + await asyncio.to_thread(lambda: os.fstat(body.fileno()).st_size)
        name = f'attachment; filename="audit-{sid[:64]}.jsonl"'.encode("ascii", "replace")
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/x-ndjson"),
            (b"content-length", str(size).encode()),
            (b"content-disposition", name),
        ]})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        while True:
            chunk = await asyncio.to_thread(body.read, EXPORT_CHUNK)
            await send({"type": "http.response.body", "body": chunk, "more_body": bool(chunk)})
            if not chunk:
                break
    finally:
        body.close()


async def _erase(gw: Gateway, sid: str, key: ApiKey, scope: Scope, receive: Receive,
                 send: Send) -> None:
    from activities.archive_session import erase_session

    try:
        raw = await read_body(scope, receive, _MAX_BODY)
    except BodyTooLarge:
        raise Refusal(413, "request_too_large", "erase body is too large") from None
    doc = parse_json_body(raw) if raw.strip() else {}
    reason = doc.get("reason") if isinstance(doc, dict) else None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise Refusal(400, "invalid_request",
                      f"`reason` must say why, in 1-{MAX_REASON} characters")
    from audit.archive import ArchiveError
    from audit.sealing import SealingError

    try:
        out = await erase_session(gw.store, getattr(gw, "archive", None), sid,
                                  reason=reason.strip(), actor=key.user, cause="erasure",
                                  now=time.time())
    except (ArchiveError, SealingError) as exc:  # as show and export answer it (_off_loop)
        raise Refusal(503, "archive_unreadable", f"the session archive: {exc}") from None
    await respond_json(send, 200, {"session_id": sid, "erased": True, "actor": key.user, **out})
