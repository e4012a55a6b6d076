"""The control room in a real headless browser (Debian's chromium, driven by Playwright) against
a real proxy on loopback whose ledger holds a week of generated traffic ending now.

A viewer signs in and sees every panel with the figures and table rows that `compute_panels`,
the JSON route and `governor report` give for the same filters, no console errors, and the
kill action disabled; a form posted without its CSRF token is refused; on-call kills the
looping session from panel 3 and the session owner's next call through the proxy is refused.
Screenshots go to the test's tmp dir and /tmp/control-room-screens.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from activities.gateway import hash_key
from controlroom.model import Filters, Panel
from controlroom.page import MAX_ROWS, format_cell
from controlroom.panels import compute_panels
from examples.control_room_traffic import LOOP_SESSION, Traffic
from tests.controlroom.cr_client import ONCALL_KEY, VIEWER_KEY, generated_proxy, iso
from tests.support.servers import REPO, InProcessProxy

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENS = Path("/tmp/control-room-screens")
# The generator's looping session is platform-dev-03's; this key is theirs in the test config.
OWNER_KEY = "gk-cr-platform-dev-03"


def owner_keys_yaml() -> str:
    return (
        "type: gateway-api-keys\nname: cr-test-keys\nkeys:\n"
        "  - id: key-platform-dev-03\n"
        f"    hash: {hash_key(OWNER_KEY)}\n"
        "    user: platform-dev-03\n    team: platform\n    role: developer\n"
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def filled(sim: Any, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[InProcessProxy, Traffic]]:
    async with generated_proxy(sim.base_url, tmp_path_factory, days=7, seed=11,
                               sessions_per_day=50,
                               overlay={"zz-cr-keys.yaml": owner_keys_yaml()}) as pt:
        yield pt


async def owner_call(base: str, text: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as h:
        return await h.post(
            base + "/v1/chat/completions",
            json={"model": "support-cheap", "messages": [{"role": "user", "content": text}]},
            headers={"authorization": f"Bearer {OWNER_KEY}", "x-governor-session-id": LOOP_SESSION,
                     "x-governor-project": "platform-infra"},
        )


async def sign_in(page: Any, base: str, key: str) -> None:
    await page.goto(base + "/control-room")
    assert page.url.endswith("/control-room/login")  # no session: the login form
    await page.fill("input[name=api_key]", key)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert page.url == base + "/control-room", page.url


async def check_panels(page: Any, expected: list[Panel]) -> None:
    sections = page.locator("section.panel")
    assert await sections.count() == len(expected) == 6
    for p in expected:
        sec = page.locator(f'section[data-panel="{p.number}"]')
        assert await sec.is_visible()
        assert p.question in await sec.locator(".question").inner_text()
        for name, value in p.figures.items():
            fig = sec.locator(f'[data-figure="{name}"]')
            assert json.loads(await fig.get_attribute("data-value")) == value, (p.number, name)
            assert await fig.locator("dd").is_visible()
        charts = sec.locator("svg.chart")
        assert await charts.count() == len(p.charts)
        for i, c in enumerate(p.charts):  # every chart with data draws it
            drawn = await charts.nth(i).locator("polyline, rect:has(title)").count()
            assert drawn > 0 or not any(s.points for s in c.series), (p.number, c.title)
        assert await sec.locator("table").count() == len(p.tables)
        tables = sec.locator("table")
        for i, t in enumerate(p.tables):
            assert t.title in await tables.nth(i).locator("caption").inner_text()
            body = tables.nth(i).locator("tbody tr")
            assert await body.count() == max(min(len(t.rows), MAX_ROWS), 1)
            if t.rows:  # the first row reads as the panel's values
                cells = await body.first.locator("td").all_inner_texts()
                assert cells == [format_cell(v) for v in t.rows[0][:len(t.columns)]]


def save(shot: Path, name: str) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENS / name)


async def test_the_control_room_in_chromium(filled, tmp_path):
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.async_api import async_playwright

    proxy, tr = filled
    assert proxy.gw is not None
    base = proxy.base_url
    filters = Filters(since=tr.start, until=tr.end)
    expected = await compute_panels(proxy.gw.store, filters, config=proxy.gw.config)
    assert any(a.kind == "kill_session" and a.target == LOOP_SESSION
               for a in expected[2].actions), "the generator's loop is not flagged on panel 3"
    # The JSON route (what `governor report` and scripts read) gives the same panels.
    async with httpx.AsyncClient(timeout=30) as h:
        doc = (await h.get(base + "/gateway/control-room/panels",
                           params={"since": repr(tr.start), "until": repr(tr.end)},
                           headers={"authorization": f"Bearer {VIEWER_KEY}"})).json()
    assert [p["figures"] for p in doc["panels"]] == [p.figures for p in expected]
    # And `governor report` (through the admin API, a separate process) prints the same.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", "report", "--format", "json", "--url", base,
        "--key", VIEWER_KEY, "--since", repr(tr.start), "--until", repr(tr.end),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert [p["figures"] for p in report["panels"]] == [p.figures for p in expected]
    query = f"?since={iso(tr.start)}&until={iso(tr.end)}".replace("+", "%2B")
    # The looping session's owner can still call through the proxy (and claims the session).
    first = await owner_call(base, "before the kill")
    assert first.status_code == 200, first.text

    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # A viewer: every panel, the figures compute_panels gives, kill disabled.
            ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await sign_in(page, base, VIEWER_KEY)
            await page.goto(base + "/control-room" + query)
            await check_panels(page, expected)
            kill = page.locator(f'li[data-action="kill_session"][data-target="{LOOP_SESSION}"]')
            assert await kill.locator("button").is_disabled()
            shot = tmp_path / "viewer.png"
            await page.screenshot(path=str(shot), full_page=True)
            save(shot, "control-room-viewer.png")
            for n in (1, 4):
                shot = tmp_path / f"viewer-panel{n}.png"
                await page.locator(f'section[data-panel="{n}"]').screenshot(path=str(shot))
                save(shot, f"control-room-panel{n}.png")
            assert errors == [], errors
            await ctx.close()

            # On-call: a form posted without its CSRF token is refused, nothing is killed.
            ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await sign_in(page, base, ONCALL_KEY)
            await page.goto(base + "/control-room" + query + "&panel=3")
            kill = page.locator(f'li[data-action="kill_session"][data-target="{LOOP_SESSION}"]')
            assert await kill.locator("button").is_enabled()
            await kill.locator("input[name=csrf]").evaluate("e => e.remove()")
            await kill.locator("input[name=confirm]").check()
            errors_before = len(errors)
            async with page.expect_navigation():
                await kill.locator("button").click()
            assert "CSRF token is missing or wrong" in await page.inner_text("main")
            # The deliberate refusal may log its status, nothing else may.
            assert all("403" in e for e in errors[errors_before:]), errors
            del errors[errors_before:]
            assert LOOP_SESSION not in proxy.gw.state.killed

            # On-call kills the looping session from panel 3.
            await page.goto(base + "/control-room" + query + "&panel=3")
            shot = tmp_path / "oncall-panel3.png"
            await page.screenshot(path=str(shot), full_page=True)
            save(shot, "control-room-oncall-panel3.png")
            kill = page.locator(f'li[data-action="kill_session"][data-target="{LOOP_SESSION}"]')
            await kill.locator("input[name=reason]").fill("looping on incident-triage")
            await kill.locator("input[name=confirm]").check()
            async with page.expect_navigation():
                await kill.locator("button").click()
            text = await page.inner_text("main")
            assert f"Session {LOOP_SESSION} killed by u_oncall" in text, text
            shot = tmp_path / "oncall-killed.png"
            await page.screenshot(path=str(shot), full_page=True)
            save(shot, "control-room-killed.png")
            # Panel 3 now shows the session killed, with no kill to offer.
            await page.goto(base + "/control-room" + query + "&panel=3")
            kill = page.locator(f'li[data-action="kill_session"][data-target="{LOOP_SESSION}"]')
            assert await kill.count() == 0
            row = page.locator("section[data-panel='3'] tr", has_text=LOOP_SESSION)
            assert "killed" in await row.first.inner_text()
            assert errors == [], errors
            await ctx.close()
        finally:
            await browser.close()

    # The owner's next call of that session through the proxy is refused.
    after = await owner_call(base, "after the kill")
    assert after.status_code == 403 and after.json()["error"]["code"] == "session_killed"
    kills = [k for k in await proxy.gw.store.kills_after(0) if k.session_id == LOOP_SESSION]
    assert [k.actor for k in kills] == ["u_oncall"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "oncall-killed.png", "oncall-panel3.png", "viewer-panel1.png", "viewer-panel4.png",
        "viewer.png"]
