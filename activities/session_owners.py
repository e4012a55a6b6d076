"""Sessions belong to the key that opened them.

The first call (or `POST /gateway/sessions`) naming a session id claims it for its API key in the
ledger; every later call naming it must come from that key, or it is refused 403
`session_not_owned` (on-call and admin keys act on any session and claim nothing). Owners are
remembered in memory (bounded, least recently used evicted), warmed from the ledger at start, and
looked up in the ledger on a miss: one round trip per session per replica, never per call.

Race across replicas: the ledger's first recorded claim wins (insert-if-absent, then read back),
so two replicas claiming the same new id at once agree on one owner; the loser's first call is
refused. Only while the ledger is unreachable does a replica bind a new session provisionally
in memory; when the ledger returns the claim is written, and if another replica recorded a
different owner first, that owner wins here too from then on. The window is the outage.
Provisional claims are bounded by the owner cache's cap (`OWNER_CACHE`): past it a new session
is refused 503 `ledger_unavailable` until the ledger is back (a claim is never made and then
dropped, which would hand the session to whichever key asked next); a provisional claim is
never evicted from memory before it is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from activities.session_types import SessionIdentity, grant_digest
from ledger.errors import LedgerUnavailable
from ledger.session_store import claim_session, recent_owners, session_owner
from ledger.store import LedgerStore
from policies.identity import Identity
from policies.refusals import Refusal

log = logging.getLogger("governor.owners")

OWNER_CACHE = 100_000  # sessions whose owner a runtime keeps in memory
WARM_SECONDS = 86_400.0  # owners claimed this recently are loaded at start


def not_owned(session_id: str) -> Refusal:
    return Refusal(
        403,
        "session_not_owned",
        f"session {session_id!r} belongs to another API key; use your own session id "
        "(on-call and admin keys may act on any session)",
    )


class SessionOwners:
    def __init__(self, store: LedgerStore, cap: int = OWNER_CACHE) -> None:
        self._store = store
        self._cap = cap
        self._known: OrderedDict[str, str] = OrderedDict()  # session id -> owner key id
        self._grants: OrderedDict[str, str] = OrderedDict()  # session id -> grant digest
        self._provisional: dict[str, Identity] = {}  # claims made while the ledger was down
        self._lock = asyncio.Lock()
        self.version = 0  # grows when an owner is learnt (the last-known-state saver reads it)

    def owner(self, session_id: str) -> str | None:
        """The owner this runtime knows (None: not known here)."""
        owner = self._known.get(session_id)
        if owner is None:
            p = self._provisional.get(session_id)
            owner = None if p is None else p.key_id
        return owner

    def remember(self, session_id: str, key_id: str) -> None:
        known = self._known
        if known.get(session_id) != key_id:
            self.version += 1
        known[session_id] = key_id
        known.move_to_end(session_id)
        if len(known) > self._cap:
            known.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """Drop an idle session's cached owner and grant (the ledger keeps both; a claim made
        while the ledger was down is kept until it is written)."""
        self._grants.pop(session_id, None)
        if session_id not in self._provisional:
            self._known.pop(session_id, None)

    def snapshot(self) -> dict[str, str]:
        return dict(self._known)

    async def warm(self, now: float | None = None) -> None:
        """Load recently claimed owners, so the first calls after a restart need no lookup."""
        now = time.time() if now is None else now
        for rec in reversed(await recent_owners(self._store, now - WARM_SECONDS, self._cap)):
            self.remember(rec.session_id, rec.key_id)

    async def check(self, ident: Identity, grant: str = "") -> None:
        """Refuse `ident` on a session another key owns; claim an unowned one for it."""
        sid = ident.session_id
        if sid is None or ident.role in ("admin", "oncall"):
            return
        owner = self.owner(sid)
        if owner is None:
            owner = await self._claim(ident, grant)
        if owner != ident.key_id:
            raise not_owned(sid)

    async def _claim(self, ident: Identity, grant: str) -> str:
        sid = ident.session_id
        assert sid is not None
        try:
            rec = await claim_session(
                self._store, sid, ident.key_id, ident.user, ident.team, time.time(), grant
            )
        except LedgerUnavailable:
            if len(self._provisional) >= self._cap:
                raise Refusal(
                    503,
                    "ledger_unavailable",
                    f"session {sid!r} is new and the ledger, which records its owner, is "
                    f"unreachable; {self._cap} sessions are already bound in memory until it "
                    "returns; retry shortly",
                    retry_after=1,
                ) from None
            log.warning("ledger unreachable: session owner bound provisionally in memory")
            self._provisional[sid] = ident
            self.remember(sid, ident.key_id)
            return ident.key_id
        self.remember(sid, rec.key_id)
        return rec.key_id

    async def require_owner(self, key_id: str, role: str, session_id: str) -> None:
        """For the per-session routes: the session must exist and be this key's (on-call and
        admin: any existing session). Never claims."""
        owner = self._known.get(session_id)
        if owner is None:
            rec = await session_owner(self._store, session_id)
            if rec is None:
                raise Refusal(404, "session_not_found", f"no session {session_id!r} is known")
            owner = rec.key_id
            self.remember(session_id, owner)
        if owner != key_id and role not in ("admin", "oncall"):
            raise not_owned(session_id)

    async def claim_grant(self, ident: Identity, grant: str) -> str:
        """Claim (or re-open) a workflow session for `ident` with `grant`; returns the grant on
        record (the first one stands). Refuses a session another key owns."""
        sid = ident.session_id
        assert sid is not None
        rec = await claim_session(
            self._store, sid, ident.key_id, ident.user, ident.team, time.time(), grant
        )
        self.remember(sid, rec.key_id)
        if rec.key_id != ident.key_id:
            raise not_owned(sid)
        if rec.grant_digest:
            self._remember_grant(sid, rec.grant_digest)
        return rec.grant_digest

    async def granted(self, identity: SessionIdentity, policy: dict[str, object] | None) -> bool:
        """Does this identity and policy match what the gateway granted the session?"""
        sid = identity.session_id
        known = self._grants.get(sid)
        if known is None:
            rec = await session_owner(self._store, sid)
            if rec is None or not rec.grant_digest:
                return False
            known = rec.grant_digest
            self._remember_grant(sid, known)
        return known == grant_digest(identity, policy)

    def _remember_grant(self, session_id: str, digest: str) -> None:
        self._grants[session_id] = digest
        self._grants.move_to_end(session_id)
        if len(self._grants) > self._cap:
            self._grants.popitem(last=False)

    async def flush_provisional(self) -> None:
        """Write claims made during an outage; the ledger's first owner wins if they differ."""
        if not self._provisional:
            return
        async with self._lock:
            for sid, ident in list(self._provisional.items()):
                rec = await claim_session(
                    self._store, sid, ident.key_id, ident.user, ident.team, time.time()
                )
                self.remember(sid, rec.key_id)
                del self._provisional[sid]
