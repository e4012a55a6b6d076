"""`POST /v1/embeddings` through the proxy: governed like any call, costed by input tokens."""

from __future__ import annotations

import httpx
import openai
import pytest

from policies.pricing import call_cost
from tests.proxy.conftest import DEV_KEY
from tests.proxy.test_proxy_sdks import oai

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_embeddings_are_served_costed_by_input_tokens_and_booked(proxy):
    client = oai(proxy, **{"X-Governor-Project": "p-embed", "X-Governor-Session-ID": "emb-1"})
    raw = await client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["the quick brown fox", "jumps"])
    r = raw.parse()
    assert len(r.data) == 2 and len(r.data[0].embedding) == 1536
    assert raw.headers["x-governor-virtual-model"] == "embed"
    price = proxy.gw.config.prices["text-embedding-3-small"]
    expected = call_cost(price, r.model, r.usage.prompt_tokens, 0, 0, 0)
    assert float(raw.headers["x-governor-cost-usd"]) == pytest.approx(expected, abs=1e-10)
    await proxy.gw.writer.flush()
    row = await proxy.gw.store.get_call(raw.headers["x-governor-call-id"])
    assert row is not None and row.project == "p-embed" and row.session_id == "emb-1"
    assert row.input_tokens == r.usage.prompt_tokens and row.output_tokens == 0
    assert row.cost_usd == pytest.approx(expected, abs=1e-12) and row.virtual_model == "embed"


async def test_embeddings_refusals_are_clear(proxy):
    with pytest.raises(openai.BadRequestError) as e:
        await oai(proxy).embeddings.create(model="haiku", input="x")  # Anthropic only
    assert "embeddings" in str(e.value)
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        auth = {"Authorization": f"Bearer {DEV_KEY}"}
        for bad in ({"model": "embed"}, {"model": "embed", "input": []},
                    {"model": "embed", "input": [""]}, {"model": "embed", "input": [1.5]},
                    {"model": "embed", "input": "x", "stream": True}):
            r = await h.post("/v1/embeddings", headers=auth, json=bad)
            assert r.status_code == 400, bad
        r = await h.post("/v1/embeddings", headers={"Authorization": "Bearer nope"},
                         json={"model": "embed", "input": "x"})
        assert r.status_code == 401
    limited = oai(proxy, **{"X-Governor-Workflow-Tag": "t-embed"})  # 1 request per day
    await limited.embeddings.create(model="embed", input="x")
    with pytest.raises(openai.RateLimitError) as e:
        await limited.embeddings.create(model="embed", input="x")
    assert "rate_limited" in str(e.value)
