"""`governor audit export --url` given an answer that is not an audit bundle (a --url pointing
at some other web server, a body cut or altered on the way) is one `error:` line and exit 1,
nothing written, not a BundleError traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_export_answer_that_is_not_a_bundle_is_one_error_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    page = site / "gateway" / "audit" / "sessions" / "s1" / "export"
    page.parent.mkdir(parents=True)
    page.write_text("<html><body>Welcome to nginx!</body></html>\n")
    port = _free_port()
    server = subprocess.Popen(  # a real web server that is not Governor, answering 200
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        out = tmp_path / "bundle.jsonl"
        r = subprocess.run(
            [sys.executable, "-m", "governor.cli", "audit", "export", "s1", "--out", str(out),
             "--url", f"http://127.0.0.1:{port}", "--key", "gk-dev-admin"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.terminate()
        server.wait(10)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "not a valid audit bundle" in lines[0] and "not JSON" in lines[0]
    assert not out.exists()
