"""A retried LLM activity (after a worker crash) never charges a call twice."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities import session_activities
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from activities.session_types import LlmCallInput, SessionIdentity, grant_digest
from simulator.server import SimServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"


def _env(attempt: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


async def test_a_retry_of_a_call_already_in_the_ledger_is_not_charged_again(tmp_path):
    async with SimServer() as sim:
        os.environ["GOVERNOR_SIM_URL"] = sim.base_url
        config = load_config_dir(EXAMPLES)
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        inp = LlmCallInput(
            identity=SessionIdentity(session_id="sess-retry", user="u", team="t",
                                     project="p-retry"),
            call_id="session-sess-retry:1",
            body={"model": "support-cheap", "messages": [{"role": "user", "content": "hi"}]})

        gw = await Gateway.open(config, url, tmp_path / "j1", path="workflow")
        # As POST /gateway/sessions would: the session's owner and grant are in the ledger.
        await gw.owners.claim_grant(inp.identity.to_identity(),
                                    grant_digest(inp.identity, inp.policy))
        session_activities.set_gateway(gw)
        first = await _env(1).run(session_activities.governed_llm_call, inp)
        await gw.close()  # the worker dies after the ledger has the row

        gw2 = await Gateway.open(config, url, tmp_path / "j2", path="workflow")
        try:
            session_activities.set_gateway(gw2)
            rebuilt = gw2.state.sessions["sess-retry"].tokens
            assert rebuilt == first.total_tokens
            await _env(2).run(session_activities.governed_llm_call, inp)
            assert gw2.state.sessions["sess-retry"].tokens == rebuilt  # not counted twice
            await gw2.writer.flush()
            assert len(await gw2.store.calls_for_session("sess-retry")) == 1
        finally:
            await gw2.close()


pytestmark = pytest.mark.asyncio(loop_scope="session")
