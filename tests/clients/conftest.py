"""The real-client tier: Governor (in-process proxy on the sample config) and the simulator,
plus the installed client programs, run as child processes in throwaway directories."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.clients.installs import install_npm, install_pip
from tests.support.servers import InProcessProxy, make_config_dir

DEV_KEY = "gk-dev-developer"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return install_npm()


@pytest.fixture(scope="session")
def client_python() -> Path:
    return install_pip()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest.fixture(scope="session")
def clients_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_config_dir(tmp_path_factory.mktemp("clients-config"))  # the sample config


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def gov(sim: SimServer, clients_config: Path,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    p = InProcessProxy(clients_config, tmp_path_factory.mktemp("clients-data"), sim.base_url)
    await p.start()
    yield p
    await p.stop()


@dataclass
class Run:
    code: int
    out: str
    err: str


async def run(cmd: list[str], cwd: Path, env: dict[str, str], limit_s: float = 180) -> Run:
    """A client program as a child process, without blocking the proxy's event loop."""
    full = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", **env}
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, env=full, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    return Run(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


async def calls_of(gov: InProcessProxy, session_id: str) -> list:
    assert gov.gw is not None
    await gov.gw.writer.flush()
    return await gov.gw.store.calls_for_session(session_id)
