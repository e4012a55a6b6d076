"""Claude Code and Codex CLI, unmodified, through Governor on the sample config.

Each runs headless in a throwaway directory with its tools limited (Claude Code: Read only;
Codex: read-only sandbox). The simulator decides which tool they call (a `tool_call` fault
rule): reading a file the test wrote. Their own session ids and names land on the ledger rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simulator.server import SimServer
from tests.clients.conftest import DEV_KEY, calls_of, run
from tests.support.servers import InProcessProxy

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

NOTE = "governed note 42"


def project(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "notes.txt").write_text(NOTE + "\n")
    return d


def claude_env(gov: InProcessProxy, home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "ANTHROPIC_BASE_URL": gov.base_url, "ANTHROPIC_API_KEY": DEV_KEY,
            "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


async def claude(node_modules: Path, gov: InProcessProxy, cwd: Path, home: Path, model: str,
                 limit_s: float = 180) -> tuple[list[dict], str]:
    r = await run([str(node_modules / ".bin" / "claude"), "-p", "read notes.txt", "--model", model,
                   "--allowedTools", "Read", "--output-format", "stream-json", "--verbose"],
                  cwd, claude_env(gov, home), limit_s)
    events = [json.loads(line) for line in r.out.splitlines() if line.startswith("{")]
    return events, r.err


@pytest.mark.parametrize(("model", "route"), [("haiku", "anthropic/claude-haiku-4-5"),
                                              ("code-openai", "openai/gpt-4.1")])
async def test_claude_code_completes_a_prompt_with_a_tool_call(
        gov: InProcessProxy, sim: SimServer, node_modules: Path, tmp_path: Path,
        model: str, route: str) -> None:
    proj = project(tmp_path)
    sim.add_fault(count=1, tool_call={"name": "Read",
                                      "arguments": {"file_path": str(proj / "notes.txt")}})
    events, err = await claude(node_modules, gov, proj, tmp_path / "home", model)
    result = events[-1] if events else {}
    assert result.get("type") == "result" and result.get("is_error") is False, (events, err)
    results = [c for e in events if e.get("type") == "user"
               for c in e["message"]["content"] if isinstance(c, dict)
               and c.get("type") == "tool_result"]
    assert any(NOTE in json.dumps(c) for c in results), "the Read tool did not run"
    rows = await calls_of(gov, result["session_id"])  # Claude Code's own session id
    served = [r for r in rows if r.status_code == 200]
    assert len(served) >= 2 and all(r.client_tool == "claude-code" for r in rows)
    assert {f"{r.provider}/{r.model}" for r in served} == {route}
    assert all(r.cost_usd > 0 and r.user == "u_dev" for r in served)


CODEX_CONFIG = """
model_provider = "governor"
[model_providers.governor]
name = "Governor"
base_url = "{base}/v1"
env_key = "GOVERNOR_API_KEY"
wire_api = "responses"
"""


@pytest.mark.parametrize(("model", "route"), [("code-openai", "openai/gpt-4.1"),
                                              ("haiku", "anthropic/claude-haiku-4-5")])
async def test_codex_exec_completes_with_a_tool_call(
        gov: InProcessProxy, sim: SimServer, node_modules: Path, tmp_path: Path,
        model: str, route: str) -> None:
    proj = project(tmp_path)
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(CODEX_CONFIG.format(base=gov.base_url))
    sim.add_fault(count=1, tool_call={"name": "exec_command",
                                      "arguments": {"cmd": "cat notes.txt"}})
    r = await run([str(node_modules / ".bin" / "codex"), "exec", "--skip-git-repo-check",
                   "--sandbox", "read-only", "-m", model, "show notes.txt"],
                  proj, {"CODEX_HOME": str(home), "HOME": str(home),
                         "GOVERNOR_API_KEY": DEV_KEY})
    assert r.code == 0, r.err[-3000:]
    assert "cat notes.txt" in r.err and NOTE in r.err, r.err[-3000:]  # the command ran
    sid = re.search(r"session id: (\S+)", r.err)
    assert sid is not None
    rows = await calls_of(gov, sid.group(1))  # Codex's own session-id header
    assert len(rows) >= 2 and all(x.client_tool == "codex" and x.status_code == 200 for x in rows)
    assert {f"{x.provider}/{x.model}" for x in rows} == {route}
    assert all(x.cost_usd > 0 for x in rows)


async def test_a_looping_claude_code_session_is_killed_by_the_loop_detector(
        gov: InProcessProxy, sim: SimServer, node_modules: Path, tmp_path: Path) -> None:
    proj = project(tmp_path)
    # The model calls Read on every turn: an agent loop, with no Governor header anywhere.
    sim.add_fault(tool_call={"name": "Read", "arguments": {"file_path": str(proj / "notes.txt")}})
    try:
        events, _ = await claude(node_modules, gov, proj, tmp_path / "home", "haiku", 300)
    finally:
        sim.clear_faults()
    sid = next(e["session_id"] for e in events if e.get("session_id"))
    rows = await calls_of(gov, sid)
    assert any(r.error_code == "session_killed" for r in rows), [r.error_code for r in rows]
    assert gov.gw is not None
    session = await gov.gw.store.get_session(sid)
    assert session is not None and session.status == "killed"
    served = [r for r in rows if r.status_code == 200]
    assert 3 <= len(served) <= 40  # stopped after a bounded number of calls
