"""Tamper evidence: a hash chain per replica over every audited ledger write.

Each transaction that inserts, changes or deletes rows of audited tables appends, in the same
transaction, ONE `ledger_chain` link (`ledger.models.ChainRecord`) covering all of them: its
`members` list each row's table, key, op, digest and note, in the order they were written:

    digest  = SHA-256(canonical(row))                the row as it now is (op "put")
    members = canonical([[tbl, record_key, op, digest, note], ...])
    hash    = SHA-256(prev_hash "\\n" canonical([chain_id, seq, ts, "*", "", "*", "", ""])
                      "\\n" members)

Record keys come in two forms. A link written by a runtime that holds the deployment's salt
(the HMAC salt of prompt hashes and guardrail fingerprints, `activities.guardrails`; every
gateway does) names each row by a keyed hash of its key, never the key itself:

    record_key = "k1:" + hex(HMAC-SHA256(K, tbl "\n" canonical(key values)))[:32]
    K          = HMAC-SHA256(CHAIN_KEY_LABEL, salt)   (not the salt: it keys caller-chosen text)

so erasing a session (its rows tombstoned) leaves no link naming its id. Links written before
(or by a store given no salt) hold the clear form, `canonical(key values)` (`["s-1"]`); a chain
may mix both and a row may be linked in both, its latest link (highest id) being its state.
`audit.verify` needs the salt to match rows with keyed links. Replicas sharing a ledger must
share the salt (`GOVERNOR_FINGERPRINT_SALT`), as they must to agree on fingerprints.

A transaction that touches a single row writes the link in per-row form instead (as every link
was written before members existed; old ledgers hold only these): no `members`, the row's own
fields in the link's columns:

    hash    = SHA-256(prev_hash "\\n" canonical([chain_id, seq, ts, tbl, record_key, op,
                                                 digest, note]))

One link per transaction, not per row: each link is a row in a table with three B-trees, and
the ledger writer's flush of a dozen calls and their sessions paid for one link each, on the
proxy's core. A link covers at most `MAX_MEMBERS` rows (a larger transaction writes several).

A change is never silent: a session's totals moving, a kill or an alert state is a new link
(member) with the row's new digest (the latest link of a row is what the row must look like
now; within a link, its last member), so an edit made outside Governor is told apart from a
legitimate transition. A deletion on purpose (retention, erasure) is a `tombstone` member
saying who and why. `audit.verify` walks the chains and compares them with the rows.

Canonical form of a row: a JSON object of its columns (sorted keys; NULL columns left out, so a
nullable column added later does not change old digests), each value coerced by its column's
type (SQLite hands back 1 for True and 3 for 3.0). A table's own surrogate `id` is left out
where the row has a natural key (it is not known before the insert returns). Canonical JSON is
orjson's compact form (no spaces; a newline inside a string is escaped, so the "\\n" between
the link's fields and its members is unambiguous).

The hashing runs on the caller's thread: the SQLite writer thread, or a worker thread
(`asyncio.to_thread`) for SQLAlchemy connections, never the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Boolean, Float, Integer, Table

from ledger.models import (
    ALERTS,
    BUDGET_ALERTS,
    CALLS,
    GUARDRAIL_EVENTS,
    KILLS,
    LEDGER_TABLES,
    NOTIFICATIONS,
    OVERRIDES,
    RUNBOOK_STEPS,
    SESSION_OWNERS,
    SESSIONS,
    SILENCES,
    STATE_TRANSITIONS,
    STREAM_STARTS,
)

GENESIS = "0" * 64  # prev_hash of a chain's first link
CHAIN_ID_FILE = "chain-id"  # in the journal directory: the replica's stable chain id
CHECKPOINT_FILE = "chain-head.json"  # in the journal directory: the head, outside the database
PUT, TOMBSTONE = "put", "tombstone"
# `tbl` and `op` of a link that covers several rows (its `members` name them); never a table.
MEMBERS = "*"
# Rows per link. `audit.verify` orders a row's links by `id * MEMBER_SLOTS + position`, so a
# link's members must number fewer than MEMBER_SLOTS.
MEMBER_SLOTS = 4096
MAX_MEMBERS = MEMBER_SLOTS - 1
# Members hashed between two calls of `links`' `pause` (~10-20 us each: ~0.2 ms of GIL at most).
PAUSE_EVERY = 16
MAX_NOTE = 2000  # characters of a tombstone's actor + reason JSON
KEYED = "k1:"  # prefix of a keyed record key (`ChainKey`); a clear one is a JSON list

# Audited tables and the columns that name a row. A table not named here (config versions,
# outcomes …) is keyed by its primary key; add it here when a natural key is better.
_KEYS: dict[str, tuple[str, ...]] = {
    CALLS.name: ("call_id",),
    SESSIONS.name: ("session_id",),
    KILLS.name: ("session_id",),
    BUDGET_ALERTS.name: ("budget_id", "window_key", "at_pct"),
    GUARDRAIL_EVENTS.name: ("call_id", "hook", "seq"),
    SESSION_OWNERS.name: ("session_id",),
    STREAM_STARTS.name: ("call_id",),
    ALERTS.name: ("run_id",),
    RUNBOOK_STEPS.name: ("run_id", "step", "phase"),
    SILENCES.name: ("id",),
    OVERRIDES.name: ("idem_key",),
    NOTIFICATIONS.name: ("idem_key",),
    STATE_TRANSITIONS.name: ("transition_id",),
}
# Ledger tables that are working state, not audit records: shared limit leases and alert
# counters, baselines (recomputed from calls), the archive job's progress, the chain itself,
# the ledger's own facts (`ledger_meta`: the salt check).
UNAUDITED = frozenset(
    {
        "limit_counters",
        "alert_counters",
        "baselines",
        "archived_sessions",
        "ledger_chain",
        "chain_heads",
        "ledger_meta",
    }
)


def _coercer(col: Any) -> Callable[[Any], Any]:
    t = col.type
    if isinstance(t, Boolean):
        return bool
    if isinstance(t, Integer):
        return int
    if isinstance(t, Float):
        return float
    return lambda v: v


@dataclass(frozen=True, slots=True)
class TableShape:
    """How one audited table's rows are keyed and digested."""

    table: Table
    key: tuple[str, ...]
    key_typed: tuple[tuple[str, Callable[[Any], Any]], ...]  # key columns and coercions
    typed: tuple[tuple[str, type, Callable[[Any], Any]], ...]  # digested columns, by name

    def record_key(self, row: Mapping[str, Any]) -> str:
        """The row's key values as canonical JSON (`["c-1"]`); KeyError for a missing one."""
        return orjson.dumps(
            [None if row[k] is None else coerce(row[k]) for k, coerce in self.key_typed]
        ).decode()

    def digest(self, row: Mapping[str, Any]) -> str:
        doc = {}
        for name, kind, coerce in self.typed:
            v = row.get(name)
            if v is not None:
                doc[name] = v if type(v) is kind else coerce(v)
        return hashlib.sha256(orjson.dumps(doc)).hexdigest()


