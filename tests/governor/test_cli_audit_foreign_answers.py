"""`governor audit` commands with --url given answers a Governor would never send (a JSON API
of another shape, e.g. {"error": "not found"}, or a 200 of JSON that is not an object): one
`error:` line and exit 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _server(status: int, body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name for it
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize(("status", "body", "says"), [
    (404, b'{"error": "not found"}', "404"),  # another API's error shape
    (500, b'["oops"]', "500"),
    (200, b"null\n", "not a valid audit bundle"),  # JSON, but not a bundle's manifest object
    (200, b"[1, 2]\n", "not a valid audit bundle"),
])
def test_a_foreign_answer_is_one_error_line(tmp_path: Path, status: int, body: bytes,
                                           says: str) -> None:
    srv = _server(status, body)
    out = tmp_path / "bundle.jsonl"
    try:
        r = subprocess.run(
            [sys.executable, "-m", "governor.cli", "audit", "export", "s1", "--out", str(out),
             "--url", f"http://127.0.0.1:{srv.server_port}", "--key", "gk-dev-admin"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert not out.exists()


def test_sessions_show_given_another_apis_error_shape_is_one_error_line() -> None:
    srv = _server(404, b'{"error": "not found"}')
    try:
        r = subprocess.run(
            [sys.executable, "-m", "governor.cli", "sessions", "show", "s1",
             "--url", f"http://127.0.0.1:{srv.server_port}", "--key", "gk-dev-admin"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 404"), r.stderr
