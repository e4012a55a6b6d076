"""A proxy for the provider-fidelity tests: the sample config plus virtual models whose
timeouts are short enough to test stalls quickly (seed-shaped: a primary, fallbacks in order)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.proxy.conftest import DEV_KEY
from tests.support.servers import InProcessProxy, make_config_dir

OVERLAY = {
    "zz-fidelity-routing.yaml": """
# intent-fast's shape with its 8 s timeout scaled down to 800 ms (tests must not wait 12 s).
name: f-fast
type: gateway-load-balancing-config
retries: 0
rules:
  - id: primary
    target: {provider: anthropic, model: claude-sonnet-4-6}
    timeout_ms: 800
fallbacks:
  - {provider: openai, model: gpt-4o-mini}
---
name: f-fast-openai
type: gateway-load-balancing-config
retries: 0
rules:
  - id: primary
    target: {provider: openai, model: gpt-4.1, timeout_ms: 800}
fallbacks:
  - {provider: anthropic, model: claude-haiku-4-5}
---
name: f-retry
type: gateway-load-balancing-config
retries: 2
retry_backoff_ms: 50
retry_max_wait_ms: 3000
rules:
  - id: only
    target: {provider: openai, model: gpt-4o, timeout_ms: 5000}
---
name: f-no-usage
type: gateway-load-balancing-config
rules:
  - id: only
    target: {provider: vertex, model: gemini-2.0-flash, timeout_ms: 5000}
---
name: f-no-usage-anthropic
type: gateway-load-balancing-config
rules:
  - id: only
    target: {provider: anthropic, model: claude-haiku-4-5, timeout_ms: 5000}
""",
}


async def start_fidelity_proxy(sim: SimServer, tmp: Path) -> InProcessProxy:
    cfg = make_config_dir(tmp / "config", OVERLAY)
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    return await InProcessProxy(cfg, tmp / "data", sim.base_url).start()


def oai(proxy: InProcessProxy, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url + "/v1", api_key=DEV_KEY, max_retries=0,
                              default_headers=headers)


def ant(proxy: InProcessProxy, **headers: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.base_url, api_key=DEV_KEY, max_retries=0,
                                    default_headers=headers)


def fidelity_fixtures(name: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(module-scoped proxy fixture, autouse per-test cleanup): a module binds them as
    `fp, clean = fidelity_fixtures("x")`. Each test starts with no simulator faults and closed
    breakers (both would carry over from the previous test otherwise)."""

    @pytest_asyncio.fixture(loop_scope="session", scope="module")
    async def fp(sim: SimServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[InProcessProxy]:
        p = await start_fidelity_proxy(sim, tmp_path_factory.mktemp(f"fidelity-{name}"))
        yield p
        await p.stop()

    @pytest.fixture(autouse=True)
    def clean(sim: SimServer, fp: InProcessProxy) -> Iterator[None]:
        assert fp.gw is not None
        sim.clear_faults()
        fp.gw.router.breakers.clear()
        yield
        sim.clear_faults()

    return fp, clean
