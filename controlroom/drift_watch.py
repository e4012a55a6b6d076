"""The tokenizer-drift detector: reads the ledger, sets the gauge, raises `tokenizer_drift`.

Run by the alert hub every `CHECK_SECONDS` (in the background, never on a call's path) and by
anyone holding a gateway (`await check_tokenizer_drift(gw)`). It compares each virtual model's
consecutive model versions on the prompts both saw in the last `WINDOW_SECONDS`
(`controlroom.drift`); a newer version costing more than `tokenizer_drift_pct` % more input
tokens on at least `tokenizer_drift_min_prompts` shared prompts fires the alert through the
hub (`AlertHub.on_tokenizer_drift`), whose runbook carries the rollback.
"""

from __future__ import annotations

import time
from typing import Any

from controlroom.drift import Drift, drift_alerts, version_drifts
from controlroom.model import Filters

CHECK_SECONDS = 300
WINDOW_SECONDS = 7 * 86400.0


async def check_tokenizer_drift(gw: Any, now: float | None = None) -> list[Drift]:
    """The drifts over threshold now (each also sent to `gw.alerts` when it has a hub)."""
    now = time.time() if now is None else now
    st = gw.config.settings
    from controlroom.panels import _Ctx, refresh_rollups

    await refresh_rollups(gw.store, now)
    ctx = _Ctx(gw.store, Filters(now - WINDOW_SECONDS, now), gw.config)
    drifts = version_drifts(await ctx.prompt_groups())
    latest: dict[str, Drift] = {}
    for d in drifts:  # consecutive pairs in version order: the last one per model is newest
        latest[d.virtual_model] = d
    gauge = gw.metrics.tokenizer_drift
    gauge.clear()
    for d in latest.values():
        gauge.labels(d.virtual_model, d.from_version, d.to_version).set(round(d.drift_pct, 2))
    firing = drift_alerts(latest.values(), st.tokenizer_drift_pct, st.tokenizer_drift_min_prompts)
    if gw.alerts is not None:
        for d in firing:
            gw.alerts.on_tokenizer_drift(d)
    return firing
