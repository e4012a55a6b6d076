"""The proxy serves the seed's three gateway YAML files, unchanged, beside the sample's
providers, pricing and keys (and the same with `timeout_ms` moved inside `target:`)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.proxy.conftest import DEV_KEY
from tests.support.servers import EXAMPLES, InProcessProxy

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "yaml"
SEED_FILES = ("routing-config.yaml", "rate-limit-config.yaml", "budget-config.yaml")

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(not SEEDS.is_dir(), reason="seed YAML not present"),
]


def seed_dir(dest: Path, move_timeout: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("providers.yaml", "pricing.yaml", "keys.yaml"):
        shutil.copy(EXAMPLES / name, dest / name)
    for name in SEED_FILES:
        text = (SEEDS / name).read_text()
        if move_timeout and name == "routing-config.yaml":
            text = text.replace("\n    timeout_ms: 8000", "\n      timeout_ms: 8000")
        (dest / name).write_text(text)
    return dest


@pytest_asyncio.fixture(loop_scope="session", params=["on-rule", "inside-target"])
async def seed_proxy(request: pytest.FixtureRequest, sim: SimServer,
                     tmp_path: Path) -> AsyncIterator[InProcessProxy]:
    cfg = seed_dir(tmp_path / "config", move_timeout=request.param == "inside-target")
    p = InProcessProxy(cfg, tmp_path / "data", sim.base_url)
    (tmp_path / "data").mkdir()
    await p.start()
    assert p.gw is not None
    rules = p.gw.config.virtual_models["intent-fast"].rules
    assert [r.target.timeout_ms for r in rules] == [8000, 8000]
    yield p
    await p.stop()


async def test_the_seed_config_serves_intent_fast_to_both_sdks(seed_proxy: InProcessProxy):
    headers = {"X-TFY-Project": "platform-search", "X-TFY-Environment": "production",
               "X-TFY-Session-ID": "seed-s1"}
    oai = openai.AsyncOpenAI(base_url=seed_proxy.base_url + "/v1", api_key=DEV_KEY,
                             max_retries=0, default_headers=headers)
    raw = await oai.chat.completions.with_raw_response.create(
        model="intent-fast", messages=[{"role": "user", "content": "classify: refund"}])
    assert raw.http_response.status_code == 200
    assert raw.headers["x-governor-route"] in (
        "anthropic/claude-haiku-4-5", "bedrock/anthropic.claude-haiku-4-5")
    assert raw.parse().choices[0].message.content
    ant = anthropic.AsyncAnthropic(base_url=seed_proxy.base_url, api_key=DEV_KEY, max_retries=0,
                                   default_headers=headers)
    async with ant.messages.stream(model="intent-fast", max_tokens=32,
                                   messages=[{"role": "user", "content": "classify: hi"}]) as s:
        final = await s.get_final_message()
    assert final.content[0].text and final.usage.output_tokens > 0
