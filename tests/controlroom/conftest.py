from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_config_dir(tmp_path_factory.mktemp("config"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def proxy(sim: SimServer, config_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    p = InProcessProxy(config_dir, tmp_path_factory.mktemp("proxydata"), sim.base_url)
    await p.start()
    yield p
    await p.stop()
