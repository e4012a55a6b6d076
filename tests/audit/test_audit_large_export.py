"""A large session (rows inserted straight into a real SQLite ledger) exported and shown
through the admin API: the bundle is built off the event loop and streamed, `/healthz` keeps
answering meanwhile, memory stays bounded, and the bundle verifies against its manifest;
`show` answers one page with how many more; past `archive.max_export_calls` is a 413."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from activities.archive_session import attach_archive
from audit.bundle import parse_bundle
from simulator.server import SimServer
from tests.audit.test_audit_proxy_sessions import AUDITOR, DEV, KEYS, _auth, _calls
from tests.support.servers import InProcessProxy, make_config_dir

N_CALLS = 30_000


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[InProcessProxy]:
    async with SimServer(port=0) as sim:
        cfg = make_config_dir(tmp_path / "config", {"zz-auditor.yaml": KEYS})
        gw_yaml = (cfg / "gateway.yaml").read_text()
        (cfg / "gateway.yaml").write_text(gw_yaml + "archive:\n  max_export_calls: 40000\n")
        p = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
        assert p.gw is not None
        attach_archive(p.gw, tmp_path / "data", job=False)
        try:
            yield p
        finally:
            await p.stop()


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _clone_calls(db: Path, sid: str, n: int, tag: str = "c") -> None:
    """`n` copies of the session's one real call row, each its own call id and time."""
    con = sqlite3.connect(db)
    try:
        con.row_factory = sqlite3.Row
        row = dict(con.execute("SELECT * FROM calls WHERE session_id = ? LIMIT 1",
                               (sid,)).fetchone())
        cols = list(row)
        t0 = float(row["ts"])
        rows = []
        for i in range(n):
            r = dict(row, call_id=f"{sid}-{tag}{i:06d}", ts=t0 + 0.001 * (i + 1))
            rows.append(tuple(r[c] for c in cols))
        con.executemany(
            f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows
        )
        con.commit()
    finally:
        con.close()


async def test_a_large_session_exports_streamed_off_the_loop_with_healthz_answering(
    proxy: InProcessProxy, tmp_path: Path
) -> None:
    gw = proxy.gw
    assert gw is not None
    sid = f"p-big-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=300) as c:
        await _calls(c, sid, ["the first question"])
        await gw.writer.flush()
        await asyncio.to_thread(_clone_calls, tmp_path / "data" / "ledger.db", sid, N_CALLS)

        gaps: list[float] = []
        done = asyncio.Event()

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=proxy.base_url, timeout=60) as h:
                while not done.is_set():
                    t = time.perf_counter()
                    r = await h.get("/healthz")
                    assert r.status_code == 200
                    gaps.append(time.perf_counter() - t)
                    await asyncio.sleep(0.02)

        rss0 = _rss_kb()
        peak = rss0
        prober = asyncio.create_task(probe())
        out = tmp_path / "bundle.jsonl"
        chunks = 0
        async with c.stream("GET", f"/gateway/audit/sessions/{sid}/export",
                            headers=_auth(AUDITOR)) as r:
            assert r.status_code == 200
            with out.open("wb") as f:
                async for chunk in r.aiter_raw():
                    f.write(chunk)
                    chunks += 1
                    peak = max(peak, _rss_kb())
        done.set()
        await prober
        bundle = parse_bundle(out.read_bytes())
        assert bundle.manifest["counts"]["call"] == N_CALLS + 1
        ids = [c["call_id"] for c in bundle.records["call"]]
        assert len(set(ids)) == N_CALLS + 1  # read page by page: none twice, none missed
        assert ids[1:] == [f"{sid}-c{i:06d}" for i in range(N_CALLS)]  # in time order
        assert chunks > 1  # streamed, not one body
        size_mb = out.stat().st_size / 2**20
        print(f"bundle {size_mb:.1f} MB; healthz max {max(gaps) * 1000:.0f} ms over "
              f"{len(gaps)} probes; rss +{(peak - rss0) / 1024:.0f} MB")
        assert len(gaps) >= 3
        assert max(gaps) < 5.0  # generous: the loop was never held for the export
        assert (peak - rss0) < 1024 * 1024  # KB: bounded well below a gigabyte

        # show: one page, and how many more
        r = await c.get(f"/gateway/audit/sessions/{sid}?limit=50", headers=_auth(AUDITOR))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert len(doc["entries"]) == 50
        assert doc["total_entries"] >= N_CALLS + 1 and doc["more"] == doc["total_entries"] - 50
        assert doc["session"]["calls"] == N_CALLS + 1
        r = await c.get(f"/gateway/audit/sessions/{sid}?limit=99999", headers=_auth(AUDITOR))
        assert r.status_code == 400

        # past archive.max_export_calls: a clear 413 before any row is read
        await asyncio.to_thread(_clone_calls, tmp_path / "data" / "ledger.db", sid, 10_001, "x")
        for path in (f"/gateway/audit/sessions/{sid}/export", f"/gateway/audit/sessions/{sid}"):
            r = await c.get(path, headers=_auth(AUDITOR))
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "export_too_large"
            assert "max_export_calls" in r.json()["error"]["message"]
        r = await c.get(f"/gateway/audit/sessions/{sid}/export", headers=_auth(DEV))
        assert r.status_code == 403



async def test_export_bounds_bytes_and_archived_calls_before_reading_them(tmp_path: Path) -> None:
    from activities.archive_session import archive_one
    from audit.archive import Archive
    from audit.offloop import ExportTooLarge, Source, build_export, build_show
    from ledger.store import LedgerStore
    from policies.config.models import ArchiveSettings
    from tests.audit.test_archive_store import NOW, _session

    live_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    empty_url = f"sqlite:///{tmp_path / 'empty.db'}"
    archive = Archive.from_settings(ArchiveSettings(), tmp_path)
    store = await LedgerStore.open(live_url)
    await (await LedgerStore.open(empty_url)).close()
    try:
        sid = f"s-bound-{uuid.uuid4().hex[:6]}"
        await _session(store, sid, calls=3)
        await archive_one(store, archive, sid, [], NOW + 20)
    finally:
        await store.close()
    live = Source(live_url, None, archive)
    with pytest.raises(ExportTooLarge, match="max_export_bytes"):
        await build_export(live, sid, [], max_bytes=600)
    got = await build_export(live, sid, [], max_bytes=10**6)
    assert got is not None
    head, body = got
    with body:
        bundle = parse_bundle(head + body.read())
    assert bundle.manifest["source"] == "ledger" and len(bundle.records["call"]) == 3
    assert [c["call_id"] for c in bundle.records["call"]] == [f"{sid}-c{i}" for i in range(3)]
    # Only the archive has it: its index's call count is checked before a blob is read.
    gone = Source(empty_url, None, archive)
    with pytest.raises(ExportTooLarge, match="3 archived calls"):
        await build_export(gone, sid, [], max_bytes=10**6, max_calls=2)
    with pytest.raises(ExportTooLarge, match="3 archived calls"):
        await build_show(gone, sid, [], 0, 10, max_calls=2)
    got = await build_export(gone, sid, [], max_bytes=10**6, max_calls=3)
    assert got is not None
    head, body = got
    with body:
        bundle = parse_bundle(head + body.read())
    assert bundle.manifest["source"] == "archive" and len(bundle.records["call"]) == 3
