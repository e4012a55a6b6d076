"""Outcome events: what a session shipped (merged PR, closed ticket, resolved incident, eval).

Three ways in, one record: `POST /gateway/outcomes` (a service or admin key), the GitHub
webhook (`pull_request` closed and merged) and configured ticketing webhooks (Zendesk, Jira …).
Each is parsed here into `Outcome`s (pure: bytes and headers in, values or `Refusal` out), and
`record_outcomes` writes them idempotently: `(event_id, session_id)` is the key, so a retried
POST or a redelivered webhook adds nothing.

Bounds (every breach a 4xx naming the limit): body `MAX_API_BODY` (API) / `MAX_WEBHOOK_BODY`
(webhooks) bytes, JSON nesting `MAX_DEPTH`, `MAX_SESSIONS_PER_EVENT` session ids of at most
`MAX_ID_CHARS` characters from `[A-Za-z0-9._:@-]`, url `MAX_URL_CHARS`, source 64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select

from ledger.models import OUTCOMES, OutcomeRecord
from ledger.store import LedgerStore
from policies.config.outcomes import KINDS, TicketWebhook, value_at
from policies.refusals import Refusal
from proxy.http import json_too_deep

MAX_API_BODY = 64 * 1024
MAX_WEBHOOK_BODY = 1024 * 1024
MAX_DEPTH = 32
MAX_SESSIONS_PER_EVENT = 50
MAX_ID_CHARS = 256
MAX_URL_CHARS = 2048
MAX_SOURCE_CHARS = 64
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:@\-]{1,256}$")
# `Governor-Session: <id>` trailer lines (git trailer shape; several allowed, ids may be
# comma-separated); `X-Governor-Session-ID:` is accepted as the header's spelling.
_TRAILER = re.compile(
    r"^[ \t>*-]*(?:X-)?Governor-Session(?:-ID)?[ \t]*:[ \t]*([^\r\n]{1,2000})$",
    re.IGNORECASE | re.MULTILINE,
)
# A branch named `.../session/<id>` or `.../governor-session-<id>`.
_BRANCH = re.compile(r"(?:^|/)(?:session/|governor-session[-/])([A-Za-z0-9._:@\-]{1,256})$")


@dataclass(frozen=True)
class Outcome:
    """One outcome event; `session_ids` may be empty (kept, joins nothing)."""

    event_id: str
    kind: str
    source: str
    url: str
    ts: float
    session_ids: tuple[str, ...]
    pass_rate: float | None = None


# -- the API body ------------------------------------------------------------------------------


def parse_json(raw: bytes, limit: int) -> dict[str, Any]:
    """A JSON object of at most `limit` bytes and `MAX_DEPTH` levels, or a 4xx Refusal."""
    if len(raw) > limit:
        raise Refusal(413, "request_too_large", f"body is larger than {limit} bytes")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refusal(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Refusal(400, "invalid_request", "body must be a JSON object")
    if json_too_deep(doc, MAX_DEPTH):
        raise Refusal(400, "invalid_request", f"body JSON nests deeper than {MAX_DEPTH} levels")
    return doc


def _str(doc: Mapping[str, Any], name: str, limit: int, required: bool = False) -> str:
    v = doc.get(name)
    if v is None:
        if required:
            raise Refusal(400, "invalid_request", f"`{name}` is required")
        return ""
    if not isinstance(v, str) or len(v) > limit or (required and not v):
        raise Refusal(400, "invalid_request", f"`{name}` must be a string of 1-{limit} characters")
    if "\x00" in v:  # PostgreSQL text cannot hold NUL: refuse here, not a 500 at the insert
        raise Refusal(400, "invalid_request", f"`{name}` must not contain NUL characters")
    return v


def parse_time(v: Any, name: str = "ts") -> float:
    """Epoch seconds, or an ISO 8601 time with a zone (`2026-11-29T10:00:00Z`)."""
    if isinstance(v, bool):
        raise Refusal(400, "invalid_request", f"`{name}` must be epoch seconds or ISO 8601")
    if isinstance(v, int | float):
        t = float(v)
    elif isinstance(v, str) and len(v) <= 64:
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise Refusal(400, "invalid_request",
                          f"`{name}` {v[:64]!r} is not an ISO 8601 time") from None
        if dt.tzinfo is None:
            raise Refusal(400, "invalid_request", f"`{name}` needs a time zone (e.g. Z)")
        t = dt.timestamp()
    else:
        raise Refusal(400, "invalid_request", f"`{name}` must be epoch seconds or ISO 8601")
    if not math.isfinite(t) or not 0 <= t < 32503680000:  # before year 3000
        raise Refusal(400, "invalid_request", f"`{name}` is out of range")
    return t


def session_ids_of(v: Any, where: str) -> tuple[str, ...]:
    """Session ids from a string (comma/space separated) or a list of strings, deduplicated in
    order; each must look like a session id."""
    items: list[str] = []
    if isinstance(v, str):
        items = [p for p in re.split(r"[,\s]+", v[: MAX_SESSIONS_PER_EVENT * 260]) if p]
    elif isinstance(v, list):
        if len(v) > MAX_SESSIONS_PER_EVENT:
            raise Refusal(400, "invalid_request",
                          f"{where}: at most {MAX_SESSIONS_PER_EVENT} session ids")
        for x in v:
            if isinstance(x, int | float) and not isinstance(x, bool):
                x = str(x)
            if not isinstance(x, str):
                raise Refusal(400, "invalid_request", f"{where} must list strings")
            items.append(x.strip())
    elif v is None:
        return ()
    elif isinstance(v, int | float) and not isinstance(v, bool):
        items = [str(v)]
    else:
        raise Refusal(400, "invalid_request", f"{where} must be a string or a list of strings")
    out: list[str] = []
    for s in items:
        if not _SESSION_ID.match(s):
            raise Refusal(400, "invalid_request",
                          f"{where}: {s[:64]!r} is not a session id (1-{MAX_ID_CHARS} of "
                          "A-Z a-z 0-9 . _ : @ -)")
        if s not in out:
            out.append(s)
    if len(out) > MAX_SESSIONS_PER_EVENT:
        raise Refusal(400, "invalid_request",
                      f"{where}: at most {MAX_SESSIONS_PER_EVENT} session ids")
    return tuple(out)


def parse_api_outcome(doc: Mapping[str, Any]) -> Outcome:
    """The body of `POST /gateway/outcomes`:
    `{"event_id", "kind", "source"?, "url"?, "ts"? (default now: set by the caller of this),
    "session_id"? | "session_ids"?, "pass_rate"? (eval: required, 0.0-1.0)}`."""
    allowed = {"event_id", "kind", "source", "url", "ts", "session_id", "session_ids",
               "pass_rate"}
    unknown = set(doc) - allowed
    if unknown:
        raise Refusal(400, "invalid_request",
                      f"unknown field(s) {', '.join(sorted(unknown))[:200]}; "
                      f"use {', '.join(sorted(allowed))}")
    event_id = _str(doc, "event_id", MAX_ID_CHARS, required=True)
    kind = _str(doc, "kind", 32, required=True)
    if kind not in KINDS:
        raise Refusal(400, "invalid_request", f"`kind` must be one of {', '.join(KINDS)}")
    sids = session_ids_of(doc.get("session_ids"), "session_ids") + session_ids_of(
        doc.get("session_id"), "session_id")
    sids = tuple(dict.fromkeys(sids))
    if len(sids) > MAX_SESSIONS_PER_EVENT:
        raise Refusal(400, "invalid_request", f"at most {MAX_SESSIONS_PER_EVENT} session ids")
    pass_rate = doc.get("pass_rate")
    if kind == "eval":
        if isinstance(pass_rate, bool) or not isinstance(pass_rate, int | float) or not (
            0.0 <= float(pass_rate) <= 1.0
        ):
            raise Refusal(400, "invalid_request",
                          "an eval outcome needs `pass_rate`, a number from 0.0 to 1.0")
        pass_rate = float(pass_rate)
    elif pass_rate is not None:
        raise Refusal(400, "invalid_request", "`pass_rate` belongs to eval outcomes only")
    ts = parse_time(doc["ts"]) if doc.get("ts") is not None else -1.0
    return Outcome(
        event_id=event_id,
        kind=kind,
        source=_str(doc, "source", MAX_SOURCE_CHARS) or "api",
        url=_str(doc, "url", MAX_URL_CHARS),
        ts=ts,
        session_ids=sids,
        pass_rate=pass_rate,
    )


# -- GitHub --------------------------------------------------------------------------------------


def verify_hmac_sha256(secret: bytes, body: bytes, given: str | None, header: str) -> None:
    """Hex HMAC-SHA256 of `body` (an optional `sha256=` prefix), compared in constant time."""
    if not given:
        raise Refusal(401, "signature_missing", f"the webhook needs a {header} signature header")
    value = given.strip()
    if value.lower().startswith("sha256="):
        value = value[7:]
    want = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want.encode(), value.lower().encode("ascii", "replace")):
        raise Refusal(401, "signature_invalid", f"{header} does not match the body")


def github_session_ids(body_text: str | None, branch: str | None) -> tuple[str, ...]:
    """Session ids a pull request names: `Governor-Session: <id>[, <id>…]` trailer lines in its
    body (several allowed) and a head branch named `…/session/<id>` or `governor-session-<id>`.
    Anything that is not a session id is skipped (a PR body is free text, not an error)."""
    found: list[str] = []
    for m in _TRAILER.finditer((body_text or "")[:65536]):
        for part in re.split(r"[,\s]+", m.group(1)):
            if part and _SESSION_ID.match(part) and part not in found:
                found.append(part)
    if branch:
        m = _BRANCH.search(branch[:512])
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return tuple(found[:MAX_SESSIONS_PER_EVENT])


def parse_github(event: str | None, doc: Mapping[str, Any]) -> Outcome | None:
    """A `pull_request` event that closed a PR by merging it -> an outcome; any other event or
    action -> None (acknowledged, ignored). The event id is the PR's identity, so a redelivery
    or a second `closed` of the same PR adds nothing."""
    if event != "pull_request" or doc.get("action") != "closed":
        return None
    pr = doc.get("pull_request")
    if not isinstance(pr, dict):
        raise Refusal(400, "invalid_request", "pull_request event without a `pull_request` object")
    if pr.get("merged") is not True:
        return None
    repo = doc.get("repository") if isinstance(doc.get("repository"), dict) else {}
    full = repo.get("full_name") if isinstance(repo.get("full_name"), str) else ""
    number = pr.get("number")
    if isinstance(number, bool) or not isinstance(number, int):
        raise Refusal(400, "invalid_request", "pull_request.number must be an integer")
    head = pr.get("head") if isinstance(pr.get("head"), dict) else {}
    branch = head.get("ref") if isinstance(head.get("ref"), str) else None
    body = pr.get("body") if isinstance(pr.get("body"), str) else None
    url = pr.get("html_url") if isinstance(pr.get("html_url"), str) else ""
    merged_at = pr.get("merged_at")
    return Outcome(
        event_id=f"github:{full[:200]}#{number}".replace("\x00", ""),
        kind="pr_merged",
        source="github",
        url=url[:MAX_URL_CHARS].replace("\x00", ""),
        ts=parse_time(merged_at, "pull_request.merged_at") if merged_at else -1.0,
        session_ids=github_session_ids(body, branch),
    )


# -- ticketing webhooks --------------------------------------------------------------------------

def verify_ticket(hook: TicketWebhook, secret: bytes, body: bytes,
                  headers: Mapping[str, str]) -> None:
    """The configured check of a ticketing webhook; `Refusal` 401 when it fails."""
    given = headers.get(hook.signature_header)
    if hook.auth == "hmac-sha256":
        verify_hmac_sha256(secret, body, given, hook.signature_header)
        return
    if hook.auth == "zendesk":
        sig = headers.get("x-zendesk-webhook-signature")
        stamp = headers.get("x-zendesk-webhook-signature-timestamp")
        if not sig or not stamp:
            raise Refusal(401, "signature_missing", "the webhook needs X-Zendesk-Webhook-Signature "
                          "and X-Zendesk-Webhook-Signature-Timestamp")
        want = base64.b64encode(hmac.new(secret, stamp.encode() + body, hashlib.sha256).digest())
        if not hmac.compare_digest(want, sig.strip().encode("ascii", "replace")):
            raise Refusal(401, "signature_invalid", "X-Zendesk-Webhook-Signature does not match")
        return
    if not given:
        raise Refusal(401, "token_missing",
                      f"the webhook needs its token in {hook.signature_header}")
    token = given.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not hmac.compare_digest(secret, token.encode("utf-8", "replace")):
        raise Refusal(401, "token_invalid", f"{hook.signature_header} is not this webhook's token")


def parse_ticket(hook: TicketWebhook, doc: Mapping[str, Any]) -> Outcome | None:
    """A ticketing payload -> an outcome, or None when `when_path` filters it out."""
    if hook.when_path is not None:
        v = value_at(doc, hook.when_path)
        if not isinstance(v, str | int | float) or str(v) not in hook.when_in:
            return None
    raw_id = value_at(doc, hook.event_id_path)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id):
        raise Refusal(400, "invalid_request",
                      f"no event id (a string or integer) at {hook.event_id_path}")
    if "\x00" in str(raw_id):
        raise Refusal(400, "invalid_request", f"the event id at {hook.event_id_path} contains NUL")
    event_id = f"{hook.name}:{str(raw_id)[:MAX_ID_CHARS]}"
    url = value_at(doc, hook.url_path) if hook.url_path else None
    ts_raw = value_at(doc, hook.ts_path) if hook.ts_path else None
    pass_rate = None
    if hook.kind == "eval":
        pr = value_at(doc, hook.pass_rate_path) if hook.pass_rate_path else None
        if isinstance(pr, bool) or not isinstance(pr, int | float) or not 0 <= pr <= 1:
            raise Refusal(400, "invalid_request",
                          f"an eval needs a pass rate from 0.0 to 1.0 at {hook.pass_rate_path}")
        pass_rate = float(pr)
    return Outcome(
        event_id=event_id,
        kind=hook.kind,
        source=hook.name,
        url=url[:MAX_URL_CHARS].replace("\x00", "") if isinstance(url, str) else "",
        ts=parse_time(ts_raw, hook.ts_path or "ts") if ts_raw is not None else -1.0,
        session_ids=session_ids_of(value_at(doc, hook.session_id_path), hook.session_id_path),
        pass_rate=pass_rate,
    )


# -- the ledger ----------------------------------------------------------------------------------


def outcome_rows(o: Outcome, actor: str, now: float) -> list[dict[str, Any]]:
    """Ledger rows of one outcome: one per session (one with session '' when it names none);
    an outcome without a time happened when it was received."""
    ts = o.ts if o.ts >= 0 else now
    return [
        {"event_id": o.event_id, "session_id": sid, "kind": o.kind, "source": o.source,
         "url": o.url, "ts": ts, "pass_rate": o.pass_rate, "actor": actor[:256],
         "received_ts": now}
        for sid in (o.session_ids or ("",))
    ]


async def record_outcomes(store: LedgerStore, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert outcome rows not already present; returns how many were new."""
    if not rows:
        return 0
    unique = {(r["event_id"], r["session_id"]): dict(r) for r in rows}
    batch = [unique[k] for k in sorted(unique)]
    stmt = (
        store._insert(OUTCOMES)
        .on_conflict_do_nothing(index_elements=["event_id", "session_id"])
        .returning(OUTCOMES.c.event_id, OUTCOMES.c.session_id)
    )
    async with store._chained() as conn:  # each new outcome is a link of the audit chain
        new = sorted((r[0], r[1]) for r in (await conn.execute(stmt, batch)).all())
        await store.chain_append(conn, [(OUTCOMES.name, unique[k], "put", "") for k in new])
        return len(new)


async def outcomes_of_event(store: LedgerStore, event_id: str) -> list[OutcomeRecord]:
    q = select(OUTCOMES).where(OUTCOMES.c.event_id == event_id).order_by(OUTCOMES.c.session_id)
    return [OutcomeRecord(**m) for m in await store._fetch(q)]


def dump(rows: Iterable[OutcomeRecord]) -> list[dict[str, Any]]:
    return [r.model_dump() for r in rows]