# The record keys' own key is derived from the salt (HKDF-Extract with this label as its salt:
# HMAC keyed by the label over the deployment's salt). The salt itself keys hashes of text a
# caller chooses (prompt and completion hashes, request fingerprints, guardrail fingerprints:
# HMAC(salt, text)), so keyed by it a record key would be the prompt hash of the prompt
# `tbl "\n" clear`: anyone who can make a call and read hashes could confirm a guessed erased
# session id. No hash the ledger keeps is keyed by the label.
CHAIN_KEY_LABEL = b"governor chain record keys v1"


class ChainKey:
    """Record keys keyed by a key derived from the deployment's salt: `key(tbl, clear)` is
    `KEYED` + the first 32 hex of HMAC-SHA256(HMAC-SHA256(CHAIN_KEY_LABEL, salt),
    tbl "\n" clear), for `clear` a `TableShape.record_key`."""

    __slots__ = ("_base",)

    def __init__(self, salt: bytes) -> None:
        if not salt:
            raise ValueError("a chain key needs a non-empty salt")
        derived = hmac.digest(CHAIN_KEY_LABEL, salt, hashlib.sha256)
        self._base = hmac.new(derived, digestmod=hashlib.sha256)

    def key(self, tbl: str, clear: str) -> str:
        h = self._base.copy()
        h.update(f"{tbl}\n{clear}".encode())
        return KEYED + h.hexdigest()[:32]


def is_keyed(record_key: str) -> bool:
    return record_key.startswith(KEYED)


def _shape(table: Table) -> TableShape:
    key = _KEYS.get(table.name) or tuple(c.name for c in table.primary_key.columns)
    skip = {"id"} if "id" not in key else set()
    cols = tuple((c.name, _coercer(c)) for c in table.columns if c.name not in skip)
    typed = tuple(sorted((n, _kind(f), f) for n, f in cols))
    key_typed = tuple((k, _coercer(table.c[k])) for k in key)
    return TableShape(table, key, key_typed, typed)


