"""The standalone proxy never loads temporalio (~35 MB of RSS): Temporal is imported only where
a workflow session or a workflow history is used (`governor up`, a proxy with TEMPORAL_ADDRESS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import asyncio, sys
from pathlib import Path
from proxy.server import make_app
# the modules the proxy's audit, control-room and session routes import when they answer
import audit.replay, audit.session_source, audit.bundle, proxy.audit_routes  # noqa: F401
import proxy.control_room_routes, proxy.sessions, activities.archive_session  # noqa: F401

d = Path(sys.argv[1])
app = make_app(Path(sys.argv[2]), f"sqlite:///{d / 'ledger.db'}", d / "journal")

async def main():
    msgs = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = []

    async def receive():
        return msgs.pop(0)

    async def send(m):
        sent.append(m["type"])
        if m["type"] == "lifespan.startup.complete":
            assert app.gw is not None and app.gw.session_workflows is None

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"], sent

asyncio.run(main())
print(sorted(m for m in sys.modules if m.split('.')[0] == 'temporalio'))
"""


def test_the_standalone_proxy_does_not_import_temporal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    args = [sys.executable, "-c", PROGRAM, str(tmp_path), str(ROOT / "examples" / "config")]
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
