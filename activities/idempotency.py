"""`Idempotency-Key` semantics (IETF draft-ietf-httpapi-idempotency-key-header).

A key is scoped to the API key that sent it. The first request with a key runs; its answer (a
JSON body, or the whole event stream) is kept. A later request with the same key and the same
body gets that answer replayed — no upstream call, no charge; with a different body it is
refused 422; while the first is still running, 409. A request that was refused, failed or cut
short keeps nothing, so the client may retry it.

Answers live in this runtime's memory. A key this runtime does not know (after a restart, or
first seen on another replica) is looked up in the ledger by its call id (`check_ledger`, one
primary-key read, only for requests that carry the header): a call answered with it is never
run again; a different body gets 422, the same body 409 `idempotency_key_already_used` (the
answer itself is not in the ledger). `IdempotencyRecords` is one
dict keyed by `record_key`, with an expiry per record, so its size and lifetime can be bounded
in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from ledger.errors import LedgerUnavailable
from ledger.store import LedgerStore
from policies.refusals import Refusal

RECORD_TTL_SECONDS = 24 * 3600.0
IDEM_ID_CHARS = 45  # "idem-" + 40 hex: the call id of a key's first attempt


def record_key(key_id: str, idempotency_key: str) -> str:
    """The one place an Idempotency-Key is hashed: scoped to the API key, fixed length."""
    return hashlib.sha256(f"{key_id}\0{idempotency_key}".encode()).hexdigest()


def idempotent_call_id(key_id: str, idempotency_key: str) -> str:
    """The call id (ledger key) of a request carrying an Idempotency-Key."""
    return "idem-" + record_key(key_id, idempotency_key)[: IDEM_ID_CHARS - 5]


def turn_update_id(key_id: str, session_id: str, idempotency_key: str, fingerprint: str) -> str:
    """The Temporal update id of a workflow-session turn sent with an Idempotency-Key: the same
    (API key, session, key, body) always names the same update, so the server answers a retry
    with the turn that ran instead of running it again. Fixed length (the key is hashed); the
    body's fingerprint is part of it, so another body under the same key never gets (or
    attaches to) the first body's turn, even where `TurnKeys` does not know the key."""
    return f"turn-{turn_key(key_id, session_id, idempotency_key)[:40]}-{fingerprint[:16]}"


def turn_key(key_id: str, session_id: str, idempotency_key: str) -> str:
    """`record_key` of a session turn's Idempotency-Key: scoped to the API key and the session
    (the session id length-prefixed, so no two (session, key) pairs share a string)."""
    return record_key(key_id, f"{len(session_id)}:{session_id}\0{idempotency_key}")


def retry_call_id(call_id: str) -> str:
    """The call id of a retry after an attempt that was refused or cut short: the key's id plus
    a suffix, so the failed attempt's row never hides (dedupes away) the row of the retry."""
    return f"{call_id}-{secrets.token_hex(4)}"


def body_fingerprint(raw: bytes, salt: bytes) -> str:
    """HMAC-SHA256 of the request body with the deployment's salt: kept on the call row, so a
    reused key is checked against it after a restart or on another replica (the salt keeps a
    short body from being recovered from its digest)."""
    return hmac.digest(salt, raw, hashlib.sha256).hex()


def key_reused() -> Refusal:
    return Refusal(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body; use a "
        "new key for a new request",
    )


def key_already_used() -> Refusal:
    return Refusal(
        409,
        "idempotency_key_already_used",
        "a request with this Idempotency-Key and this body was already answered, but its "
        "answer is not retained here (kept in one replica's memory, lost on restart); "
        "use a new key to run it again",
    )


@dataclass(slots=True)
class StoredResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunks: list[bytes] | None = None  # a stream, event by event as it was sent


@dataclass(slots=True)
class IdempotencyRecord:
    fingerprint: str
    expires: float
    response: StoredResponse | None = None  # None while the first request is in flight
    call_id: str = ""
    answered: bool = False  # answered, but the answer was too large to keep


@dataclass(slots=True)
class Slot:
    """What `begin` hands the request: a stored answer to replay, or the right to run."""

    key: str
    call_id: str
    replay: StoredResponse | None = None
    fingerprint: str = ""
    fresh: bool = False  # not known in this runtime's memory: check the ledger before running


