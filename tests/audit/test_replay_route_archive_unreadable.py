"""The replay record route (`GET /gateway/audit/sessions/{id}/decisions`) reading a session's
workflow histories from an archive it cannot read (a damaged or foreign index, an altered or
missing object, a wrong key) answers 503 archive_unreadable, as show, export and erase do,
never a 500 with a traceback."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from activities.archive_session import attach_archive
from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir

ADMIN = {"authorization": "Bearer gk-dev-admin"}


async def test_decisions_route_with_an_unreadable_archive_is_a_clear_503(tmp_path: Path) -> None:
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(make_config_dir(tmp_path / "config"), tmp_path / "data",
                                 sim.base_url).start()
        try:
            gw = p.gw
            assert gw is not None
            attach_archive(gw, tmp_path / "data", job=False)
            sid = f"replay-arch-{uuid.uuid4().hex[:8]}"
            gw.writer.record_call({  # a turn of a session workflow: replay wants its history
                "call_id": f"{sid}-1", "ts": time.time(), "path": "workflow",
                "protocol": "openai", "decision": "allowed", "session_id": sid,
                "virtual_model": "support-cheap"})
            assert await gw.archive.write_index(sid, {"version": 1, "format": "not-governor"})
            async with httpx.AsyncClient(base_url=p.base_url, timeout=60) as h:
                r = await h.get(f"/gateway/audit/sessions/{sid}/decisions", headers=ADMIN)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "archive_unreadable"
            assert "not a Governor archive index" in err["message"]
        finally:
            await p.stop()
