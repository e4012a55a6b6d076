"""Agent frameworks with their default OpenAI model clients, through Governor on the sample
config: the OpenAI Agents SDK (a function-tool agent, streamed and not), the Vercel AI SDK
(generateText, streamText, generateObject) and LangChain `with_structured_output`."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from simulator.server import SimServer
from tests.clients.conftest import DEV_KEY, calls_of, run
from tests.clients.installs import DIR
from tests.support.servers import InProcessProxy

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

PROGRAMS = Path(__file__).parent / "programs"


def env(gov: InProcessProxy, model: str, sid: str, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": gov.base_url + "/v1", "OPENAI_API_KEY": DEV_KEY, "MODEL": model,
            "SESSION_ID": sid, **extra}


@pytest.mark.parametrize("mode", ["run", "stream"])
@pytest.mark.parametrize(("model", "provider"), [("code-openai", "openai"),
                                                 ("haiku", "anthropic")])
async def test_agents_sdk_function_tool_agent(gov: InProcessProxy, sim: SimServer,
                                              client_python: Path, tmp_path: Path,
                                              mode: str, model: str, provider: str) -> None:
    note = tmp_path / "note.txt"
    note.write_text("the answer is 42\n")
    sid = f"agents-{uuid.uuid4().hex[:8]}"
    sim.add_fault(count=1, tool_call={"name": "read_note", "arguments": {"path": str(note)}})
    r = await run([str(client_python), str(PROGRAMS / "agents_sdk.py")], tmp_path,
                  env(gov, model, sid, MODE=mode, NOTE_PATH=str(note)))
    assert r.code == 0, r.err[-3000:]
    out = json.loads(r.out.strip().splitlines()[-1])
    assert out["final"] and "ToolCallOutputItem" in out["items"], out
    if mode == "stream":
        assert "raw_response_event" in out["events"]
    rows = await calls_of(gov, sid)
    assert len(rows) == 2 and all(x.status_code == 200 for x in rows)
    assert {x.client_tool for x in rows} == {"openai-agents"}
    assert {x.provider for x in rows} == {provider} and all(x.cost_usd > 0 for x in rows)
    assert all(x.stream == (mode == "stream") for x in rows)


@pytest.mark.parametrize("model", ["support-cheap", "intent-fast"])
async def test_vercel_ai_sdk_generate_stream_and_object(gov: InProcessProxy, node_modules: Path,
                                                        tmp_path: Path, model: str) -> None:
    script = DIR / "vercel_ai.mjs"  # beside its node_modules, where ESM imports resolve
    shutil.copy(PROGRAMS / "vercel_ai.mjs", script)
    sid = f"vercel-{uuid.uuid4().hex[:8]}"
    r = await run(["node", str(script)], tmp_path, env(gov, model, sid))
    assert r.code == 0, r.err[-3000:]
    out = json.loads(r.out.strip().splitlines()[-1])
    assert out["text"] and out["streamed"] and out["usage"]["outputTokens"] > 0
    assert isinstance(out["object"]["city"], str) and out["object"]["population"] >= 1
    rows = await calls_of(gov, sid)
    assert len(rows) == 3 and {x.client_tool for x in rows} == {"vercel-ai-sdk"}
    assert all(x.status_code == 200 and x.cost_usd > 0 for x in rows)


@pytest.mark.parametrize("model", ["support-cheap", "intent-fast"])
async def test_langchain_with_structured_output(gov: InProcessProxy, client_python: Path,
                                                tmp_path: Path, model: str) -> None:
    sid = f"lc-{uuid.uuid4().hex[:8]}"
    r = await run([str(client_python), str(PROGRAMS / "langchain_structured.py")], tmp_path,
                  env(gov, model, sid))
    assert r.code == 0, r.err[-3000:]
    ticket = json.loads(r.out.strip().splitlines()[-1])
    assert ticket["title"] and 1 <= ticket["priority"] <= 5 and ticket["tags"]
    rows = await calls_of(gov, sid)
    assert len(rows) == 1 and rows[0].status_code == 200 and rows[0].cost_usd > 0
