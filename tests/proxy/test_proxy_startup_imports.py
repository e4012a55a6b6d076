"""The standalone proxy starts without the libraries only other roles or rare paths need.

Every replica pays for what it imports in resident memory (the proxy benchmark's RSS bar is
120 MB): Temporal's SDK (gRPC, protobuf) belongs to workers, obstore to the archive's first
write, cryptography to a deployment that encrypts its archive. Started here as `governor proxy`
on the sample config (archive on, in its embedded default directory), the modules it holds
once it serves are read from inside the process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.servers import REPO, free_port, make_config_dir

# Runs `governor proxy` in this process; once its port answers, writes the loaded modules'
# names to the file named by argv[1] and exits.
_PROBE = r"""
import json, os, socket, sys, threading, time
out = sys.argv[1]
port = int(sys.argv[sys.argv.index("--port") + 1])
def probe():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(1.0)  # background jobs started with the server have run their first steps
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
    os._exit(0)
threading.Thread(target=probe, daemon=True).start()
sys.argv = ["governor"] + sys.argv[2:]
from governor.cli import main
main()
"""


def test_the_proxy_serves_without_importing_temporal_obstore_or_cryptography(tmp_path: Path):
    cfg = make_config_dir(tmp_path / "config")
    out = tmp_path / "modules.json"
    port = free_port()
    env = {"GOVERNOR_SIM_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", _PROBE, str(out), "proxy", "--config", str(cfg),
           "--port", str(port), "--data-dir", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert out.exists(), done.stderr[-2000:]
    modules = set(json.loads(out.read_text()))
    assert "proxy.app" in modules and "audit.archive" in modules  # it did start, archive on
    heavy = sorted(
        m for m in modules if m.split(".")[0] in {"temporalio", "obstore", "cryptography", "grpc"}
    )
    assert heavy == []


def test_the_proxy_serves_without_importing_its_admin_api_or_control_room(tmp_path: Path):
    """The admin API and the control room are imported on their first request (`proxy.app`):
    ~45 modules a replica that only proxies calls never needs in memory."""
    cfg = make_config_dir(tmp_path / "config")
    out = tmp_path / "modules.json"
    port = free_port()
    env = {"GOVERNOR_SIM_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", _PROBE, str(out), "proxy", "--config", str(cfg),
           "--port", str(port), "--data-dir", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert out.exists(), done.stderr[-2000:]
    modules = set(json.loads(out.read_text()))
    assert "proxy.app" in modules and "proxy.llm_routes" in modules  # it did start
    lazy = {"proxy.admin", "proxy.control_room", "proxy.control_room_routes", "proxy.sessions",
            "proxy.alert_routes", "proxy.audit_routes", "controlroom.page"}  # fmt: skip
    assert sorted(lazy & modules) == []
