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

Memory is bounded whatever the ledger's size: the chains are walked link by link (only the
previous link kept), rows are read in keyset pages of `_BATCH` and each page's latest links
are looked up by key, and links whose row is gone are found in keyset pages of record keys.
The lookup by key is a temporary table verify builds in one pass over the chain (each record
key's latest link and, for a link with members, the member's position: `ledger.chain`; indexed,
on disk, dropped when verify ends), not an index on the chain:
an index keyed by random record keys cost every call's write ~60 µs of the proxy's core and
grew costlier with the ledger. Hashing runs in a worker thread, a batch at a time, so a proxy
serving `GET /gateway/audit/verify` keeps answering calls while it runs.

Record keys (`ledger.chain`): a row is looked up under its clear key and, given the
deployment's salt, its keyed key; the later link of the two is its state. A keyed key cannot be
turned back into the row's key, so the keyed keys of the rows present are collected while rows
are compared, and a keyed key not among them is a row gone (named by that keyed key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import column, func, select, text, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy import table as sql_table

from ledger.chain import (
    KEYED,
    MEMBER_SLOTS,
    TOMBSTONE,
    ChainKey,
    audited_tables,
    link_hash,
    parse_members,
    shape,
)
from ledger.models import CALLS, CHAIN_HEADS, LEDGER_CHAIN, SESSIONS, STATE_TRANSITIONS
from ledger.store import LedgerStore
from ledger.transitions import TRACKED

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


# A row's latest link: (digest as bytes, or None for a tombstone, chain id, seq, `k`: its order
# among every row's links, `_build_latest`).
_Latest = tuple[bytes | None, str, int, int]


def _digest_bytes(digest: str) -> bytes:
    try:
        return bytes.fromhex(digest)
    except ValueError:  # an edited link: it can match no row
        return digest.encode()


async def verify(
    store: LedgerStore,
    since: float | None = None,
    checkpoints: Sequence[Mapping[str, Any]] = (),
    salt: bytes | None = None,
) -> VerifyReport:
    """Walk every chain in `store` and compare the audited tables' rows with it; and with each
    of `checkpoints` (`ledger.chain.read_checkpoint`: heads kept outside the database), the
    link it names. `salt`: the deployment's, under which links name rows by keyed record keys
    (`ledger.chain.ChainKey`; default: the key `store` writes with, if any); ValueError when
    the chain has such links and there is no salt."""
    report = VerifyReport()
    key = ChainKey(salt) if salt else store.chain_key
    await _check_checkpoints(store, checkpoints, report)
    walk = await _walk_chains(store, since, report)
    await _check_heads(store, since, report)
    if key is None and walk.keyed:
        raise ValueError("the ledger's chain names rows by keyed record keys: verify needs the "
                         "deployment's salt (GOVERNOR_FINGERPRINT_SALT, or --data-dir holding "
                         "fingerprint.salt)")  # fmt: skip
    audited = {t.name: t for t in audited_tables()}
    async with store._connect(write=False) as conn:
        await _build_latest(conn, store.dialect, since, walk.malformed)
        try:
            q = text(f"SELECT DISTINCT tbl FROM {_LATEST}")
            tbls = sorted((await conn.execute(q)).scalars().all())
            if key is not None:
                await conn.execute(text(f"DROP TABLE IF EXISTS {_SEEN}"))
                await conn.execute(text(f"CREATE TEMPORARY TABLE {_SEEN} "
                                        "(tbl TEXT, record_key TEXT)"))  # fmt: skip
            for table in audited.values():
                await _check_rows(conn, table, since, report, key)
            if key is not None:
                await conn.execute(text(f"CREATE INDEX {_SEEN}_key ON {_SEEN} (tbl, record_key)"))
            for tbl in tbls:
                await _check_gone(conn, tbl, audited.get(tbl), report, key)
        finally:
            # A failed statement may have aborted the transaction (PostgreSQL): the temporary
            # tables then go with its rollback, and the first error is the one to report.
            with contextlib.suppress(sa_exc.DBAPIError):
                await conn.execute(text(f"DROP TABLE IF EXISTS {_LATEST}"))
                await conn.execute(text(f"DROP TABLE IF EXISTS {_SEEN}"))
    await _check_states(store, since, report)
    await _check_session_totals(store, since, report, walk.call_tombstones)
    return report


async def _check_states(store: LedgerStore, since: float | None, report: VerifyReport) -> None:
    """Each tracked attribute of a summary row (a session's status, an alert's, an override's
    `cleared_by`) must be the `new` value of the row's latest appended transition, or the
    value a row starts with when it has none: an edit of the row alone contradicts its own
    history. Keyset pages of rows, each page's latest transitions looked up by key. Rows
    deleted under a tombstone keep no transitions that matter; those are not compared."""
    for (tname, attr), initial in TRACKED.items():
        table = next(x for x in audited_tables() if x.name == tname)
        sh = shape(table)
        tcol = next((n for n in _TIME_COLUMNS if n in table.c), None)
        pk = [c.name for c in table.primary_key.columns]
        after: tuple[Any, ...] | None = None
        async with store._connect(write=False) as conn:
            while True:
                page = [dict(m) for m in (await conn.execute(_keyset(table, after))).mappings()]
                if not page:
                    break
                after = tuple(page[-1][n] for n in pk)
                if since is not None and tcol is not None:
                    page = [r for r in page if r[tcol] is not None and r[tcol] >= since]
                keys = [sh.record_key(r) for r in page]
                latest = await _latest_transitions(conn, tname, attr, keys)
                for row, key in zip(page, keys, strict=True):
                    want, have = latest.get(key, initial), row[attr]
                    if have != want:
                        what = (f"{attr} is {have!r} but its latest recorded transition says "
                                f"{want!r}")  # fmt: skip
                        report.add(Finding("altered", tname, key, "", None, what))


async def _latest_transitions(
    conn: Any, tbl: str, attr: str, keys: Sequence[str]
) -> dict[str, str | None]:
    """record key -> the `new` value of its latest (highest id) transition of `attr`."""
    if not keys:
        return {}
    t = STATE_TRANSITIONS.c
    last = (
        select(func.max(t.id).label("m"))
        .where(t.tbl == tbl, t.attribute == attr, t.record_key.in_(keys))
        .group_by(t.record_key)
        .subquery()
    )
    q = select(t.record_key, t.new).select_from(STATE_TRANSITIONS.join(last, t.id == last.c.m))
    return {k: v for k, v in (await conn.execute(q)).all()}


_TOTALS_TOL = 1e-9  # relative, on cost_usd: sums in another order round differently


async def _check_session_totals(
    store: LedgerStore, since: float | None, report: VerifyReport, call_tombstones: int
) -> None:
    """A session's totals (calls, tokens, cost_usd) are derived state: they must be the sums
    over its call rows. A shortfall of at most as many calls as were deleted under tombstones
    is accepted (retention or erasure of single calls)."""
    c, s = CALLS.c, SESSIONS.c
    tokens = c.input_tokens + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens
    agg = (
        select(
            c.session_id.label("sid"),
            func.count().label("n"),
            func.sum(tokens).label("tok"),
            func.sum(c.cost_usd).label("cost"),
        )
        .where(c.session_id.is_not(None))
        .group_by(c.session_id)
        .subquery()
    )
    q = select(s.session_id, s.calls, s.tokens, s.cost_usd, agg.c.n, agg.c.tok, agg.c.cost)
    q = q.select_from(SESSIONS.outerjoin(agg, agg.c.sid == s.session_id))
    if since is not None:
        q = q.where(s.created_ts >= since)
    async with store._connect(write=False) as conn:
        result = await conn.stream(q.execution_options(yield_per=_BATCH))
        async for part in result.partitions(_BATCH):
            for sid, calls, tok, cost, n, sum_tok, sum_cost in part:
                n, sum_tok, sum_cost = int(n or 0), int(sum_tok or 0), float(sum_cost or 0.0)
                same = (
                    int(calls) == n
                    and int(tok) == sum_tok
                    and abs(float(cost) - sum_cost) <= _TOTALS_TOL * max(1.0, abs(sum_cost))
                )
                if same or 0 < int(calls) - n <= call_tombstones:
                    continue
                what = (f"totals {int(calls)} calls, {int(tok)} tokens, ${float(cost):.6f} but "
                        f"its call rows sum to {n}, {sum_tok}, ${sum_cost:.6f}")  # fmt: skip
                key = shape(SESSIONS).record_key({"session_id": sid})
                report.add(Finding("altered", SESSIONS.name, key, "", None, what))


async def _walk_chains(store: LedgerStore, since: float | None, report: VerifyReport) -> _ChainWalk:
    c = LEDGER_CHAIN.c
    q = select(LEDGER_CHAIN)
    if since is not None:
        q = q.where(c.ts >= since)
    q = q.order_by(c.chain_id, c.seq)
    walk = _ChainWalk(report, since)
    async with store._connect(write=False) as conn:
        result = await conn.stream(q.execution_options(yield_per=_BATCH))
        async for part in result.mappings().partitions(_BATCH):
            links = [dict(m) for m in part]
            checked = await asyncio.to_thread(_check_links, links)
            for link, (h, well_formed, call_tombstones, keyed) in zip(links, checked,
                                                                      strict=True):
                walk.step(link, h, well_formed)
                walk.call_tombstones += call_tombstones
                walk.keyed = walk.keyed or keyed
    return walk


def _check_links(links: list[dict[str, Any]]) -> list[tuple[str, bool, int, bool]]:
    """Each link's recomputed hash, whether its members (if any) are well formed, how many
    call rows it deleted under a tombstone, and whether it names a row by a keyed key."""
    out = []
    for x in links:
        h = link_hash(x["prev_hash"], x)
        members = x.get("members")
        if members is None:
            out.append((h, True, int(x["tbl"] == CALLS.name and x["op"] == TOMBSTONE),
                        str(x["record_key"]).startswith(KEYED)))
            continue
        got = parse_members(members)
        if got is None:
            out.append((h, False, 0, False))
            continue
        n = sum(1 for m in got if m[0] == CALLS.name and m[2] == TOMBSTONE)
        out.append((h, True, n, any(m[1].startswith(KEYED) for m in got)))
    return out


@dataclass(slots=True)
class _ChainWalk:
    """Checks links one by one in (chain, seq) order against their predecessor."""

    report: VerifyReport
    since: float | None
    prev: dict[str, Any] | None = None
    call_tombstones: int = 0  # call rows deleted under a tombstone, in the links walked
    keyed: bool = False  # a link walked names a row by a keyed record key
    malformed: list[int] = field(default_factory=list)  # ids of links with unreadable members

    def _add(self, kind: str, key: str, cid: str, seq: int, what: str) -> None:
        self.report.add(Finding(kind, "ledger_chain", key, cid, seq, what))

    def step(self, link: dict[str, Any], recomputed: str, well_formed: bool = True) -> None:
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
        if not well_formed:
            # Its rows are then compared with no link (named as inserted, or their earlier
            # links as stale); the link itself is named even when its hash was recomputed.
            self.malformed.append(int(link["id"]))
            if recomputed == link["hash"]:
                what = "link's members are not a list of [table, key, op, digest, note]"
                self._add("altered", f"seq {seq}", cid, seq, what)
        self.prev = {"chain_id": cid, "seq": seq, "hash": link["hash"]}


# Verify's own lookup: each (table, record key)'s latest link, from one pass over the chain
# (`_build_latest`), in a temporary table of verify's connection. `k` orders a key's links:
# `id * MEMBER_SLOTS` for a per-row link, `+ position + 1` for a member of a link with members
# (a later member of the same link is a later state of its row).
_LATEST = "governor_verify_latest"
# The lookup's build reads the whole chain in one statement: ~9-13 s on PostgreSQL for 1.5M
# calls (1.7M record keys; its index ~5 s more; a loaded 2-core VM), linear in the chain, so the
# connection's 30 s command timeout would stop it at a few million calls. It runs under this
# bound instead (the proxy stops a whole verify after 30 min).
_BUILD_TIMEOUT_S = 1800.0
_LATEST_T = sql_table(_LATEST, column("tbl"), column("record_key"), column("k"))
# The keyed record keys (`ledger.chain.ChainKey`) of the rows present, as `_check_rows` finds
# them in `_LATEST`: a keyed key cannot be turned back into the row's key to look the row up,
# so `_check_gone` names a keyed key gone when it is not here.
_SEEN = "governor_verify_seen"
_SEEN_T = sql_table(_SEEN, column("tbl"), column("record_key"))
_IS_KEYED = _LATEST_T.c.record_key.like(KEYED + "%")

# Every link's covered rows as (tbl, record_key, k): per-row links as they are, links with
# members expanded by the database's own JSON functions. Malformed members (an edited link,
# already named by the walk) are left out: `:bad` is the JSON list of their link ids.
_EXPANDED = {
    "sqlite": (
        "SELECT tbl, record_key, id * {slots} AS k FROM ledger_chain "
        "WHERE members IS NULL{since} "
        "UNION ALL "
        "SELECT CAST(json_extract(j.value, '$[0]') AS TEXT), "
        "CAST(json_extract(j.value, '$[1]') AS TEXT), c.id * {slots} + j.key + 1 "
        "FROM ledger_chain AS c, json_each(CASE WHEN json_valid(c.members) THEN c.members "
        "ELSE '[]' END) AS j "
        "WHERE c.members IS NOT NULL{since_c} AND j.type = 'array' AND j.key < {max_pos} "
        "AND c.id NOT IN (SELECT value FROM json_each(:bad))"
    ),
    "postgresql": (
        "SELECT tbl, record_key, CAST(id AS BIGINT) * {slots} AS k FROM ledger_chain "
        "WHERE members IS NULL{since} "
        "UNION ALL "
        "SELECT e.v ->> 0, e.v ->> 1, CAST(c.id AS BIGINT) * {slots} + e.n "
        "FROM ledger_chain AS c CROSS JOIN LATERAL json_array_elements(CAST(CASE WHEN c.id IN "
        "(SELECT CAST(b AS BIGINT) FROM json_array_elements_text(CAST(:bad AS json)) AS b) "
        "THEN '[]' ELSE c.members END AS json)) WITH ORDINALITY AS e(v, n) "
        "WHERE c.members IS NOT NULL{since_c} AND e.n <= {max_pos}"
    ),
}


async def _build_latest(
    conn: Any, dialect: str, since: float | None, malformed: Sequence[int] = ()
) -> None:
    """(Re)build the temporary table of each record key's latest link (from `since` on)."""
    await conn.execute(text(f"DROP TABLE IF EXISTS {_LATEST}"))
    expanded = _EXPANDED[dialect].format(
        slots=MEMBER_SLOTS,
        max_pos=MEMBER_SLOTS - 1,
        since=" AND ts >= :since" if since is not None else "",
        since_c=" AND c.ts >= :since" if since is not None else "",
    )
    build = (f"CREATE TEMPORARY TABLE {_LATEST} AS SELECT tbl, record_key, MAX(k) AS k "
             f"FROM ({expanded}) AS x WHERE tbl IS NOT NULL AND record_key IS NOT NULL "
             "GROUP BY tbl, record_key")  # fmt: skip
    params: dict[str, Any] = {"bad": orjson.dumps(list(malformed)).decode()}
    if since is not None:
        params["since"] = since
    index = f"CREATE INDEX {_LATEST}_key ON {_LATEST} (tbl, record_key)"
    if dialect == "postgresql":
        await _execute_long(conn, build, params)
        await _execute_long(conn, index, {})
    else:  # SQLite: no command timeout
        await conn.execute(text(build), params)
        await conn.execute(text(index))


async def _execute_long(conn: Any, sql: str, params: dict[str, Any]) -> None:
    """One PostgreSQL statement (`:name` parameters) in `conn`'s transaction under
    `_BUILD_TIMEOUT_S` instead of the connection's command timeout (`ledger.store`, 30 s):
    SQLAlchemy has no per-statement timeout, so through the asyncpg connection itself."""
    names = sorted(params, key=len, reverse=True)  # ":since" is never cut by a shorter name
    for i, name in enumerate(names, 1):
        sql = sql.replace(f":{name}", f"${i}")
    raw = await conn.get_raw_connection()
    await raw.driver_connection.execute(sql, *(params[n] for n in names),
                                        timeout=_BUILD_TIMEOUT_S)


async def _latest_links(conn: Any, tbl: str, keys: Sequence[str]) -> dict[str, _Latest]:
    """The latest link (highest `k`: `_build_latest`) of each of `keys` of table `tbl`: the
    link's op and digest, or its member's. Each link read (and its members parsed) once."""
    if not keys:
        return {}
    lt = _LATEST_T.c
    q = select(lt.record_key, lt.k).where(lt.tbl == tbl, lt.record_key.in_(keys))
    latest = [(key, int(k)) for key, k in (await conn.execute(q)).all()]
    ids = sorted({k // MEMBER_SLOTS for _, k in latest})
    c = LEDGER_CHAIN.c
    q = select(c.id, c.chain_id, c.seq, c.op, c.digest, c.members).where(c.id.in_(ids))
    links = {int(r[0]): r for r in (await conn.execute(q)).all()}
    members = await asyncio.to_thread(
        lambda: {i: parse_members(r[5]) for i, r in links.items() if r[5] is not None}
    )
    out: dict[str, _Latest] = {}
    for key, k in latest:
        link_id, pos = divmod(k, MEMBER_SLOTS)
        link = links.get(link_id)
        if link is None:
            continue  # gone since the lookup was built
        if pos == 0:
            op, digest = link[3], link[4]
        else:
            got = members.get(link_id)
            if got is None or pos > len(got):
                continue  # edited since the lookup was built
            op, digest = got[pos - 1][2], got[pos - 1][3]
        out[key] = (None if op == TOMBSTONE else _digest_bytes(digest), link[1], int(link[2]), k)
    return out


def _later(a: _Latest | None, b: _Latest | None) -> _Latest | None:
    """Of a row's latest links under its clear and its keyed key, the later one."""
    if a is None or (b is not None and b[3] > a[3]):
        return b
    return a


async def _check_checkpoints(
    store: LedgerStore, checkpoints: Sequence[Mapping[str, Any]], report: VerifyReport
) -> None:
    """A head kept outside the database must still be a link of its chain: a chain rewritten
    or cut together with its `chain_heads` row disagrees with it."""
    c = LEDGER_CHAIN.c
    async with store._connect(write=False) as conn:
        for cp in checkpoints:
            cid, seq = str(cp["chain_id"]), int(cp["seq"])
            q = select(c.hash).where(c.chain_id == cid, c.seq == seq)
            got = (await conn.execute(q)).first()
            if got is None:
                what = "the link an outside checkpoint names is gone: links cut off the chain"
                report.add(Finding("deleted", "ledger_chain", f"seq ..{seq}", cid, seq, what))
            elif got[0] != cp["hash"]:
                what = "the chain differs from its outside checkpoint: it was rewritten"
                report.add(Finding("altered", "ledger_chain", f"seq {seq}", cid, seq, what))


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


def _keyset(table: Any, after: tuple[Any, ...] | None) -> Any:
    """One page of `table` in primary-key order after the key `after`."""
    pk = list(table.primary_key.columns)
    q = select(table)
    if after is not None:
        q = q.where(pk[0] > after[0] if len(pk) == 1 else tuple_(*pk) > tuple_(*after))
    return q.order_by(*pk).limit(_BATCH)


async def _check_rows(conn: Any, table: Any, since: float | None, report: VerifyReport,
                      key: ChainKey | None = None) -> None:  # fmt: skip
    """Every row of `table` against its latest link, a keyset page at a time: the later of the
    links under its clear key and (with `key`) under its keyed key. The keyed keys found go
    into `_SEEN`."""
    sh = shape(table)
    name = table.name
    tcol = next((n for n in _TIME_COLUMNS if n in table.c), None)
    pk = [c.name for c in table.primary_key.columns]
    after: tuple[Any, ...] | None = None

    def keys_of(b: list[dict[str, Any]]) -> list[tuple[str, str | None, bytes]]:
        out = []
        for r in b:
            clear = sh.record_key(r)
            out.append((clear, key.key(name, clear) if key else None, bytes.fromhex(sh.digest(r))))
        return out

    while True:
        rows = [dict(m) for m in (await conn.execute(_keyset(table, after))).mappings()]
        if not rows:
            return
        after = tuple(rows[-1][n] for n in pk)
        keyed = await asyncio.to_thread(keys_of, rows)
        wanted = [c for c, _, _ in keyed] + [k for _, k, _ in keyed if k is not None]
        latest = await _latest_links(conn, name, wanted)
        seen = []
        for row, (clear, kk, digest) in zip(rows, keyed, strict=True):
            lt = latest.get(clear)
            if kk is not None and kk in latest:
                seen.append({"tbl": name, "record_key": kk})
                lt = _later(lt, latest[kk])
            _check_row(report, name, row, clear, digest, tcol, since, lt)
        if seen:
            await conn.execute(_SEEN_T.insert(), seen)


def _check_row(
    report: VerifyReport,
    tname: str,
    row: dict[str, Any],
    key: str,
    digest: bytes,
    tcol: str | None,
    since: float | None,
    lt: _Latest | None,
) -> None:
    if lt is None:
        t = row.get(tcol) if tcol else None
        if since is not None and (t is None or float(t) < since):
            return  # outside the window walked
        report.rows += 1
        report.add(Finding("inserted", tname, key, "", None, "row has no chain record"))
        return
    report.rows += 1
    want, cid, seq, _ = lt
    if want is None:
        what = "row is present after its tombstone"
        report.add(Finding("inserted", tname, key, cid, seq, what))
    elif digest != want:
        what = "row differs from its latest chain record"
        report.add(Finding("altered", tname, key, cid, seq, what))


async def _check_gone(
    conn: Any, tbl: str, table: Any | None, report: VerifyReport, key: ChainKey | None = None
) -> None:
    """Record keys of `tbl` in the chain (from the walked window on: `_build_latest`) whose row
    is gone: deleted under a tombstone (counted) or not (named). Keyset pages of record keys;
    `table` None: a table this ledger no longer has (every key is gone). Clear keys first (a
    row is looked up by its key values); a gone row linked under both forms is decided by its
    later link, once. Then (with `key`) keyed keys no present row had (`_SEEN`), named by the
    keyed key: it cannot be turned back into the row's."""
    lt = _LATEST_T.c
    after = ""
    while True:
        q = (select(lt.record_key).where(lt.tbl == tbl, lt.record_key > after, ~_IS_KEYED)
             .order_by(lt.record_key).limit(_BATCH))  # fmt: skip
        keys = list((await conn.execute(q)).scalars().all())
        if not keys:
            break
        after = keys[-1]
        present = set() if table is None else await _present(conn, table, keys)
        gone = [k for k in keys if k not in present]
        if not gone:
            continue
        twins = {c: key.key(tbl, c) for c in gone} if key is not None else {}
        latest = await _latest_links(conn, tbl, gone + list(twins.values()))
        superseded = []  # keyed twins whose row this clear key's later link decides
        for clear in gone:
            lt_clear, twin = latest.get(clear), latest.get(twins.get(clear, ""))
            if lt_clear is None:
                continue
            if twin is not None:
                if twin[3] > lt_clear[3]:
                    continue  # decided by its keyed key, below
                superseded.append(twins[clear])
            _gone(report, tbl, clear, lt_clear)
        if superseded:
            await conn.execute(_LATEST_T.delete().where(lt.tbl == tbl,
                                                        lt.record_key.in_(superseded)))
    if key is None:
        return
    s = _SEEN_T.c
    unseen = ~select(s.record_key).where(s.tbl == lt.tbl, s.record_key == lt.record_key).exists()
    after = ""
    while True:
        q = (select(lt.record_key).where(lt.tbl == tbl, lt.record_key > after, _IS_KEYED, unseen)
             .order_by(lt.record_key).limit(_BATCH))  # fmt: skip
        keys = list((await conn.execute(q)).scalars().all())
        if not keys:
            return
        after = keys[-1]
        for k, got in (await _latest_links(conn, tbl, keys)).items():
            _gone(report, tbl, k, got)


def _gone(report: VerifyReport, tbl: str, key: str, latest: _Latest) -> None:
    digest, cid, seq, _ = latest
    if digest is None:
        report.tombstones += 1
    else:
        what = "chain records this row but it is gone, with no tombstone"
        report.add(Finding("deleted", tbl, key, cid, seq, what))


async def _present(conn: Any, table: Any, keys: Sequence[str]) -> set[str]:
    """Which of the record `keys` (canonical JSON lists of key values) have a row in `table`."""
    sh = shape(table)
    cols = [table.c[k] for k in sh.key]
    values = []
    for k in keys:
        try:
            v = orjson.loads(k)
        except orjson.JSONDecodeError:
            continue  # an edited link's key: no row has it
        if isinstance(v, list) and len(v) == len(cols):
            values.append(tuple(v))
    if not values:
        return set()
    if len(cols) == 1:
        where = cols[0].in_([v[0] for v in values])
    else:
        where = tuple_(*cols).in_(values)
    rows = (await conn.execute(select(*cols).where(where))).mappings().all()
    return {sh.record_key(r) for r in rows}


async def _verify_url(url: str, schema: str | None, since: float | None,
                      salt: bytes | None = None) -> dict[str, Any]:  # fmt: skip
    store = await LedgerStore.open(url, schema=schema)
    try:
        return (await verify(store, since=since, salt=salt)).to_dict()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m audit.verify [--since EPOCH] [--schema NAME]`: verify the ledger named by
    `GOVERNOR_LEDGER_URL` (keyed record keys under `GOVERNOR_FINGERPRINT_SALT`) and print the
    report as one JSON object. A proxy runs this as a child
    process for `GET /gateway/audit/verify`, so a long verify never holds its event loop.
    Exit 0 with a report (whatever it found); 2 when the ledger cannot be read."""
    from activities.guardrails import SALT_ENV
    from ledger.errors import LedgerError

    ap = argparse.ArgumentParser(prog="python -m audit.verify")
    ap.add_argument("--since", type=float, default=None)
    ap.add_argument("--schema", default=None)
    args = ap.parse_args(argv)
    url = os.environ.get("GOVERNOR_LEDGER_URL")
    if not url:
        print("GOVERNOR_LEDGER_URL is not set", file=sys.stderr)
        return 2
    try:
        salt = os.environb.get(SALT_ENV.encode()) or None
        doc = asyncio.run(_verify_url(url, args.schema, args.since, salt))
    except (LedgerError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    sys.stdout.buffer.write(orjson.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
