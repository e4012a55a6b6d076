"""The SIMULATED guardrail classifier: its service endpoints, their fault controls and bad input,
and the judge's verdicts from both chat protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import orjson
import pytest

from policies.guardrails.classifiers import judge_messages, parse_judge_answer
from simulator import SimServer


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as server:
        yield server


@pytest.fixture
async def http(sim: SimServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url) as h:
        yield h
        await h.delete("/_sim/classifier")


async def test_generic_lakera_and_presidio_shapes(http: httpx.AsyncClient) -> None:
    r = await http.post("/classify", json={"text": "x SIM-UNSAFE:jailbreak y SIM-UNSAFE"})
    assert r.json() == {"flagged": True, "categories": ["jailbreak", "prompt_injection"],
                        "score": 0.97, "simulated": True}  # fmt: skip
    assert r.headers["x-governor-simulated"] == "true"
    r = await http.post("/classify", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["flagged"] is False
    r = await http.post("/analyze", json={"text": "call SIM-UNSAFE:person", "language": "en"})
    assert r.json() == [{"entity_type": "PERSON", "start": 5, "end": 22, "score": 0.85}]


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"text": 1}', b'{"messages": [{"content": 2}]}']
)
async def test_bad_input_is_a_400(http: httpx.AsyncClient, body: bytes) -> None:
    r = await http.post("/classify", content=body)
    assert r.status_code == 400 and "error" in r.json()


async def test_faults_apply_for_count_requests_then_stop(
    http: httpx.AsyncClient, sim: SimServer
) -> None:
    r = await http.post("/_sim/classifier", json={"status": 502, "count": 1})
    assert r.json()["status"] == 502
    before = sim.state.by_endpoint["classifier"]
    assert (await http.post("/classify", json={"text": "a"})).status_code == 502
    assert (await http.post("/classify", json={"text": "a"})).status_code == 200
    assert sim.state.by_endpoint["classifier"] == before + 2
    await http.post("/_sim/classifier", json={"garbled": True})
    r = await http.post("/classify", json={"text": "a"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    await http.post("/_sim/classifier", json={"oversize": True})
    assert len((await http.post("/analyze", json={"text": "a"})).content) > 1 << 20


@pytest.mark.parametrize(
    "body",
    [{"status": 200}, {"latency_ms": -1}, {"count": "1"}, {"garbled": "yes"}, {"hang": True}, []],
)
async def test_bad_fault_specs_are_refused(http: httpx.AsyncClient, body: object) -> None:
    r = await http.post("/_sim/classifier", content=orjson.dumps(body))
    assert r.status_code == 400


async def test_the_judge_prompt_gets_a_strict_verdict_in_both_protocols(sim: SimServer) -> None:
    oai = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0)
    msgs = judge_messages("please SIM-UNSAFE:jailbreak now", "00ff")
    out = await oai.chat.completions.create(model="gpt-4o-mini", messages=msgs)  # type: ignore[arg-type]
    v = parse_judge_answer(out.choices[0].message.content or "")
    assert (v.flagged, v.categories, v.score) == (True, ("jailbreak",), 0.97)
    claude = anthropic.AsyncAnthropic(base_url=sim.anthropic_base_url, api_key="k", max_retries=0)
    msg = await claude.messages.create(
        model="claude-haiku-4-5", max_tokens=64, system=msgs[0]["content"],
        messages=[{"role": "user", "content": msgs[1]["content"]}],
    )  # fmt: skip
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert parse_judge_answer(text).categories == ("jailbreak",)
    garbled = judge_messages("SIM-JUDGE-GARBLED", "00ff")
    out = await oai.chat.completions.create(model="gpt-4o-mini", messages=garbled)  # type: ignore[arg-type]
    assert "verdict" not in (out.choices[0].message.content or "")
    # an ordinary chat is not a judge request
    plain = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "SIM-UNSAFE hi"}]
    )
    assert "verdict" not in (plain.choices[0].message.content or "")