def _kind(coerce: Callable[[Any], Any]) -> type:
    """The Python type a coercion produces (a value already of it is taken as is)."""
    return coerce if isinstance(coerce, type) else str


_SHAPES: dict[str, TableShape] = {}


def shape(table: Table | str) -> TableShape:
    """The shape of an audited table (by Table or name); KeyError for one that is not."""
    name = table if isinstance(table, str) else table.name
    got = _SHAPES.get(name)
    if got is None:
        t = next((t for t in LEDGER_TABLES if t.name == name), None)
        if t is None or name in UNAUDITED:
            raise KeyError(f"{name!r} is not an audited ledger table")
        got = _SHAPES[name] = _shape(t)
    return got


def audited_tables() -> list[Table]:
    """Every audited ledger table, in `LEDGER_TABLES` order."""
    return [t for t in LEDGER_TABLES if t.name not in UNAUDITED]


def link_hash(prev_hash: str, link: Mapping[str, Any]) -> str:
    """The hash of one link over its fields (and members, where it has them) and its
    predecessor's hash."""
    body = orjson.dumps(
        [
            link["chain_id"],
            int(link["seq"]),
            float(link["ts"]),
            link["tbl"],
            link["record_key"],
            link["op"],
            link["digest"],
            link["note"],
        ]
    )
    members = link.get("members")
    if members is not None:
        body += b"\n" + members.encode()
    return hashlib.sha256(prev_hash.encode() + b"\n" + body).hexdigest()


def parse_members(members: str) -> list[list[str]] | None:
    """A link's members as `[tbl, record_key, op, digest, note]` lists; None when the text is
    not that (an edited link). A NUL character is never in a written member (keys and notes
    are canonical JSON, escaped) and PostgreSQL cannot make it text (`audit.verify`'s lookup
    would fail on it), so a member holding one is an edited link too."""
    try:
        got = orjson.loads(members)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(got, list) or not got:
        return None
    for m in got:
        if not (isinstance(m, list) and len(m) == 5
                and all(isinstance(v, str) and "\x00" not in v for v in m)):
            return None
    return got


@dataclass(slots=True)
class Head:
    """Where a chain ends: its last seq (0 for none) and that link's hash."""

    seq: int = 0
    hash: str = GENESIS


