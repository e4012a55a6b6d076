"""The ledger database: SQLite (one file, embedded) or PostgreSQL (shared by many replicas).

Every write is idempotent by construction (`INSERT ... ON CONFLICT`), because the writer
replays its journal after a crash and several replicas may race: a row is counted exactly
once however often it is offered. Session totals move in the same transaction as the calls
they count, so they can never disagree with the `calls` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    case,
    cast,
    event,
    func,
    inspect,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex
from sqlmodel import SQLModel

from ledger import chain, salt_check, transitions
from ledger.call_rows import decision_record_text, normalize_call, session_deltas
from ledger.errors import LedgerError, LedgerRefused, LedgerUnavailable
from ledger.models import (
    BUDGET_ALERTS,
    CALLS,
    CHAIN_HEADS,
    CLOSE_ACTOR,
    CLOSE_REASON,
    KILLS,
    LEDGER_CHAIN,
    LEDGER_TABLES,
    SESSIONS,
    CallRecord,
    KillRecord,
    SessionRecord,
)
from ledger.sqlite_fast import SQLiteBatchWriter

log = logging.getLogger(__name__)

SESSION_STATUSES = frozenset({"open", "killed", "closed"})
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# pg_advisory_xact_lock keys: serialise schema creation across replicas starting together, and
# kill inserts so kill ids become visible in id order (kills_after never skips one).
_LOCK_SCHEMA = 0x6C6564676572  # "ledger"
_LOCK_KILLS = 0x6B696C6C  # "kill"
_BUSY_TIMEOUT_MS = 5000

# Errors that mean "the database is not there right now", as opposed to "this row is wrong".
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
)
# PostgreSQL SQLSTATEs (classes, or exact codes) that mean "not now" rather than "not this row":
# a lost connection, a transaction rolled back by a conflict or deadlock, a full disk or out of
# memory, an operator's cancel or shutdown, a server that became read-only (a failover), a lock
# not granted. Retried like an outage: the rows wait in the journal.
_TRANSIENT_SQLSTATE = ("08", "40", "53", "57", "58", "25006", "55P03", "55006")
# Classes meaning the data itself is refused (a data exception, an integrity constraint, a
# program limit such as an index row too large for a huge value: retried row by row, only the
# row carrying it is set aside).
_REFUSED_SQLSTATE = ("22", "23", "54")
# SQLite has no SQLSTATE: the driver's classes say it (a value it cannot bind, a constraint).
_REFUSED = (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)


@dataclass(frozen=True, slots=True)
class CallAggregate:
    """Spend of one identity and model in one time bucket: enough to rebuild live counters."""

    user: str
    team: str
    project: str
    session_id: str | None
    workflow_tag: str | None
    environment: str | None
    cost_center: str | None
    virtual_model: str
    model: str
    bucket_start: float
    requests: int
    tokens: int
    cost_usd: float
    key_id: str | None = None  # the API key's id (per-key limits are rebuilt from it)
    last_ts: float | None = None  # its newest call's time (asked for with `newest=`)


@dataclass(frozen=True, slots=True)
class SessionActivity:
    """One session's calls, tokens and cost since a time, and its newest call's time."""

    session_id: str
    calls: int
    tokens: int
    cost_usd: float
    last_ts: float


# What an aggregate's identity field holds when the query did not group by it.
_BLANK: dict[str, str | None] = dict.fromkeys(
    ("session_id", "workflow_tag", "environment", "cost_center", "key_id")
)


def _engine_url(url: str) -> tuple[URL, str]:
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as e:
        raise ValueError(f"ledger URL {url!r} is not a database URL: {e}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite"), "sqlite"
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg"), "postgresql"
    raise ValueError(
        f"ledger URL must start with sqlite:/// or postgresql://, got {backend!r} "
        f"(e.g. sqlite:///var/governor/ledger.db)"
    )


# Page cache of each pooled SQLite connection, KiB (SQLite's default: 2000 per connection).
SQLITE_READ_CACHE_KIB = 256


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers (kill pollers, the control room) never block the writer. synchronous=NORMAL
    # in WAL survives a process crash; only an OS crash can lose the last commits, and those
    # rows are still in the writer's journal.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA cache_size=-{SQLITE_READ_CACHE_KIB}")
    cur.close()


# Seconds a PostgreSQL statement may run before the client gives up on it (asyncpg's
# command_timeout). `audit.verify` builds its latest-link lookup under a longer bound of its own.
COMMAND_TIMEOUT_S = 30.0


# Fields whose ledger NULL a reader takes for "" (`activities.gateway._ledger_identity`), as a live
# identity has them: `where` matches "" there on empty or NULL; elsewhere "" only.
_NULL_READS_EMPTY = frozenset({"user", "team", "project", "key_id"})


class LedgerStore:
    """Async access to the ledger tables. Create with `await LedgerStore.open(url)`."""

    def __init__(self, engine: AsyncEngine, dialect: str, display_url: str) -> None:
        self._engine = engine
        self._fast: SQLiteBatchWriter | None = None
        self._dialect = dialect
        self._display_url = display_url
        self._insert: Callable[..., Any] = (
            postgresql.insert if dialect == "postgresql" else sqlite.insert
        )
        self._ready = False
        self._ddl_lock = asyncio.Lock()
        self._schema: str | None = None
        # The tamper-evident chain this store appends to (`ledger.chain`): a replica's stable
        # id once its writer attaches it, else a fresh one on the first audited write.
        self._chain_id: str | None = None
        self._chain_key: chain.ChainKey | None = None  # keyed record keys (`attach_chain_key`)
        self._chain_lock = asyncio.Lock()  # one append at a time: seqs never collide
        # The items the open `_chained()` transaction has appended (None outside one).
        self._chain_pending: list[tuple[str, Mapping[str, Any], str, str]] | None = None
        # The salt checked with the tables, and where it came from (`open`, `ledger.salt_check`).
        self._salt_check: tuple[bytes, str | None] | None = None

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._dialect

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema the tables live in (None: the default search path)."""
        return self._schema

    def secret_url(self) -> str:
        """The full database URL, password included: only for a child process of this runtime,
        handed over in its environment (never argv, a log or an answer)."""
        return self._engine.url.render_as_string(hide_password=False)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        require_reachable: bool = True,
        salt: bytes | None = None,
        salt_source: str | None = None,
        reader: bool = False,
    ) -> LedgerStore:
        """Connect and create missing tables.

        `reader=True`: a second connection that only reads tables a runtime's store created
        (an audit show, export or replay built in a worker thread): no DDL and no batch writer.
        Creating tables takes SQLite's write lock first, so such a reader waited behind the
        ledger writer's batches, up to the busy timeout, and its route answered 503.

        `schema` (PostgreSQL only) keeps the tables in their own schema, created if absent.
        With `require_reachable=False` a database that is down does not fail the open: tables
        are created on the first operation that reaches it (a proxy can start during an outage
        and let its writer catch up).
        `salt`: the deployment's (`attach_chain_key`), checked against the ledger's salt check
        with the tables (`ledger.salt_check`: recorded when absent); another salt raises
        SaltMismatch naming `salt_source` (where it came from: the env variable or the file).
        """
        engine_url, dialect = _engine_url(url)
        display = engine_url.render_as_string(hide_password=True)
        kwargs: dict[str, Any] = {}
        if dialect == "sqlite":
            if schema is not None:
                raise ValueError("ledger schema= applies to PostgreSQL only")
            database = engine_url.database
            if not database or database == ":memory:":
                kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"timeout": _BUSY_TIMEOUT_MS / 1000}
        else:
            connect_args: dict[str, Any] = {"timeout": 5, "command_timeout": COMMAND_TIMEOUT_S}
            if schema is not None:
                if not _SCHEMA_RE.match(schema):
                    raise ValueError(f"ledger schema {schema!r} is not a plain SQL identifier")
                connect_args["server_settings"] = {"search_path": schema}
            kwargs.update(
                connect_args=connect_args,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=5,
                pool_timeout=10,
            )
        engine = create_async_engine(engine_url, **kwargs)
        if dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        store = cls(engine, dialect, display)
        store._schema = schema
        if salt is not None:
            store.attach_chain_key(salt)
            store._salt_check = (salt, salt_source)
        if reader:
            store._ready = True
            return store
        if dialect == "sqlite" and engine_url.database and engine_url.database != ":memory:":
            store._fast = SQLiteBatchWriter(engine_url.database, _BUSY_TIMEOUT_MS, _CALL_COLUMNS)
        try:
            await store._ensure_tables()
        except LedgerUnavailable:
            if require_reachable:
                await engine.dispose()
                raise
            log.warning("ledger %s unreachable at start-up; will retry", display)
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        fast, self._fast = self._fast, None
        if fast is not None:
            await asyncio.get_running_loop().run_in_executor(None, fast.close)
        await self._engine.dispose()

    # -- plumbing -----------------------------------------------------------------------------

    def _unavailable(self, e: BaseException) -> LedgerUnavailable:
        reason = getattr(e, "orig", None) or e
        return LedgerUnavailable(f"ledger database {self._display_url} is unavailable: {reason}")

    @asynccontextmanager
    async def _connect(self, *, write: bool, ddl: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection (in a transaction when writing), with errors mapped to the ledger's own."""
        if not self._ready and not ddl:
            await self._ensure_tables()
        try:
            conn = await self._engine.connect()
        except Exception as e:  # any failure to connect (refused, auth, missing db) is an outage
            raise self._unavailable(e) from e
        try:
            if write:
                async with conn.begin():
                    yield conn
            else:
                yield conn
        except LedgerError:
            raise
        except _UNAVAILABLE as e:
            raise self._unavailable(e) from e
        except sa_exc.DBAPIError as e:
            state = str(getattr(e.orig, "sqlstate", None) or "")
            if e.connection_invalidated or state.startswith(_TRANSIENT_SQLSTATE):
                raise self._unavailable(e) from e
            if state.startswith(_REFUSED_SQLSTATE) or (not state and isinstance(e, _REFUSED)):
                raise LedgerRefused(f"ledger rejected the operation: {e.orig}") from e
            # Neither the data nor an outage (a permission, a missing table): the database's
            # state, which a person fixes; a writer keeps its rows until then.
            raise LedgerError(f"ledger rejected the operation: {e.orig}") from e
        except Exception as e:  # e.g. a driver refusing a value before it reaches the server
            raise LedgerRefused(f"ledger rejected the operation: {e}") from e
        finally:
            with contextlib.suppress(Exception):  # a dead connection may fail to close
                await conn.close()

    async def _ensure_tables(self) -> None:
        def create(sync_conn: Any) -> None:
            SQLModel.metadata.create_all(sync_conn, tables=list(LEDGER_TABLES))
            _add_missing_columns(sync_conn)

        async with self._ddl_lock:  # first operations racing after an outage create once
            if self._ready:
                return
            async with self._connect(write=True, ddl=True) as conn:
                if self._dialect == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_SCHEMA}
                    )
                    if self._schema is not None:
                        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"'))
                else:  # the write lock first: replicas opening an empty file together create once
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                await conn.run_sync(create)
            if self._salt_check is not None:  # after the tables, so a refusal repeats
                async with self._connect(write=True, ddl=True) as conn:
                    await salt_check.check(conn, self._insert, *self._salt_check, record=True)
            self._ready = True

    async def compare_salt(self, salt: bytes, source: str | None = None) -> None:
        """SaltMismatch when the ledger's salt check was recorded under another salt; nothing
        is recorded (a CLI's salt must not decide the replicas')."""
        async with self._connect(write=False) as conn:
            await salt_check.check(conn, self._insert, salt, source, record=False)

    async def reset_salt_check(self) -> bool:
        """Forget the ledger's salt check (`ledger.salt_check.reset`): whether there was one."""
        async with self._connect(write=True) as conn:
            return await salt_check.reset(conn)

    # -- the chain ----------------------------------------------------------------------------

    @property
    def chain_id(self) -> str | None:
        """The id of the chain this store's audited writes are linked into (None before any)."""
        return self._chain_id

    def attach_chain(self, chain_id: str) -> None:
        """Link this store's audited writes into chain `chain_id` (a replica's stable id)."""
        if not chain_id or len(chain_id) > 64:
            raise ValueError("a chain id must be 1-64 characters")
        self._chain_id = chain_id

    def attach_chain_key(self, salt: bytes) -> None:
        """Name the rows this store's links cover by keyed record keys under the deployment's
        `salt` (`ledger.chain.ChainKey`), not by their clear keys."""
        self._chain_key = chain.ChainKey(salt)

    @property
    def chain_key(self) -> chain.ChainKey | None:
        """The key this store's links name rows by (None: clear keys)."""
        return self._chain_key

    @property
    def chain_keyed(self) -> bool:
        """Whether this store's links name rows by keyed record keys."""
        return self._chain_key is not None

    @asynccontextmanager
    async def _chained(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that may append chain links (`chain_append`): one at a time per
        store, so the links of concurrent writes never race for a seq. What it appends is
        linked when the block ends, before the commit: one link for the whole transaction."""
        if self._chain_id is None:
            self._chain_id = chain.new_chain_id()
        async with self._chain_lock, self._connect(write=True) as conn:
            self._chain_pending = []
            try:
                yield conn
                await self._append_links(conn, self._chain_pending)
            finally:
                self._chain_pending = None

    async def chain_append(
        self, conn: AsyncConnection, items: Sequence[tuple[str, Mapping[str, Any], str, str]]
    ) -> None:
        """Cover `(table name, row, op, note)` items with this `_chained()` transaction's link
        (written when the transaction's block ends): after the row changes they cover, so a
        later change of the same row by another replica gets a higher link id. Each row as it
        is now: hashed when the link is written, so do not change these dicts afterwards."""
        pending = self._chain_pending
        assert pending is not None and self._chain_lock.locked(), "chain_append outside _chained()"
        pending.extend(items)

    async def _append_links(
        self, conn: AsyncConnection, items: Sequence[tuple[str, Mapping[str, Any], str, str]]
    ) -> None:
        """Write the links of one transaction's items (`ledger.chain.links`) and move the
        chain's head. Hashing runs in a worker thread."""
        if not items:
            return
        cid = self._chain_id
        assert cid is not None
        c = LEDGER_CHAIN.c
        q = select(c.seq, c.hash).where(c.chain_id == cid).order_by(c.seq.desc()).limit(1)
        got = (await conn.execute(q)).first()
        head = chain.Head(int(got[0]), str(got[1])) if got else chain.Head()
        ts = time.time()
        new = await asyncio.to_thread(chain.links, cid, head, ts, list(items), self._chain_key)
        await conn.execute(LEDGER_CHAIN.insert(), new)
        up = self._insert(CHAIN_HEADS).values(chain_id=cid, seq=head.seq, hash=head.hash, ts=ts)
        ex = up.excluded
        await conn.execute(
            up.on_conflict_do_update(
                index_elements=["chain_id"], set_={"seq": ex.seq, "hash": ex.hash, "ts": ex.ts}
            )
        )

    async def chain_head(self) -> tuple[int, str] | None:
        """This store's chain head as checkpointed in the ledger: (seq, hash), or None."""
        if self._chain_id is None:
            return None
        q = select(CHAIN_HEADS.c.seq, CHAIN_HEADS.c.hash).where(
            CHAIN_HEADS.c.chain_id == self._chain_id
        )
        rows = await self._fetch(q)
        return (int(rows[0]["seq"]), str(rows[0]["hash"])) if rows else None

    async def chain_rows_where(
        self, conn: AsyncConnection, table: Any, *where: Any
    ) -> list[dict[str, Any]]:
        """Re-read the rows matching `where` (after an UPDATE) and link their new state."""
        rows = [dict(m) for m in (await conn.execute(select(table).where(*where))).mappings()]
        await self.chain_append(conn, [(table.name, r, chain.PUT, "") for r in rows])
        return rows

    # -- calls --------------------------------------------------------------------------------

    async def insert_calls(
        self, rows: Sequence[Mapping[str, Any]], *, normalized: bool = False
    ) -> int:
        """Insert call rows not already present; returns how many were new.

        One transaction per batch: the new calls and their sessions' totals commit together,
        and totals grow only by rows this call actually inserted (never by a replayed one).
        Raises ValueError for a malformed row before touching the database.
        """
        if not rows:
            return 0
        unique: dict[str, dict[str, Any]] = {}
        for r in rows:
            # The writer's rows were checked when journaled; checking again costs the hot loop.
            n = dict(r) if normalized else normalize_call(r, store_text=True)
            unique.setdefault(n["call_id"], n)
        # A fixed key order means two replicas inserting overlapping batches cannot deadlock.
        batch = [unique[k] for k in sorted(unique)]
        journal = list(unique)  # the order rows were recorded in: the order of their links
        if self._dialect == "sqlite":
            return await self._insert_calls_sqlite(batch, journal)
        return await self._insert_calls_sqlalchemy(batch, journal)

    async def _insert_calls_sqlalchemy(
        self, batch: list[dict[str, Any]], journal: list[str] | None = None
    ) -> int:
        stmt = (
            self._insert(CALLS)
            .on_conflict_do_nothing(index_elements=["call_id"])
            .returning(CALLS.c.call_id)
        )
        by_id = {r["call_id"]: r for r in batch}
        for r in batch:
            decision_record_text(r)
        async with self._chained() as conn:
            result = await conn.execute(stmt, batch)
            inserted = set(result.scalars().all())
            sessions = session_deltas(by_id[k] for k in sorted(inserted))
            if sessions:
                await conn.execute(self._session_upsert(), sessions)
            items: list[tuple[str, Mapping[str, Any], str, str]] = [
                (CALLS.name, by_id[k], chain.PUT, "")
                for k in (journal or sorted(by_id))
                if k in inserted
            ]
            ids = [d["session_id"] for d in sessions]
            for i in range(0, len(ids), 500):
                q = select(SESSIONS).where(SESSIONS.c.session_id.in_(ids[i : i + 500]))
                items += [(SESSIONS.name, dict(m), chain.PUT, "")
                          for m in (await conn.execute(q)).mappings()]  # fmt: skip
            await self.chain_append(conn, items)
        return len(inserted)

    async def _insert_calls_sqlite(self, batch: list[dict[str, Any]], journal: list[str]) -> int:
        """SQLite files: the whole batch in one hop to the ledger's own writer thread."""
        fast = self._fast
        if fast is None:
            return await self._insert_calls_sqlalchemy(batch, journal)
        if not self._ready:
            await self._ensure_tables()
        loop = asyncio.get_running_loop()
        if self._chain_id is None:
            self._chain_id = chain.new_chain_id()
        try:
            async with self._chain_lock:
                # a small batch at the lowest CPU priority, a backlog at normal (`sqlite_fast`)
                return await loop.run_in_executor(
                    fast.executor_for(len(batch)),
                    fast.insert,
                    batch,
                    self._chain_id,
                    journal,
                    self._chain_key,
                )
        except sqlite3.OperationalError as e:
            raise self._unavailable(e) from e
        except (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError,
                sqlite3.InterfaceError) as e:  # a value or constraint of the batch's rows
            raise LedgerRefused(f"ledger rejected the operation: {e}") from e
        except sqlite3.DatabaseError as e:  # e.g. a damaged file: not the rows' fault
            raise LedgerError(f"ledger rejected the operation: {e}") from e

    def _session_upsert(self) -> Any:
        # Built once: constructing this statement costs ~2 ms of Python per call, which the
        # writer's flush loop would otherwise pay on the proxy's event loop every batch.
        stmt = self.__dict__.get("_session_upsert_stmt")
        if stmt is None:
            stmt = self.__dict__["_session_upsert_stmt"] = self._build_session_upsert()
        return stmt

    def _build_session_upsert(self) -> Any:
        ins = self._insert(SESSIONS)
        s, ex = SESSIONS.c, ins.excluded

        def fill(col: Any, new: Any) -> Any:
            return func.coalesce(func.nullif(col, ""), new)

        return ins.on_conflict_do_update(
            index_elements=["session_id"],
            set_={
                "calls": s.calls + ex.calls,
                "tokens": s.tokens + ex.tokens,
                "cost_usd": s.cost_usd + ex.cost_usd,
                "updated_ts": case(
                    (ex.updated_ts > s.updated_ts, ex.updated_ts), else_=s.updated_ts
                ),
                "created_ts": case(
                    (ex.created_ts < s.created_ts, ex.created_ts), else_=s.created_ts
                ),
                # A session first named by a kill learns who it belongs to from its calls.
                "kind": fill(s.kind, ex.kind),
                "user": fill(s.user, ex.user),
                "team": fill(s.team, ex.team),
                "project": fill(s.project, ex.project),
                "workflow_tag": func.coalesce(s.workflow_tag, ex.workflow_tag),
            },
        )

    async def calls_written(self) -> int | None:
        """A counter of call rows ever inserted, for spotting other writers cheaply: SQLite's
        highest rowid (calls are never deleted, and an ignored duplicate takes no rowid).
        None where there is no such counter (PostgreSQL)."""
        if self._dialect != "sqlite":
            return None
        async with self._connect(write=False) as conn:
            value = (await conn.exec_driver_sql("SELECT MAX(rowid) FROM calls")).scalar()
        return int(value or 0)

    async def get_call(self, call_id: str) -> CallRecord | None:
        """One call row by its id (retried activities, admin lookups, auditors)."""
        rows = await self._fetch(select(CALLS).where(CALLS.c.call_id == call_id))
        return CallRecord(**rows[0]) if rows else None

    async def calls_with_prefix(self, prefix: str, limit: int = 100) -> list[CallRecord]:
        """Call rows whose id is `prefix` or starts with `prefix` + '-' (the attempts made
        with one Idempotency-Key): one range read on the primary key."""
        q = (
            select(CALLS)
            # Not a >=/<= range: under a PostgreSQL locale collation "-" and "~" do not sort
            # by byte, and the retry ids (prefix + "-" + hex) fell outside it.
            .where(
                or_(
                    CALLS.c.call_id == prefix,
                    CALLS.c.call_id.startswith(prefix + "-", autoescape=True),
                )
            )
            .order_by(CALLS.c.call_id)
            .limit(limit)
        )
        return [CallRecord(**m) for m in await self._fetch(q)]

    async def calls_for_session(self, session_id: str) -> list[CallRecord]:
        q = (
            select(CALLS)
            .where(CALLS.c.session_id == session_id)
            .order_by(CALLS.c.ts, CALLS.c.call_id)
        )
        return [CallRecord(**m) for m in await self._fetch(q)]

    async def aggregate_calls(
        self,
        since_ts: float,
        bucket_seconds: int,
        *,
        include_blocked: bool = False,
        by: Collection[str] | None = None,
        until_ts: float | None = None,
        where: Mapping[str, str] | None = None,
        newest: int | None = None,
    ) -> list[CallAggregate]:
        """Requests, tokens and cost per identity, model and time bucket since `since_ts`.

        Buckets align to the epoch like `policies.windows.fixed_window`, so a live counter's
        window is a whole number of buckets. Blocked calls are left out by default: they
        spent nothing, and the live counters never counted them either. `by`: group only by
        these of `CallAggregate`'s identity and model fields (the others come back blank:
        "" or None), so a reader that needs a few of them (the budget re-sync) gets one
        aggregate per value it reads, not one per session a caller invented; None: all.
        `until_ts`: calls before it only; `where`: only calls whose fields have these values
        ("": empty or NULL), which every aggregate then carries, not grouped on (one rate
        counter read back: its window, its scope value). `newest`: at most this
        many aggregates, those with the newest last call (`last_ts`) first, so a reader's
        memory is bounded by what it asks for, not by how many values callers sent.
        """
        if bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
        if newest is not None and newest <= 0:
            raise ValueError(f"newest must be positive, got {newest}")
        c = CALLS.c
        width = literal(bucket_seconds, BigInteger)
        if self._dialect == "postgresql":
            bucket = func.floor(c.ts / width) * width
        else:
            bucket = cast(c.ts / width, Integer) * width
        every = (
            c.user,
            c.team,
            c.project,
            c.session_id,
            c.workflow_tag,
            c.environment,
            c.cost_center,
            c.virtual_model,
            c.model,
            c.key_id,
        )
        fixed = dict(where or {})
        # A field fixed by `where` is one value in every aggregate: filtered, not grouped ("" and
        # NULL are one value, as `policies.matching` reads a ledger NULL as "").
        dims = tuple(d for d in every if (by is None or d.name in by) and d.name not in fixed)
        grouped = {d.name for d in dims}
        tokens = c.input_tokens + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens
        inner = select(
            *dims, bucket.label("bucket_start"), tokens.label("tokens"), c.cost_usd,
            *((c.ts,) if newest is not None else ()),
        ).where(c.ts >= since_ts)
        if until_ts is not None:
            inner = inner.where(c.ts < until_ts)
        for name, value in fixed.items():
            if value or name not in _NULL_READS_EMPTY:
                inner = inner.where(c[name] == value)
            else:
                inner = inner.where(or_(c[name].is_(None), c[name] == ""))
        if not include_blocked:
            inner = inner.where(c.decision != "blocked")
        sub = inner.subquery()
        keys = [sub.c[d.name] for d in dims] + [sub.c.bucket_start]
        q = select(
            *keys,
            func.count().label("requests"),
            cast(func.sum(sub.c.tokens), BigInteger).label("tokens"),
            func.sum(sub.c.cost_usd).label("cost_usd"),
        ).group_by(*keys)
        if newest is None:
            q = q.order_by(sub.c.bucket_start)
        else:  # ties in a fixed order, so which aggregates make the cut does not vary
            last = func.max(sub.c.ts).label("last_ts")
            q = q.add_columns(last)
            q = q.order_by(last.desc(), *(k.desc() for k in keys)).limit(newest)
        out = []
        names = [d.name for d in every]
        for m in await self._fetch(q):
            fields: dict[str, Any] = {
                n: m[n] if n in grouped else fixed.get(n, _BLANK.get(n, "")) for n in names
            }
            out.append(
                CallAggregate(
                    **fields,
                    bucket_start=float(m["bucket_start"]),
                    requests=int(m["requests"]),
                    tokens=int(m["tokens"] or 0),
                    cost_usd=float(m["cost_usd"] or 0.0),
                    last_ts=float(m["last_ts"]) if newest is not None else None,
                )
            )
        return out

    async def session_activity(self, since_ts: float, limit: int) -> list[SessionActivity]:
        """Per session, its calls since `since_ts` (blocked ones left out, as the live totals
        never count them): how many, their tokens and cost, and its newest call's time; only
        the `limit` sessions active last, newest first. One row per session returned, at most
        `limit`, however many session ids callers invented (the grouping runs in the database).
        """
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        c = CALLS.c
        tokens = c.input_tokens + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens
        last = func.max(c.ts).label("last_ts")
        q = (
            select(
                c.session_id,
                func.count().label("calls"),
                cast(func.sum(tokens), BigInteger).label("tokens"),
                func.sum(c.cost_usd).label("cost_usd"),
                last,
            )
            .where(
                c.ts >= since_ts,
                c.decision != "blocked",
                c.session_id.is_not(None),
                c.session_id != "",
            )
            .group_by(c.session_id)
            .order_by(last.desc(), c.session_id.desc())
            .limit(limit)
        )
        return [
            SessionActivity(
                session_id=m["session_id"],
                calls=int(m["calls"]),
                tokens=int(m["tokens"] or 0),
                cost_usd=float(m["cost_usd"] or 0.0),
                last_ts=float(m["last_ts"]),
            )
            for m in await self._fetch(q)
        ]

    # -- sessions and kills -------------------------------------------------------------------

    async def record_kill(
        self, session_id: str, actor: str, reason: str, ts: float
    ) -> tuple[KillRecord, bool]:
        """Kill a session once; a repeated kill returns the original record and False."""
        if not session_id:
            raise ValueError("record_kill needs a session_id")
        kill = (
            self._insert(KILLS)
            .values(session_id=session_id, actor=actor, reason=reason, ts=ts)
            .on_conflict_do_nothing(index_elements=["session_id"])
            .returning(*KILLS.c)
        )
        ins = self._insert(SESSIONS).values(
            session_id=session_id,
            kind="",
            user="",
            team="",
            project="",
            status="killed",
            created_ts=ts,
            updated_ts=ts,
            calls=0,
            tokens=0,
            cost_usd=0.0,
        )
        mark = ins.on_conflict_do_update(
            index_elements=["session_id"],
            set_={
                "status": "killed",
                "updated_ts": case(
                    (ins.excluded.updated_ts > SESSIONS.c.updated_ts, ins.excluded.updated_ts),
                    else_=SESSIONS.c.updated_ts,
                ),
            },
        )
        async with self._chained() as conn:
            if self._dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KILLS})
            row = (await conn.execute(kill)).mappings().first()
            created = row is not None
            if row is None:
                q = select(KILLS).where(KILLS.c.session_id == session_id)
                row = (await conn.execute(q)).mappings().one()
            else:
                await self.chain_append(conn, [(KILLS.name, dict(row), chain.PUT, "")])
            where = SESSIONS.c.session_id == session_id
            was = await transitions.current(conn, SESSIONS, "status", where)
            await conn.execute(mark)
            await self.chain_rows_where(conn, SESSIONS, where)
            await transitions.append(self, conn, SESSIONS.name, {"session_id": session_id},
                                     "status", was, "killed", actor=actor, ts=ts)  # fmt: skip
        return _kill_record(row), created

    async def record_close(self, session_id: str, ts: float) -> bool:
        """Close a session for good: its status becomes 'closed' and a row in `kills` with
        actor `CLOSE_ACTOR` carries the close to every replica the way a kill travels (the
        replicas' kill poll), so a proxy call naming it is refused everywhere. A session that
        was killed stays killed (returns False); closing twice is harmless."""
        if not session_id:
            raise ValueError("record_close needs a session_id")
        mark = (
            self._insert(KILLS)
            .values(session_id=session_id, actor=CLOSE_ACTOR, reason=CLOSE_REASON, ts=ts)
            .on_conflict_do_nothing(index_elements=["session_id"])
            .returning(*KILLS.c)
        )
        q = (
            SESSIONS.update()
            .where(SESSIONS.c.session_id == session_id, SESSIONS.c.status != "killed")
            .values(status="closed", updated_ts=ts)
        )
        async with self._chained() as conn:
            if self._dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KILLS})
            closed = (await conn.execute(mark)).mappings().first()
            if closed is not None:
                await self.chain_append(conn, [(KILLS.name, dict(closed), chain.PUT, "")])
            where = SESSIONS.c.session_id == session_id
            was = await transitions.current(conn, SESSIONS, "status", where)
            result = await conn.execute(q)
            if result.rowcount:
                await self.chain_rows_where(conn, SESSIONS, where)
                key = {"session_id": session_id}
                await transitions.append(self, conn, SESSIONS.name, key, "status", was, "closed",
                                         actor=CLOSE_ACTOR, ts=ts)  # fmt: skip
        return bool(result.rowcount)

    async def kills_after(self, last_id: int) -> list[KillRecord]:
        """Kills with id > last_id, oldest first: what a replica polling since last_id missed."""
        q = select(KILLS).where(KILLS.c.id > last_id).order_by(KILLS.c.id)
        return [_kill_record(m) for m in await self._fetch(q)]

    async def newest_kills(self, limit: int) -> list[KillRecord]:
        """The `limit` kills with the highest ids, oldest first (a replica's start: it holds
        at most `max_killed_sessions` of them; older ones are looked up on use, `kill_of`).
        At most `limit` rows, however many sessions were killed or closed."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        q = select(KILLS).order_by(KILLS.c.id.desc()).limit(limit)
        return [_kill_record(m) for m in reversed(await self._fetch(q))]

    async def kill_of(self, session_id: str) -> KillRecord | None:
        """The session's kill or close, if it has one (a session is ended once)."""
        rows = await self._fetch(select(KILLS).where(KILLS.c.session_id == session_id))
        return _kill_record(rows[0]) if rows else None

    async def get_session(self, session_id: str) -> SessionRecord | None:
        rows = await self._fetch(select(SESSIONS).where(SESSIONS.c.session_id == session_id))
        return SessionRecord(**rows[0]) if rows else None

    async def list_sessions(
        self, status: str | None = None, project: str | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        """Most recently active first."""
        if status is not None and status not in SESSION_STATUSES:
            raise ValueError(f"session status must be one of {sorted(SESSION_STATUSES)}")
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        q = select(SESSIONS)
        if status is not None:
            q = q.where(SESSIONS.c.status == status)
        if project is not None:
            q = q.where(SESSIONS.c.project == project)
        q = q.order_by(SESSIONS.c.updated_ts.desc(), SESSIONS.c.session_id).limit(limit)
        return [SessionRecord(**m) for m in await self._fetch(q)]

    async def set_session_status(self, session_id: str, status: str, ts: float) -> bool:
        """Open or close a session; returns False if it does not exist or was killed.

        A kill is final and audited, so it is made only by `record_kill` and never undone.
        """
        if status not in ("open", "closed"):
            raise ValueError(
                f"session status can be set to 'open' or 'closed', not {status!r} "
                "(kills go through record_kill so they are audited)"
            )
        q = (
            SESSIONS.update()
            .where(SESSIONS.c.session_id == session_id, SESSIONS.c.status != "killed")
            .values(status=status, updated_ts=ts)
        )
        async with self._chained() as conn:
            where = SESSIONS.c.session_id == session_id
            was = await transitions.current(conn, SESSIONS, "status", where)
            result = await conn.execute(q)
            if result.rowcount:
                await self.chain_rows_where(conn, SESSIONS, where)
                await transitions.append(self, conn, SESSIONS.name, {"session_id": session_id},
                                         "status", was, status, actor=None, ts=ts)  # fmt: skip
        return bool(result.rowcount)

    # -- budget alerts ------------------------------------------------------------------------

    async def record_budget_alert(
        self,
        budget_id: str,
        window_key: str,
        at_pct: float,
        spent_usd: float,
        ceiling_usd: float,
        ts: float,
    ) -> bool:
        """True only for the first report of this threshold in this window (across replicas)."""
        q = (
            self._insert(BUDGET_ALERTS)
            .values(
                budget_id=budget_id,
                window_key=window_key,
                at_pct=float(at_pct),
                spent_usd=float(spent_usd),
                ceiling_usd=float(ceiling_usd),
                ts=ts,
            )
            .on_conflict_do_nothing(index_elements=["budget_id", "window_key", "at_pct"])
            .returning(*BUDGET_ALERTS.c)
        )
        async with self._chained() as conn:
            first = (await conn.execute(q)).mappings().first()
            if first is not None:
                await self.chain_append(conn, [(BUDGET_ALERTS.name, dict(first), chain.PUT, "")])
        return first is not None

    async def _fetch(self, q: Select[Any]) -> list[dict[str, Any]]:
        async with self._connect(write=False) as conn:
            result = await conn.execute(q)
            return [dict(m) for m in result.mappings().all()]


def _kill_record(m: Mapping[Any, Any]) -> KillRecord:
    # SQLite's RETURNING hands back a whole-valued REAL as an int; keep ts a float everywhere.
    return KillRecord(
        id=m["id"],
        session_id=m["session_id"],
        actor=m["actor"],
        reason=m["reason"],
        ts=float(m["ts"]),
    )


_CALL_COLUMNS = tuple(c.name for c in CALLS.columns)


def _add_missing_columns(sync_conn: Any) -> None:
    """A ledger made by an older Governor gains the nullable columns added since (no data is
    rewritten); `create_all` only creates tables that do not exist yet."""
    insp = inspect(sync_conn)
    for table in LEDGER_TABLES:
        if not insp.has_table(table.name, schema=table.schema):
            continue
        have = {c["name"] for c in insp.get_columns(table.name, schema=table.schema)}
        for col in table.columns:
            if col.name in have or not col.nullable:
                continue
            kind = col.type.compile(dialect=sync_conn.dialect)
            name = sync_conn.dialect.identifier_preparer.format_table(table)
            sync_conn.execute(text(f'ALTER TABLE {name} ADD COLUMN "{col.name}" {kind}'))
        for index in table.indexes:  # and the (small tables') indexes added since
            if index.name in _LATE_INDEXES:
                sync_conn.execute(CreateIndex(index, if_not_exists=True))
    for name in _DROPPED_INDEXES:
        sync_conn.execute(text(f"DROP INDEX IF EXISTS {name}"))


# Indexes added to tables that already shipped, created at start where missing; only on small
# tables (an index build on `calls` at start-up would hold every replica's start).
_LATE_INDEXES = frozenset({"ix_archived_sessions_archived_ts", "ix_archived_sessions_history_due"})
# Indexes that shipped and were taken back, dropped at start where present.
# `ix_ledger_chain_record` (tbl, record_key, id): verify's lookup of a row's latest link. Keyed
# by random record keys, it cost every call's chain link ~60 µs of the proxy's core (measured
# side by side: 1.22x rps without it) and more as the ledger grew; verify now builds that
# lookup itself, in one pass, when it runs (`audit.verify._build_latest`).
_DROPPED_INDEXES = ("ix_ledger_chain_record",)
_SQLITE_INSERT_CALLS = (
    "INSERT OR IGNORE INTO calls ("
    + ", ".join(f'"{c}"' for c in _CALL_COLUMNS)
    + ") VALUES ("
    + ", ".join("?" * len(_CALL_COLUMNS))
    + ")"
)
