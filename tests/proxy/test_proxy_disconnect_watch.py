"""How a call learns that its client left: through the server's hook (no task per call), through
a task awaiting `receive` when the server has none, at once when the client was already gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.http import CLIENT_GONE, DISCONNECT_HOOK, unwatch_disconnect, watch_disconnect

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_without_a_server_hook_a_task_awaits_the_disconnect_message() -> None:
    left: list[str] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    scope: dict[str, Any] = {}
    watcher = watch_disconnect(scope, receive, lambda: left.append("left"))
    assert watcher is not None
    gone.set()
    await asyncio.wait_for(watcher, 5)
    assert left == ["left"]
    unwatch_disconnect(scope, watcher)  # harmless once done


async def test_with_the_server_hook_no_task_is_made_and_the_hook_is_dropped_after() -> None:
    left: list[str] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("receive must not be awaited when the server has a hook")

    scope: dict[str, Any] = {DISCONNECT_HOOK: None}
    assert watch_disconnect(scope, receive, lambda: left.append("left")) is None
    scope[DISCONNECT_HOOK]()  # what BoundedHttpTools.connection_lost does
    assert left == ["left"]
    unwatch_disconnect(scope, None)
    assert scope[DISCONNECT_HOOK] is None


async def test_a_client_already_gone_is_reported_at_once() -> None:
    left: list[str] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("not needed")

    scope: dict[str, Any] = {DISCONNECT_HOOK: CLIENT_GONE}
    assert watch_disconnect(scope, receive, lambda: left.append("left")) is None
    assert left == ["left"]
    unwatch_disconnect(scope, None)
    assert scope[DISCONNECT_HOOK] is CLIENT_GONE
