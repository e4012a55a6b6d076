"""What an erasure (or retention) keeps of a deleted session, and how.

A deletion removes the session's content: its calls (prompt/completion hashes and sizes, any
stored text), guardrail findings (fingerprints), stream starts, kill or close, owner, outcomes
and totals (ledger rows under `audit.chain` tombstones; archive blobs under the index's
tombstone). Governance keeps that alerts fired and who acted on them: alert runs and their
runbook steps stay, but every mention of the session in them — the `session_id` label and any
label equal to it, the alert key (`…,session_id=<id>`), the summary, a step's key and result
text — is replaced by the deletion's reference (`erased-<16 hex>`, also in the archive's
tombstone), so the alert still says which deleted session it was about without naming it.

Each changed row is re-linked in the tamper-evident chain (a `put` link with the row's new
digest, noted with actor, reason and reference), so `governor audit verify` passes.
What stays: the chain's own links keep digests of the rows' former content — never the
content itself — and their record keys: keyed hashes under the deployment's salt
(`ledger.chain.ChainKey`), so no link written by a salted store names the session; links written
before keyed keys (or by a store given no salt) keep the clear key, a session's own rows its id.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson

from ledger.chain import PUT, tombstone_note
from ledger.models import ALERTS, RUNBOOK_STEPS
from ledger.session_record import alerts_naming
from ledger.store import LedgerStore


def new_reference() -> str:
    """A deletion's reference: random, so it says nothing of the session it replaces."""
    return "erased-" + uuid.uuid4().hex[:16]


def _key_form(session_id: str) -> str:
    """How the id appears inside an alert key (policies.alerts.dedup_key's character set)."""
    return re.sub(r"[^A-Za-z0-9_=,.:@\-]", "_", session_id)


def _scrub(text: str, session_id: str, ref: str) -> str:
    out = text.replace(session_id, ref)
    form = _key_form(session_id)
    return out.replace(form, ref) if form != session_id else out


def _labels(raw: str, session_id: str, ref: str) -> str:
    try:
        labels = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return _scrub(raw, session_id, ref)
    if not isinstance(labels, dict):
        return _scrub(raw, session_id, ref)
    out = {k: (_scrub(v, session_id, ref) if isinstance(v, str) else v)
           for k, v in labels.items()}
    return orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode()


async def redact_mentions(
    store: LedgerStore, session_id: str, ref: str, *, reason: str, actor: str
) -> dict[str, int]:
    """Replace `session_id` by `ref` in the alerts whose labels name it and in their runbook
    steps, one transaction, each changed row re-linked in the chain. Returns
    `{"alerts": n, "runbook_steps": m}`. ValueError for an empty session id, actor or reason."""
    if not session_id:
        raise ValueError("redact_mentions needs a session id")
    note = tombstone_note(actor, f"{reason} [{ref}]")
    alerts = await alerts_naming(store, session_id)
    if not alerts:
        return {"alerts": 0, "runbook_steps": 0}
    a, r = ALERTS.c, RUNBOOK_STEPS.c
    run_ids = [row["run_id"] for row in alerts]
    items: list[tuple[str, dict[str, Any], str, str]] = []
    steps = 0
    async with store._chained() as conn:
        for row in alerts:
            await conn.execute(ALERTS.update().where(a.run_id == row["run_id"]).values(
                labels=_labels(row["labels"], session_id, ref),
                alert_key=_scrub(row["alert_key"], session_id, ref),
                summary=_scrub(row["summary"] or "", session_id, ref),
            ))
        for i in range(0, len(run_ids), 500):
            batch = run_ids[i : i + 500]
            for st in (await conn.execute(RUNBOOK_STEPS.select().where(
                    r.run_id.in_(batch)))).mappings().all():  # fmt: skip
                await conn.execute(RUNBOOK_STEPS.update().where(r.id == st["id"]).values(
                    alert_key=_scrub(st["alert_key"], session_id, ref),
                    result=_scrub(st["result"] or "", session_id, ref),
                ))
                steps += 1
            rows = (await conn.execute(RUNBOOK_STEPS.select().where(
                r.run_id.in_(batch)))).mappings().all()  # fmt: skip
            items += [(RUNBOOK_STEPS.name, dict(m), PUT, note) for m in rows]
            alert_rows = (await conn.execute(ALERTS.select().where(a.run_id.in_(batch)))
                          ).mappings().all()
            items += [(ALERTS.name, dict(m), PUT, note) for m in alert_rows]
        await store.chain_append(conn, items)
    return {"alerts": len(alerts), "runbook_steps": steps}
