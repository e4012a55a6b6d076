"""The standalone proxy shares its malloc arenas among its threads (`cap_malloc_arenas`).

glibc gives each allocating thread an arena of its own (up to 8 per core); the proxy's ~10
threads each kept partly-used pages, ~5 MB of its peak RSS under the benchmark. Started here
as `governor proxy` on the sample config, the serving process reports its arenas itself
(glibc's `malloc_stats`, on its stderr) once its port answers and its threads have started.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.server import MALLOC_ARENAS
from tests.support.servers import REPO, free_port, make_config_dir

try:
    ctypes.CDLL(None).malloc_stats  # noqa: B018  (glibc only)
except (OSError, AttributeError):
    pytest.skip("glibc's malloc_stats is needed", allow_module_level=True)

_PROBE = r"""
import ctypes, os, socket, sys, threading, time
port = int(sys.argv[sys.argv.index("--port") + 1])
def probe():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(1.0)  # the ledger's threads and the server's have started and allocated
    sys.stderr.write("THREADS %d\n" % len(os.listdir("/proc/self/task")))
    sys.stderr.flush()
    ctypes.CDLL(None).malloc_stats()
    os._exit(0)
threading.Thread(target=probe, daemon=True).start()
sys.argv = ["governor"] + sys.argv[1:]
from governor.cli import main
main()
"""


def test_the_serving_proxy_uses_at_most_its_capped_malloc_arenas(tmp_path: Path):
    cfg = make_config_dir(tmp_path / "config")
    port = free_port()
    env = {"GOVERNOR_SIM_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", _PROBE, "proxy", "--config", str(cfg),
           "--port", str(port), "--data-dir", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    threads = re.search(r"^THREADS (\d+)$", done.stderr, re.M)
    assert threads, done.stderr[-2000:]
    assert int(threads.group(1)) > MALLOC_ARENAS + 2  # threads enough to have had more arenas
    arenas = re.findall(r"^Arena \d+:$", done.stderr, re.M)
    assert 1 <= len(arenas) <= MALLOC_ARENAS, done.stderr[-2000:]


def test_threads_share_the_capped_arenas_in_a_process_of_their_own():
    """What the proxy's start does, alone: 6 threads allocating at once share the arenas."""
    code = (
        "import ctypes, threading\n"
        "from proxy.server import cap_malloc_arenas\n"
        "assert cap_malloc_arenas()\n"
        "b = threading.Barrier(7); keep = []\n"
        "def t():\n"
        "    keep.append([bytearray(3000) for _ in range(100)]); b.wait()\n"
        "ts = [threading.Thread(target=t) for _ in range(6)]\n"
        "[x.start() for x in ts]; b.wait(); [x.join() for x in ts]\n"
        "ctypes.CDLL(None).malloc_stats()\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    assert 1 <= len(re.findall(r"^Arena \d+:$", done.stderr, re.M)) <= MALLOC_ARENAS


def test_an_operators_malloc_arena_max_is_left_as_set(monkeypatch: pytest.MonkeyPatch):
    from proxy.server import cap_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_malloc_arenas() is False
