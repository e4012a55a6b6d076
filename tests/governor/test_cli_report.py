"""`governor report`: the same panels through the admin API and straight from the ledger, as
table, JSON and CSV (a real `governor` process; a real proxy on loopback for the API path)."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from activities.config_source import load_config_dir
from controlroom.model import Filters
from controlroom.panels import compute_panels
from examples.control_room_traffic import LOOP_SESSION, iter_traffic, write_traffic
from tests.support.servers import InProcessProxy, make_config_dir

REPO = Path(__file__).resolve().parents[2]
END = 1_764_460_800.0


async def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    def go() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "governor.cli", "report", *args],
                              capture_output=True, text=True, cwd=REPO, timeout=120, env=env)

    return await asyncio.to_thread(go)


@pytest_asyncio.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path / "config")
    p = await InProcessProxy(cfg, tmp_path / "data", "http://127.0.0.1:9").start()
    assert p.gw is not None
    await write_traffic(p.gw.store, iter_traffic(4, 3, END, 25))
    try:
        yield p
    finally:
        await p.stop()


@pytest.mark.asyncio
async def test_report_through_the_api_and_from_the_ledger_shows_the_web_pages_numbers(
        proxy: InProcessProxy, tmp_path: Path) -> None:
    assert proxy.gw is not None
    common = ["--since", "4d", "--until", str(END), "--team", "platform"]
    via_api = await run(*common, "--format", "json", "--url", proxy.base_url,
                        "--key", "gk-dev-oncall")
    assert via_api.returncode == 0, via_api.stderr
    ledger = f"sqlite:///{proxy.data_dir / 'ledger.db'}"
    via_ledger = await run(*common, "--format", "json", "--ledger", ledger,
                           "--config", str(proxy.config_dir))
    assert via_ledger.returncode == 0, via_ledger.stderr
    want = await compute_panels(proxy.gw.store, Filters(END - 4 * 86400, END, team="platform"),
                                config=load_config_dir(proxy.config_dir))
    want_json = orjson.loads(orjson.dumps([p.to_json() for p in want]))
    assert orjson.loads(via_api.stdout)["panels"] == want_json
    assert orjson.loads(via_ledger.stdout)["panels"] == want_json


@pytest.mark.asyncio
async def test_report_shows_the_figures_of_the_web_page_for_the_same_query(
        proxy: InProcessProxy) -> None:
    """The page and `governor report` take one query (`controlroom.filters`): the same ISO
    range, tag and view give the page's figures, value for value."""
    import json
    import re
    from html import unescape

    import httpx

    from tests.controlroom.cr_client import VIEWER_KEY, sign_in

    query = {"since": "3d", "until": "2025-11-30T00:00:00Z", "workflow_tag": "code-review",
             "view": "executive"}
    async with httpx.AsyncClient(timeout=60, follow_redirects=True) as h:
        await sign_in(h, proxy.base_url, VIEWER_KEY)
        page = await h.get(proxy.base_url + "/control-room", params=query)
    assert page.status_code == 200, page.text
    r = await run("--since", "3d", "--until", "2025-11-30T00:00:00Z", "--tag", "code-review",
                  "--view", "executive", "--format", "json", "--url", proxy.base_url,
                  "--key", VIEWER_KEY)
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    assert doc["filters"]["since"] == END - 3 * 86400 and doc["filters"]["until"] == END
    assert {p["layer"] for p in doc["panels"]} == {"executive"}
    shown = set(re.findall(r'data-panel="(\d)"', page.text))
    assert shown == {str(p["number"]) for p in doc["panels"]}
    compared = 0
    for p in doc["panels"]:
        for name, value in p["figures"].items():
            m = re.search(rf'data-panel="{p["number"]}".*?data-figure="{re.escape(name)}" '
                          r'data-value="([^"]*)"', page.text, re.S)
            assert m, (p["number"], name)
            assert json.loads(unescape(m.group(1))) == value, (p["number"], name)
            compared += 1
    assert compared >= 6


@pytest.mark.asyncio
async def test_report_table_and_csv_of_one_panel(proxy: InProcessProxy) -> None:
    ledger = f"sqlite:///{proxy.data_dir / 'ledger.db'}"
    base = ["--until", str(END), "--ledger", ledger, "--config", str(proxy.config_dir)]
    table = await run("--panel", "3", *base)
    assert table.returncode == 0, table.stderr
    assert "== 3. Runaway-agent detector [oncall]" in table.stdout
    assert f"=> kill_session {LOOP_SESSION}" in table.stdout
    assert "== 1." not in table.stdout
    out = await run("--panel", "5", "--format", "csv", *base)
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout)))
    header = next(r for r in rows if r[:3] == ["panel", "table", "hook"])
    assert header[2:] == ["hook", "detector", "action", "events", "sessions", "class", "attention"]
    secret = [r for r in rows if r[2:5] == ["tool-output", "secrets", "allowed"]]
    assert len(secret) == 1 and secret[0][7] == "risk" and secret[0][8].startswith("ACT NOW")


@pytest.mark.asyncio
async def test_report_errors_are_one_sentence_and_a_nonzero_exit(proxy: InProcessProxy) -> None:
    r = await run("--url", proxy.base_url, "--key", "gk-dev-developer")
    assert r.returncode != 0 and "403" in r.stderr and "Traceback" not in r.stderr
    r = await run("--since", "nonsense", "--url", proxy.base_url, "--key", "gk-dev-admin")
    assert r.returncode != 0 and "400" in r.stderr
    r = await run("--ledger", f"sqlite:///{proxy.data_dir / 'ledger.db'}", "--since", "-3")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.asyncio
async def test_report_from_a_bad_ledger_url_or_config_is_one_sentence_not_a_traceback(
        tmp_path: Path) -> None:
    r = await run("--ledger", "nosuch://x")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ledger:") and "sqlite:///" in r.stderr
    bad = tmp_path / "cfg"
    bad.mkdir()
    (bad / "x.yaml").write_text("type: nonsense\n")
    r = await run("--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--config", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "config error" in r.stderr and "x.yaml" in r.stderr
