"""Per-session state is evicted after `session_idle_seconds` (issue 9: memory is bounded by
configuration, not by callers): a runtime that served 50 sessions holds nothing of them once
the idle sweep has run past their idle time, in any per-session structure it keeps."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from activities.config_source import load_config_dir
from activities.gateway import Gateway, new_call_id
from activities.llm_call import CallRequest, governed_call
from policies.identity import resolve_identity
from simulator.server import SimServer
from tests.support.servers import EXAMPLES, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

SESSIONS = 50


def _per_session(gw: Gateway) -> dict[str, Any]:
    """Every structure this runtime keys by session id (kills excepted: bounded apart by
    `max_killed_sessions`, and none of these sessions is killed)."""
    owners = gw.owners
    return {
        "state.sessions": gw.state.sessions,
        "loop_guard.sessions": gw.loop_guard.sessions,
        "loop_guard.throttled": gw.loop_guard.throttled,
        "owners._known": owners._known,
        "owners._grants": owners._grants,
        "owners._provisional": owners._provisional,
        "sweeper.last_seen": gw.sweeper.last_seen,
        "streams._by_session": gw.streams._by_session,
        "state.killed": gw.state.killed,
    }


async def test_idle_sweep_forgets_every_per_session_structure(tmp_path: Path):
    cfg_dir = make_config_dir(tmp_path / "cfg")
    (cfg_dir / "gateway.yaml").write_text(
        (EXAMPLES / "gateway.yaml").read_text() + "session_idle_seconds: 1\n"
    )
    async with SimServer() as sim:
        os.environ["GOVERNOR_SIM_URL"] = sim.base_url
        cfg = load_config_dir(cfg_dir)
        assert cfg.settings.session_idle_seconds == 1
        gw = await Gateway.open(cfg, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "j")
        try:
            key = next(k for k in gw.config.keys_by_hash.values() if k.id == "dev-developer")
            ids = {f"idle-{i}" for i in range(SESSIONS)}
            for sid in sorted(ids):
                ident = resolve_identity(key, {"x-governor-session-id": sid}, cfg.settings)
                await gw.owners.claim_grant(ident, "g-" + sid)  # POST /gateway/sessions
                await gw.check_session(ident)  # the owner check, as the LLM routes make it
                body = {
                    "model": "support-cheap",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": f"hello {sid}"}],
                }
                await governed_call(gw, CallRequest("openai", body, ident, new_call_id(), 100))
            held = {name: ids & set(d) for name, d in _per_session(gw).items()}
            # The calls reached what the sweep must clear (else the test proves nothing).
            for name in (
                "state.sessions",
                "loop_guard.sessions",
                "owners._known",
                "owners._grants",
                "sweeper.last_seen",
            ):
                assert held[name] == ids, name

            assert gw.sweeper.sweep(gw, time.time() + 2) == SESSIONS
            left = {name: sorted(ids & set(d)) for name, d in _per_session(gw).items()}
            assert left == {name: [] for name in left}, left
        finally:
            await gw.close()
