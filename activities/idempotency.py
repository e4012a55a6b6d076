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
import time
from dataclasses import dataclass, field

from ledger.errors import LedgerUnavailable
from ledger.store import LedgerStore
from policies.refusals import Refusal

RECORD_TTL_SECONDS = 24 * 3600.0


def record_key(key_id: str, idempotency_key: str) -> str:
    """The one place an Idempotency-Key is hashed: scoped to the API key, fixed length."""
    return hashlib.sha256(f"{key_id}\0{idempotency_key}".encode()).hexdigest()


def idempotent_call_id(key_id: str, idempotency_key: str) -> str:
    """The call id (ledger key) of a request carrying an Idempotency-Key."""
    return "idem-" + record_key(key_id, idempotency_key)[:40]


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
        call_id = idempotent_call_id(key_id, idempotency_key)
        rec = self.records.get(k)
        if rec is not None and rec.expires <= now:
            del self.records[k]
            rec = None
        if rec is None:
            self._evict(now)
            self.records[k] = IdempotencyRecord(fp, now + self.ttl)
            return Slot(k, call_id, fingerprint=fp, fresh=True)
        if rec.fingerprint != fp:
            raise key_reused()
        if rec.response is None:
            raise Refusal(
                409,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being answered; wait for it and "
                "retry to get its stored response",
                retry_after=1,
            )
        return Slot(k, call_id, replay=rec.response)

    def finish(self, slot: Slot, response: StoredResponse) -> None:
        rec = self.records.get(slot.key)
        if rec is None:
            return
        size = len(response.body) + sum(len(c) for c in response.chunks or ())
        if size > self.max_response_bytes:
            del self.records[slot.key]  # too large to keep: a retry runs again (the ledger
            # still counts the call once, by its call id)
            return
        rec.response = response

    def abandon(self, slot: Slot) -> None:
        """The request did not complete: forget the key so a retry runs again."""
        rec = self.records.get(slot.key)
        if rec is not None and rec.response is None:
            del self.records[slot.key]


async def check_ledger(store: LedgerStore, slot: Slot) -> None:
    """For a key this runtime did not know: refuse it if the ledger holds a call answered with
    it (422 for another body, 409 for the same one). A call that was refused or cut short
    (status other than 200) may run again, as it may on the replica that saw it.
    With the ledger unreachable the key cannot be checked: 503, retry later."""
    try:
        rec = await store.get_call(slot.call_id)
    except LedgerUnavailable:
        raise Refusal(
            503,
            "idempotency_unverifiable",
            "this Idempotency-Key is not known here and the ledger that would say whether it "
            "was used is unreachable; retry shortly",
            retry_after=1,
        ) from None
    if rec is None or rec.status_code != 200:
        return
    if rec.request_fingerprint != slot.fingerprint:
        raise key_reused()
    raise key_already_used()
