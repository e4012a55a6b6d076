from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir

# Test-only config beside the sample: each control scoped to its own project or workflow tag, so
# one gateway serves every test without the tests touching each other's counters.
OVERLAY = {
    "zz-test-limits.yaml": """
type: gateway-rate-limit-config
name: test-limits
rules:
  - id: t-hard
    when: {metadata: {X-Governor-Workflow-Tag: t-hard}}
    limit: {requests: 2, window: 1h}
    scope: workflow_tag
    on_breach: hard_block
  - id: t-queue
    when: {metadata: {X-Governor-Workflow-Tag: t-queue}}
    limit: {requests: 1, window: 1h}
    scope: workflow_tag
    on_breach: queue_then_429
    queue_timeout_ms: 300
  - id: t-queue-ok
    when: {metadata: {X-Governor-Workflow-Tag: t-queue-ok}}
    limit: {requests: 1, window: 1s}
    scope: workflow_tag
    on_breach: queue_then_429
    queue_timeout_ms: 1500
  - id: t-fallback
    when: {metadata: {X-Governor-Workflow-Tag: t-fallback}}
    limit: {requests: 1, window: 1h}
    scope: workflow_tag
    on_breach: fallback_to_haiku
  - id: t-retry-long
    when: {metadata: {X-Governor-Workflow-Tag: t-retry-long}}
    limit: {requests: 1, window: 1d}
    scope: workflow_tag
    on_breach: hard_block
  - id: t-embed
    when: {metadata: {X-Governor-Workflow-Tag: t-embed}}
    limit: {requests: 1, window: 1d}
    scope: workflow_tag
    on_breach: hard_block
  - id: t-retry-short
    when: {metadata: {X-Governor-Workflow-Tag: t-retry-short}}
    limit: {requests: 1, window: 30s}
    scope: workflow_tag
    on_breach: hard_block
  - id: t-session-ceiling
    when: {metadata: {X-Governor-Workflow-Tag: t-ceiling}}
    limit: {tokens: 300, window: 1h}
    scope: session
    on_breach: hard_block
""",
    "zz-test-budgets.yaml": """
type: gateway-budget-config
name: test-budgets
budgets:
  - id: t-tiny
    scope: {metadata: {X-Governor-Project: t-tiny}}
    ceiling_usd: 0.0002
    window: daily
    alerts: [{at_pct: 50, notify: ["log"]}, {at_pct: 100, notify: ["log"]}]
    on_exceed: hard_block
  - id: t-cheaper
    scope: {metadata: {X-Governor-Project: t-cheaper}}
    ceiling_usd: 0.004
    window: monthly
    on_exceed: fallback_to_cheaper
  - id: t-exact
    scope: {metadata: {X-Governor-Project: t-exact}}
    ceiling_usd: 1000
    window: monthly
    on_exceed: hard_block
""",
    "zz-test-routing.yaml": """
name: t-breaker
type: gateway-load-balancing-config
retries: 0
rules:
  - id: primary
    target: {provider: openai, model: gpt-4o, timeout_ms: 2000}
fallbacks:
  - {provider: anthropic, model: claude-haiku-4-5}
circuit_breaker: {failure_threshold: 3, window_seconds: 60, cooldown_seconds: 1}
---
name: t-anthropic-first
type: gateway-load-balancing-config
rules:
  - id: a
    target: {provider: anthropic, model: claude-sonnet-4-6, timeout_ms: 5000}
fallbacks:
  - {provider: openai, model: gpt-4o-mini}
---
name: t-openai-first
type: gateway-load-balancing-config
rules:
  - id: o
    target: {provider: openai, model: gpt-4o, timeout_ms: 5000}
fallbacks:
  - {provider: anthropic, model: claude-haiku-4-5}
---
name: t-slow
type: gateway-load-balancing-config
retries: 0
rules:
  - id: s
    target: {provider: openai, model: gpt-4.1, timeout_ms: 300}
""",
}

DEV_KEY = "gk-dev-developer"
ADMIN_KEY = "gk-dev-admin"
INTERN_KEY = "gk-dev-intern"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest.fixture(scope="session")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_config_dir(tmp_path_factory.mktemp("config"), OVERLAY)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def proxy(sim: SimServer, config_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    p = InProcessProxy(config_dir, tmp_path_factory.mktemp("proxydata"), sim.base_url)
    await p.start()
    yield p
    await p.stop()
