"""A throw-away PostgreSQL database per test run, on the server named by GOVERNOR_TEST_PG_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

PG_URL = os.environ.get("GOVERNOR_TEST_PG_URL")


def require_pg() -> str:
    if not PG_URL:
        pytest.skip("GOVERNOR_TEST_PG_URL is not set (.ci/run sets it to the local PostgreSQL)")
    return PG_URL


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    base = require_pg()
    name = f"governor_t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    head, _, _ = base.rpartition("/")
    try:
        yield f"{head}/{name}"
    finally:
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
