"""Shared helpers for the ledger tests: real databases (a SQLite file, a PostgreSQL schema)."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from ledger.store import LedgerStore
from tests.support.tcp_relay import TcpRelay

PG_URL = os.environ.get("GOVERNOR_TEST_PG_URL")
NO_PG = "GOVERNOR_TEST_PG_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=NO_PG)],
    ),
]


def call_row(call_id: str, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "call_id": call_id,
        "ts": 1_700_000_000.0,
        "path": "proxy",
        "key_id": "k1",
        "user": "alice",
        "team": "search",
        "project": "atlas",
        "session_id": "sess-1",
        "workflow_tag": "triage",
        "environment": "prod",
        "cost_center": "cc-7",
        "protocol": "openai",
        "virtual_model": "intent-fast",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "model_version": "gpt-4o-mini-2024-07-18",
        "decision": "allowed",
        "status_code": 200,
        "stream": False,
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 5,
        "cache_write_tokens": 1,
        "cost_usd": 0.25,
        "latency_ms": 12.0,
        "upstream_ms": 10.0,
    }
    row.update(over)
    return row


class Target:
    """Where a test's ledger lives: a URL plus open() arguments, torn down afterwards."""

    def __init__(self, backend: str, url: str, schema: str | None) -> None:
        self.backend = backend
        self.url = url
        self.schema = schema

    async def open(self, **kw: Any) -> LedgerStore:
        return await LedgerStore.open(self.url, schema=self.schema, **kw)


@contextlib.asynccontextmanager
async def ledger_target(backend: str, tmp_path: Path) -> AsyncIterator[Target]:
    if backend == "sqlite":
        yield Target(backend, f"sqlite:///{tmp_path / 'ledger.db'}", None)
        return
    assert PG_URL is not None
    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    try:
        yield Target(backend, PG_URL, schema)
    finally:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Outage:
    """The target's database, reached through a URL that is unreachable until `end()`."""

    def __init__(self, target: Target, tmp_path: Path) -> None:
        self._forwarder: TcpRelay | None = None
        if target.backend == "sqlite":
            self._missing_dir = tmp_path / "not-yet"
            self.url = f"sqlite:///{self._missing_dir / 'ledger.db'}"
            return
        assert PG_URL is not None
        pg = make_url(PG_URL)
        port = free_port()
        self._forwarder = TcpRelay(pg.host or "127.0.0.1", pg.port or 5432, port)
        self.url = pg.set(port=port).render_as_string(hide_password=False)

    async def end(self) -> None:
        if self._forwarder is None:
            self._missing_dir.mkdir()
        else:
            await self._forwarder.start()

    async def close(self) -> None:
        if self._forwarder is not None:
            await self._forwarder.stop()
