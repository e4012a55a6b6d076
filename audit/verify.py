"""`governor audit verify`: walk every chain and compare it with the ledger's rows.

Names every record that was

- altered: the row's digest differs from its latest chain link, or a link's own hash does not
  recompute (the chain itself was edited);
- inserted: a row with no chain link (or present after its tombstone), or a link that does not
  follow its predecessor's hash;
- deleted: a link whose row is gone without a tombstone, a gap in a chain's seqs, or links cut
  off a chain's end (its checkpointed head is further on).

With `since` (epoch seconds) only links from then on are walked (the first one's predecessor is
trusted) and only rows they cover or whose own time is from then on are compared.

Memory: one entry per record key of the links walked (the latest link of each row). Hashing
runs in a worker thread, a batch at a time, so a proxy serving `GET /gateway/audit/verify`
keeps answering calls while it runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ledger.chain import PUT, TOMBSTONE, audited_tables, link_hash, shape
from ledger.models import CHAIN_HEADS, LEDGER_CHAIN
from ledger.store import LedgerStore

MAX_FINDINGS = 1000  # named in full; beyond this only counted
_BATCH = 2000  # rows or links hashed per hop to the worker thread
_TIME_COLUMNS = ("ts", "updated_ts", "opened_ts", "created_ts", "computed_ts")


@dataclass(frozen=True, slots=True)
class Finding:
    """One record that does not match its chain."""

    kind: str  # altered | inserted | deleted
    table: str  # ledger table, or "ledger_chain" for the chain's own links
    key: str  # the row's key values (JSON list), or the chain's seq range
    chain_id: str
    seq: int | None
    detail: str


@dataclass(slots=True)
class VerifyReport:
    """What `verify` walked and what it found (`ok` when nothing)."""

    chains: dict[str, int] = field(default_factory=dict)  # chain id -> links walked
    rows: int = 0  # ledger rows compared
    tombstones: int = 0  # rows deleted under a tombstone (accepted)
    findings: list[Finding] = field(default_factory=list)
    more_findings: int = 0  # found beyond MAX_FINDINGS

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, f: Finding) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(f)
        else:
            self.more_findings += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chains": self.chains,
            "links": sum(self.chains.values()),
            "rows": self.rows,
            "tombstones": self.tombstones,
            "findings": [
                {
                    "kind": f.kind,
                    "table": f.table,
                    "key": f.key,
                    "chain_id": f.chain_id,
                    "seq": f.seq,
                    "detail": f.detail,
                }
                for f in self.findings
            ],
            "more_findings": self.more_findings,
        }

    def lines(self) -> list[str]:
        return report_lines(self.to_dict())


def report_lines(doc: dict[str, Any]) -> list[str]:
    """The human report of a verify answer (`VerifyReport.to_dict`, also the API's JSON)."""
    chains, links, rows = len(doc.get("chains", {})), doc.get("links", 0), doc.get("rows", 0)
    if doc.get("ok"):
        return [
            f"ledger verified: {chains} chain(s), {links} links, {rows} rows, "
            f"{doc.get('tombstones', 0)} deleted under tombstones; nothing altered, inserted or "
            "deleted"
        ]
    found = doc.get("findings", [])
    out = [
        f"ledger NOT verified: {len(found) + doc.get('more_findings', 0)} finding(s) over "
        f"{chains} chain(s), {links} links, {rows} rows"
    ]
    for f in found:
        where = f" (chain {f['chain_id'][:12]} seq {f['seq']})" if f.get("seq") is not None else ""
        out.append(f"  {f['kind']:8} {f['table']} {f['key']}: {f['detail']}{where}")
    if doc.get("more_findings"):
        out.append(f"  … and {doc['more_findings']} more")
    return out


@dataclass(slots=True)
class _Latest:
    id: int
    op: str
    digest: str
    chain_id: str
    seq: int
    seen: bool = False


async def verify(store: LedgerStore, since: float | None = None) -> VerifyReport:
    """Walk every chain in `store` and compare the audited tables' rows with it."""
    report = VerifyReport()
    latest: dict[tuple[str, str], _Latest] = {}
    await _walk_chains(store, since, report, latest)
    await _check_heads(store, since, report)
    for table in audited_tables():
        await _check_rows(store, table, since, report, latest)
    for (tbl, key), lt in latest.items():
        if lt.seen:
            continue
        if lt.op == TOMBSTONE:
            report.tombstones += 1
        else:
            report.add(
                Finding(
                    "deleted",
                    tbl,
                    key,
                    lt.chain_id,
                    lt.seq,
                    "chain records this row but it is gone, with no tombstone",
                )
            )
    return report


async def _walk_chains(
    store: LedgerStore,
    since: float | None,
    report: VerifyReport,
    latest: dict[tuple[str, str], _Latest],
) -> None:
    c = LEDGER_CHAIN.c
    q = select(LEDGER_CHAIN)
    if since is not None:
        q = q.where(c.ts >= since)
    q = q.order_by(c.chain_id, c.seq)
    walk = _ChainWalk(report, since, latest)
    async with store._connect(write=False) as conn:
        result = await conn.stream(q.execution_options(yield_per=_BATCH))
        async for part in result.mappings().partitions(_BATCH):
            links = [dict(m) for m in part]
            hashes = await asyncio.to_thread(_link_hashes, links)
            for link, h in zip(links, hashes, strict=True):
                walk.step(link, h)


def _link_hashes(links: list[dict[str, Any]]) -> list[str]:
    return [link_hash(x["prev_hash"], x) for x in links]


@dataclass(slots=True)
class _ChainWalk:
    """Checks links one by one in (chain, seq) order against their predecessor."""

    report: VerifyReport
    since: float | None
    latest: dict[tuple[str, str], _Latest]
    prev: dict[str, Any] | None = None

    def _add(self, kind: str, key: str, cid: str, seq: int, what: str) -> None:
        self.report.add(Finding(kind, "ledger_chain", key, cid, seq, what))

    def step(self, link: dict[str, Any], recomputed: str) -> None:
        cid, seq, prev = link["chain_id"], int(link["seq"]), self.prev
        self.report.chains[cid] = self.report.chains.get(cid, 0) + 1
        if prev is None or prev["chain_id"] != cid:
            if self.since is None and seq != 1:
                self._add("deleted", f"seq 1..{seq - 1}", cid, seq,
                          "links missing at the start of the chain")  # fmt: skip
        elif seq != prev["seq"] + 1:
            self._add("deleted", f"seq {prev['seq'] + 1}..{seq - 1}", cid, seq,
                      "links missing from the chain (a gap)")  # fmt: skip
        elif link["prev_hash"] != prev["hash"]:
            self._add("inserted", f"seq {seq}", cid, seq,
                      "link does not follow its predecessor's hash")  # fmt: skip
        if recomputed != link["hash"]:
            self._add("altered", f"seq {seq}", cid, seq,
                      "link's hash does not recompute: the link was edited")  # fmt: skip
        k = (link["tbl"], link["record_key"])
        got = self.latest.get(k)
        if got is None or got.id < link["id"]:
            self.latest[k] = _Latest(int(link["id"]), link["op"], link["digest"], cid, seq)
        self.prev = link


async def _check_heads(store: LedgerStore, since: float | None, report: VerifyReport) -> None:
    """A checkpointed head further on than its chain's last link: links cut off the end."""
    c = LEDGER_CHAIN.c
    async with store._connect(write=False) as conn:
        heads = (await conn.execute(select(CHAIN_HEADS))).mappings().all()
        for h in heads:
            cid = h["chain_id"]
            q = select(c.seq, c.hash).where(c.chain_id == cid).order_by(c.seq.desc()).limit(1)
            last = (await conn.execute(q)).first()
            last_seq = int(last[0]) if last else 0
            if since is not None and h["ts"] < since and last is None:
                continue
            if last_seq < int(h["seq"]):
                report.add(
                    Finding(
                        "deleted",
                        "ledger_chain",
                        f"seq {last_seq + 1}..{h['seq']}",
                        cid,
                        int(h["seq"]),
                        "links cut off the chain's end (its checkpoint is further on)",
                    )
                )
            elif last_seq == int(h["seq"]) and last is not None and last[1] != h["hash"]:
                report.add(
                    Finding(
                        "altered",
                        "ledger_chain",
                        f"seq {last_seq}",
                        cid,
                        last_seq,
                        "the chain's last link differs from its checkpoint",
                    )
                )


async def _check_rows(
    store: LedgerStore,
    table: Any,
    since: float | None,
    report: VerifyReport,
    latest: dict[tuple[str, str], _Latest],
) -> None:
    sh = shape(table)
    tcol = next((n for n in _TIME_COLUMNS if n in table.c), None)
    async with store._connect(write=False) as conn:
        result = await conn.stream(select(table).execution_options(yield_per=_BATCH))
        async for part in result.mappings().partitions(_BATCH):
            rows = [dict(m) for m in part]
            keyed = await asyncio.to_thread(
                lambda b: [(sh.record_key(r), sh.digest(r)) for r in b], rows
            )
            for row, (key, digest) in zip(rows, keyed, strict=True):
                _check_row(report, table.name, row, key, digest, tcol, since, latest)


def _check_row(
    report: VerifyReport,
    tname: str,
    row: dict[str, Any],
    key: str,
    digest: str,
    tcol: str | None,
    since: float | None,
    latest: dict[tuple[str, str], _Latest],
) -> None:
    lt = latest.get((tname, key))
    if lt is None:
        t = row.get(tcol) if tcol else None
        if since is not None and (t is None or float(t) < since):
            return  # outside the window walked
        report.rows += 1
        report.add(Finding("inserted", tname, key, "", None, "row has no chain record"))
        return
    report.rows += 1
    lt.seen = True
    if lt.op == TOMBSTONE:
        what = "row is present after its tombstone"
        report.add(Finding("inserted", tname, key, lt.chain_id, lt.seq, what))
    elif lt.op == PUT and digest != lt.digest:
        what = "row differs from its latest chain record"
        report.add(Finding("altered", tname, key, lt.chain_id, lt.seq, what))
