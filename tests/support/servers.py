"""Real servers on loopback for tests: the proxy under uvicorn, in this process or another."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import uvicorn

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from proxy.app import ProxyApp
from proxy.server import uvicorn_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "config"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config_dir(dest: Path, overlay: dict[str, str] | None = None) -> Path:
    """The sample config plus test-only files (small budgets, strict limits)."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in EXAMPLES.glob("*.yaml"):
        shutil.copy(p, dest / p.name)
    for name, text in (overlay or {}).items():
        (dest / name).write_text(text)
    return dest


class InProcessProxy:
    """A Gateway + uvicorn on a free port in the running event loop."""

    def __init__(self, config_dir: Path, data_dir: Path, sim_url: str,
                 ledger_url: str | None = None, replica: str = "proxy") -> None:
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.sim_url = sim_url
        self.ledger_url = ledger_url or f"sqlite:///{data_dir / 'ledger.db'}"
        self.replica = replica
        self.port = free_port()
        self.gw: Gateway | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._env_before: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> InProcessProxy:
        # Put back on stop: a config reload in a later test expands ${GOVERNOR_SIM_URL} again,
        # and must not find this (by then stopped) simulator's address.
        self._env_before = os.environ.get("GOVERNOR_SIM_URL")
        os.environ["GOVERNOR_SIM_URL"] = self.sim_url
        config = load_config_dir(self.config_dir)
        self.gw = await Gateway.open(config, self.ledger_url,
                                     self.data_dir / f"journal-{self.replica}",
                                     config_dir=self.config_dir)
        app = ProxyApp(gateway=self.gw)
        cfg = uvicorn_config(app, "127.0.0.1", self.port)
        cfg.lifespan = "off"
        self._server = uvicorn.Server(cfg)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._task is not None:
                await self._task
        if self.gw is not None:
            await self.gw.close()
        if os.environ.get("GOVERNOR_SIM_URL") == self.sim_url:
            if self._env_before is None:
                os.environ.pop("GOVERNOR_SIM_URL", None)
            else:
                os.environ["GOVERNOR_SIM_URL"] = self._env_before


class SubprocessProxy:
    """`governor proxy` as a child process (for SIGKILL and multi-replica tests)."""

    def __init__(self, config_dir: Path, data_dir: Path, sim_url: str,
                 ledger_url: str | None = None, replica: str = "proxy",
                 env: dict[str, str] | None = None) -> None:
        self.config_dir, self.data_dir, self.sim_url = config_dir, data_dir, sim_url
        self.extra_env = env or {}
        self.ledger_url = ledger_url
        self.replica = replica
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> SubprocessProxy:
        env = dict(os.environ, GOVERNOR_SIM_URL=self.sim_url, **self.extra_env)
        cmd = [sys.executable, "-m", "governor.cli", "proxy", "--config", str(self.config_dir),
               "--port", str(self.port), "--data-dir", str(self.data_dir),
               "--replica", self.replica]
        if self.ledger_url:
            cmd += ["--ledger", self.ledger_url]
        self.log = open(self.data_dir / f"{self.replica}.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("proxy did not start in time")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