@dataclass
class IdempotencyRecords:
    """Bounded: records expire after `ttl`, at most `max_records` are kept (the oldest go
    first), and an answer over `max_response_bytes` is not kept (a retry runs again)."""

    ttl: float = RECORD_TTL_SECONDS
    records: dict[str, IdempotencyRecord] = field(default_factory=dict)
    max_records: int = 10_000
    max_response_bytes: int = 1024 * 1024
    attempted: dict[str, None] = field(default_factory=dict)  # keys whose attempt was abandoned

    def configure(self, ttl: float, max_records: int, max_response_bytes: int) -> None:
        self.ttl, self.max_records = ttl, max_records
        self.max_response_bytes = max_response_bytes

    def _evict(self, now: float) -> None:
        """Records are in insertion order, which is expiry order (one ttl): pop from the front."""
        records = self.records
        while records:
            k, oldest = next(iter(records.items()))
            if oldest.expires > now and len(records) < self.max_records:
                return
            del records[k]

    def begin(self, key_id: str, idempotency_key: str, raw: bytes, now: float | None = None,
              salt: bytes = b"") -> Slot:
        """Claim the key for this request, or say why not (`Refusal` 409 / 422)."""
        now = time.time() if now is None else now
        k = record_key(key_id, idempotency_key)
        fp = body_fingerprint(raw, salt)
        rec = self.records.get(k)
        if rec is not None and rec.expires <= now:
            del self.records[k]
            rec = None
        if rec is None:
            self._evict(now)
            call_id = idempotent_call_id(key_id, idempotency_key)
            if k in self.attempted:  # a retry after an attempt that was refused or cut short
                call_id = retry_call_id(call_id)
            self.records[k] = IdempotencyRecord(fp, now + self.ttl, call_id=call_id)
            return Slot(k, call_id, fingerprint=fp, fresh=True)
        if rec.fingerprint != fp:
            raise key_reused()
        if rec.answered:
            raise key_already_used()
        if rec.response is None:
            raise Refusal(
                409,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being answered; wait for it and "
                "retry to get its stored response",
                retry_after=1,
            )
        return Slot(k, rec.call_id, replay=rec.response)

    def finish(self, slot: Slot, response: StoredResponse) -> None:
        rec = self.records.get(slot.key)
        if rec is None:
            return
        size = len(response.body) + sum(len(c) for c in response.chunks or ())
        if size > self.max_response_bytes:
            rec.answered = True  # too large to keep: a retry is refused, never run again
            return
        rec.response = response

    def abandon(self, slot: Slot) -> None:
        """The request did not complete: forget the key so a retry runs again."""
        rec = self.records.get(slot.key)
        if rec is not None and rec.response is None and not rec.answered:
            del self.records[slot.key]
            # Its row may be in the ledger under the key's call id: a retry takes another.
            self.attempted[slot.key] = None
            if len(self.attempted) > self.max_records:
                del self.attempted[next(iter(self.attempted))]


async def check_ledger(store: LedgerStore, slot: Slot) -> None:
    """For a key this runtime did not know: refuse it if the ledger holds a call answered with
    it (422 for another body, 409 for the same one). A call that was refused or cut short
    (status other than 200) may run again, as it may on the replica that saw it.
    With the ledger unreachable the key cannot be checked: 503, retry later."""
    try:
        rows = await store.calls_with_prefix(slot.call_id[:IDEM_ID_CHARS])
    except LedgerUnavailable:
        raise Refusal(
            503,
            "idempotency_unverifiable",
            "this Idempotency-Key is not known here and the ledger that would say whether it "
            "was used is unreachable; retry shortly",
            retry_after=1,
        ) from None
    rec = next((r for r in rows if r.status_code == 200), None)
    if rec is None:
        if rows and slot.call_id in {r.call_id for r in rows}:
            slot.call_id = retry_call_id(slot.call_id)  # an earlier attempt was cut short
        return
    if rec.request_fingerprint != slot.fingerprint:
        raise key_reused()
    raise key_already_used()


@dataclass(slots=True)
class TurnKey:
    fingerprint: str  # "" after a refusal the caller was given: the key is free again
    expires: float
    attempt: int = 0  # refusals given so far: a retry after one is a new update, so it runs


@dataclass
class TurnKeys:
    """Idempotency-Key on workflow-session turns. The turn's answer is kept by the Temporal
    server (an update id names one update per run; the gateway looks for it back through the
    session's runs), so this keeps only what the update id cannot say: the body each key was
    first used with, to refuse another body 422 as the LLM routes do, and how many refusals
    the key was answered with (a refused turn keeps nothing, as on the LLM routes: its retry
    is a new update). Bounded like `IdempotencyRecords` (records expire after `ttl`, at most
    `max_records`, oldest first). A key this runtime does not know (a restart, another
    replica) is not checked against another body: that body is a turn of its own (its update
    id differs), never the first body's answer; the same body gets the turn that ran."""

    ttl: float = RECORD_TTL_SECONDS
    max_records: int = 10_000
    records: dict[str, TurnKey] = field(default_factory=dict)

    def configure(self, ttl: float, max_records: int) -> None:
        self.ttl, self.max_records = ttl, max_records

    def update_id(
        self,
        key_id: str,
        session_id: str,
        idempotency_key: str,
        fingerprint: str,
        now: float | None = None,
    ) -> str:
        """The update id of this keyed turn, or `Refusal` 422 for another body than the key's."""
        now = time.time() if now is None else now
        k = turn_key(key_id, session_id, idempotency_key)
        rec = self.records.get(k)
        if rec is not None and rec.expires <= now:
            del self.records[k]
            rec = None
        if rec is None:
            while self.records:  # insertion order is expiry order (one ttl)
                oldest_key, oldest = next(iter(self.records.items()))
                if oldest.expires > now and len(self.records) < self.max_records:
                    break
                del self.records[oldest_key]
            rec = self.records[k] = TurnKey(fingerprint, now + self.ttl)
        elif not rec.fingerprint:
            rec.fingerprint = fingerprint
        elif rec.fingerprint != fingerprint:
            raise key_reused()
        uid = turn_update_id(key_id, session_id, idempotency_key, fingerprint)
        return f"{uid}-{rec.attempt}" if rec.attempt else uid

    def refused(self, key_id: str, session_id: str, idempotency_key: str) -> None:
        """The keyed turn was answered with a refusal: a retry with the key runs (any body)."""
        k = turn_key(key_id, session_id, idempotency_key)
        rec = self.records.get(k)
        if rec is not None:
            rec.fingerprint, rec.attempt = "", rec.attempt + 1
