"""The ledger's salt check: replicas sharing a ledger must share the deployment's salt.

Guardrail fingerprints, prompt/completion hashes and the chain's keyed record keys
(`ledger.chain.ChainKey`) are all keyed under the deployment's salt (`GOVERNOR_FINGERPRINT_SALT`,
else `<data dir>/fingerprint.salt`). A replica with another salt writes hashes no other replica
matches and links `governor audit verify` cannot find. So the first store opened with a salt
records a check value in `ledger_meta` (HMAC-SHA256(salt, `LABEL`) in hex: the salt cannot be
read back from it), and a store opened later with another salt is refused with one line naming
the setting to fix. Insert-if-absent, then read back, in one transaction: replicas starting
together on an empty ledger all read the one value that won.

Changing the salt of a ledger is an operator's step: `governor audit reset-salt-check` deletes
the value (`reset`), and the next replica to start records its salt. Links keyed under the old
salt then need it to verify (README, audit chain).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select

from ledger.errors import LedgerError
from ledger.models import LEDGER_META

NAME = "salt_check"
LABEL = b"governor ledger salt check v1"
SALT_ENV = "GOVERNOR_FINGERPRINT_SALT"


class SaltMismatch(LedgerError):
    """This store's salt is not the one the ledger was first opened with: start refused."""


def check_value(salt: bytes) -> str:
    """HMAC-SHA256(salt, `LABEL`) in hex: equal for equal salts, and not the salt."""
    return hmac.new(salt, LABEL, hashlib.sha256).hexdigest()


def mismatch(source: str | None) -> SaltMismatch:
    """The one line a refused start prints: what is wrong and which setting fixes it."""
    came = f" (this one from {source})" if source else ""
    if source and source != SALT_ENV:
        where = f"{SALT_ENV}, or {source},"
    else:
        where = f"{SALT_ENV} (or the data dir's fingerprint.salt)"
    return SaltMismatch(
        f"the ledger was first opened with another fingerprint salt{came}: replicas, workers "
        f"and the CLI sharing a ledger must share it, or audit verify fails and hashes stop "
        f"matching; set {where} to the salt the others use (to change the deployment's salt "
        f"on purpose: governor audit reset-salt-check, see README)"
    )


async def check(
    conn: Any, insert: Callable[..., Any], salt: bytes, source: str | None, *, record: bool
) -> None:
    """Compare `salt` with the ledger's check value in transaction `conn` (recording it first
    when absent and `record`); SaltMismatch when they differ. `insert`: the dialect's insert
    (`on_conflict_do_nothing`)."""
    want = check_value(salt)
    if record:
        q = insert(LEDGER_META).values(name=NAME, value=want, ts=time.time())
        await conn.execute(q.on_conflict_do_nothing(index_elements=["name"]))
    c = LEDGER_META.c
    got = (await conn.execute(select(c.value).where(c.name == NAME))).scalar()
    if got is not None and not hmac.compare_digest(str(got), want):
        raise mismatch(source)


async def reset(conn: Any) -> bool:
    """Delete the ledger's check value (the next replica to start records its salt): whether
    there was one."""
    got = await conn.execute(delete(LEDGER_META).where(LEDGER_META.c.name == NAME))
    return bool(got.rowcount)
