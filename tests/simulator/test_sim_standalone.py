"""`simulator.main`: the standalone process `governor sim` runs, labelled as simulated."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import httpx


async def test_standalone_server_logs_simulated_and_serves_until_sigterm():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from simulator import main; main(0)",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        assert "SIMULATED provider" in line
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{match.group(0)}/v1/chat/completions",
                headers={"Authorization": "Bearer k"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert response.status_code == 200
        assert response.headers["x-governor-simulated"] == "true"
        assert response.json()["system_fingerprint"] == "governor-simulated"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 60) == 0
