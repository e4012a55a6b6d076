"""The Opus 4.6 -> 4.7 migration (same prompts, +25% input tokens) raises `tokenizer_drift`
through the alert hub and reaches its runbook (real Temporal dev server, real SQLite ledger);
a drift under the configured threshold raises nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from temporalio.client import Client
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from alerts.hub import AlertHub
from controlroom.drift_watch import check_tokenizer_drift
from examples.control_room_traffic import iter_traffic, write_traffic
from ledger.alert_store import list_alerts, steps_of
from tests.support.servers import make_config_dir
from workflows.runbook import ALERT_WORKFLOWS, RunbookWorkflow

QUEUE = "governor-tokenizer-drift"
END = 1_764_460_800.0
KEY = "alert-tokenizer_drift,virtual_model=code-review-strong,to_version=claude-opus-4-7-20260416"


async def _until(pred: Any, what: str, within: float = 60.0) -> Any:
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _gateway(tmp_path: Path, settings_tail: str = "") -> Gateway:
    cfg = make_config_dir(tmp_path / "config")
    if settings_tail:
        (cfg / "gateway.yaml").write_text((cfg / "gateway.yaml").read_text() + settings_tail)
    gw = await Gateway.open(load_config_dir(cfg), f"sqlite:///{tmp_path / 'ledger.db'}",
                            tmp_path / "journal", config_dir=cfg)
    await write_traffic(gw.store, iter_traffic(4, 21, END, 40))
    return gw


async def test_the_opus_migration_fires_tokenizer_drift_and_reaches_its_runbook(
    client: Client, tmp_path: Path,
) -> None:
    gw = await _gateway(tmp_path)
    try:
        runbook_activities.set_gateway(gw)
        hub = AlertHub(gw, client, QUEUE)
        gw.alerts = hub
        async with Worker(client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES):
            firing = await check_tokenizer_drift(gw, now=END)
            assert [(d.virtual_model, d.from_model, d.to_model) for d in firing] == [
                ("code-review-strong", "claude-opus-4-6", "claude-opus-4-7")]
            assert 24.9 < firing[0].drift_pct < 25.1
            sample = gw.metrics.tokenizer_drift.labels(
                "code-review-strong", "claude-opus-4-6", "claude-opus-4-7-20260416")
            assert 24.9 < sample._value.get() < 25.1
            rows = await _until(lambda: list_alerts(gw.store, key=KEY), "the drift alert row")
            alert = rows[0]
            assert alert.name == "tokenizer_drift" and alert.status in ("firing", "waiting")
            labels = orjson.loads(alert.labels)
            assert labels["from_model"] == "claude-opus-4-6" and labels["drift_pct"] == "25.0"
            # the runbook runs: its steps are recorded, and it waits for a person to acknowledge
            steps = await _until(lambda: steps_of(gw.store, alert.run_id), "runbook steps")
            assert steps[0].action == "notify"
            st = await client.get_workflow_handle(KEY).query(RunbookWorkflow.status)
            assert "acknowledge" in orjson.dumps(st, default=str).decode()
            # the same drift seen again does not start a second runbook
            await check_tokenizer_drift(gw, now=END)
            await asyncio.sleep(0.5)
            assert len(await list_alerts(gw.store, key=KEY)) == 1
        await hub.close()
    finally:
        await gw.close()


async def test_a_drift_under_the_configured_threshold_raises_nothing(
    client: Client, tmp_path: Path,
) -> None:
    gw = await _gateway(tmp_path, "tokenizer_drift_pct: 30\n")
    try:
        hub = AlertHub(gw, client, QUEUE + "-quiet")
        gw.alerts = hub
        assert await check_tokenizer_drift(gw, now=END) == []
        await asyncio.sleep(0.5)
        assert await list_alerts(gw.store, key=KEY) == []
        await hub.close()
    finally:
        await gw.close()