def links(
    chain_id: str,
    head: Head,
    ts: float,
    items: Iterable[tuple[str, Mapping[str, Any] | None, str, str]],
    key: ChainKey | None = None,
    pause: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """The links of one transaction, continuing `head` (which advances), for its
    `(table, row, op, note)` items (`put` items carry the row as it now is; `tombstone` items
    carry the row's key values): one link whose members are all of them (a link per
    `MAX_MEMBERS`), or the per-row form for a single item. With `key`, rows are named by keyed
    record keys; without, by their clear keys (the form before keyed keys). `pause()`, where
    given, is called after every PAUSE_EVERY members hashed (a writer thread lets the event
    loop have the GIL there); it changes nothing in the links."""
    items = list(items)
    if len(items) <= 1:
        return row_links(chain_id, head, ts, items, key)
    out: list[dict[str, Any]] = []
    for i in range(0, len(items), MAX_MEMBERS):
        part = items[i : i + MAX_MEMBERS]
        if pause is None:
            members = [_member(tbl, row, op, note, key) for tbl, row, op, note in part]
        else:
            members = []
            for n, (tbl, row, op, note) in enumerate(part, 1):
                members.append(_member(tbl, row, op, note, key))
                if n % PAUSE_EVERY == 0:
                    pause()
        text = orjson.dumps(members).decode()
        out.append(_link(chain_id, head, ts, MEMBERS, "", MEMBERS, "", "", text))
    return out


def row_links(
    chain_id: str,
    head: Head,
    ts: float,
    items: Iterable[tuple[str, Mapping[str, Any] | None, str, str]],
    key: ChainKey | None = None,
    pause: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One per-row link for each item (a single-row transaction's form; before members, every
    transaction's); `pause` as in `links`."""
    if pause is None:
        return [_link(chain_id, head, ts, *_member(tbl, row, op, note, key), None)
                for tbl, row, op, note in items]  # fmt: skip
    out = []
    for n, (tbl, row, op, note) in enumerate(items, 1):
        out.append(_link(chain_id, head, ts, *_member(tbl, row, op, note, key), None))
        if n % PAUSE_EVERY == 0:
            pause()
    return out


def _member(tbl: str, row: Mapping[str, Any] | None, op: str, note: str,
            key: ChainKey | None = None) -> list[str]:  # fmt: skip
    sh = shape(tbl)
    assert row is not None
    name = sh.table.name
    rk = sh.record_key(row) if key is None else key.key(name, sh.record_key(row))
    return [name, rk, op, sh.digest(row) if op == PUT else "", note]


def _link(chain_id: str, head: Head, ts: float, tbl: str, record_key: str, op: str,
          digest: str, note: str, members: str | None) -> dict[str, Any]:  # fmt: skip
    seq = head.seq + 1
    link: dict[str, Any] = {
        "chain_id": chain_id,
        "seq": seq,
        "ts": ts,
        "tbl": tbl,
        "record_key": record_key,
        "op": op,
        "digest": digest,
        "note": note,
        "members": members,
        "prev_hash": head.hash,
    }
    h = link["hash"] = link_hash(head.hash, link)
    head.seq, head.hash = seq, h
    return link


def put_links(
    chain_id: str, head: Head, ts: float, table: Table | str, rows: Iterable[Mapping[str, Any]],
    key: ChainKey | None = None,
) -> list[dict[str, Any]]:
    name = table if isinstance(table, str) else table.name
    return links(chain_id, head, ts, ((name, r, PUT, "") for r in rows), key)


def tombstone_note(actor: str, reason: str) -> str:
    """A tombstone's note: who deleted the row and why (bounded)."""
    note = orjson.dumps({"actor": actor, "reason": reason}, option=orjson.OPT_SORT_KEYS).decode()
    if not actor or not reason:
        raise ValueError("a tombstone needs an actor and a reason")
    if len(note) > MAX_NOTE:
        raise ValueError(f"tombstone actor + reason must be under {MAX_NOTE} characters")
    return note


# -- the chain id -------------------------------------------------------------------------------


def new_chain_id() -> str:
    return uuid.uuid4().hex


def chain_id_of(directory: Path) -> str:
    """The stable chain id of the runtime whose journal is `directory` (made on first use): a
    random id kept in a file, so a restart continues the chain and a moved or renamed host
    does not start a new one."""
    path = Path(directory) / CHAIN_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        return text
    cid = new_chain_id()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(cid + "\n")
    os.replace(tmp, path)
    return cid


def save_checkpoint(directory: Path, chain_id: str, seq: int, hash_: str, ts: float) -> None:
    """Keep a chain's head beside its journal, outside the database (atomic replace): whoever
    rewrites the ledger's chain and its `chain_heads` row still disagrees with this file."""
    doc = {"chain_id": chain_id, "seq": seq, "hash": hash_, "ts": ts}
    path = Path(directory) / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint file's head; ValueError when it is not one."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"cannot read chain checkpoint {path}: {exc}") from None
    ok = (
        isinstance(doc, dict)
        and isinstance(doc.get("chain_id"), str)
        and isinstance(doc.get("seq"), int)
        and isinstance(doc.get("hash"), str)
    )
    if not ok:
        raise ValueError(f"{path} is not a chain checkpoint (chain_id, seq, hash)")
    return doc


# -- plain sqlite3 (the SQLite writer thread) ---------------------------------------------------

SQLITE_HEAD = "SELECT seq, hash FROM ledger_chain WHERE chain_id = ? ORDER BY seq DESC LIMIT 1"
_LINK_COLS = ("chain_id", "seq", "ts", "tbl", "record_key", "op", "digest", "note",
              "members", "prev_hash", "hash")  # fmt: skip
SQLITE_INSERT_LINK = (
    f"INSERT INTO ledger_chain ({', '.join(_LINK_COLS)}) "
    f"VALUES ({', '.join('?' * len(_LINK_COLS))})"
)
SQLITE_HEAD_UPSERT = (
    "INSERT INTO chain_heads (chain_id, seq, hash, ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(chain_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, ts = excluded.ts"
)


def sqlite_append(con: Any, chain_id: str, ts: float, items: list[tuple[Any, ...]],
                  key: ChainKey | None = None,
                  pause: Callable[[], None] | None = None) -> int:  # fmt: skip
    """Append the links of `(table, row, op, note)` items (`links`, `pause` as there) on a
    sqlite3 connection inside the caller's write transaction; returns how many links."""
    if not items:
        return 0
    got = con.execute(SQLITE_HEAD, (chain_id,)).fetchone()
    head = Head(int(got[0]), str(got[1])) if got else Head()
    new = links(chain_id, head, ts, items, key, pause)
    con.executemany(SQLITE_INSERT_LINK, [tuple(n[c] for c in _LINK_COLS) for n in new])
    con.execute(SQLITE_HEAD_UPSERT, (chain_id, head.seq, head.hash, ts))
    return len(new)
