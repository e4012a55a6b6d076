"""Runtime overrides reach every replica: each runtime polls the ledger's active overrides (as it
polls kills) and re-applies them on top of its repository config when they change."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ledger.alert_store import active_overrides
from policies.overrides import Override

if TYPE_CHECKING:
    from activities.gateway import Gateway

log = logging.getLogger("governor.overrides")


async def refresh_overrides(gw: Gateway) -> bool:
    """Apply the ledger's active overrides here; True when they changed."""
    rows = await active_overrides(gw.store)
    new = tuple(Override(r.kind, r.target, r.value, r.id or 0) for r in rows)
    if new == gw.overrides:
        return False
    base = gw.base_config or gw.config
    gw.overrides = new
    gw.apply_config(base, source="override")
    log.warning("runtime overrides now in force: %s",
                ", ".join(f"{o.kind}:{o.target}={o.value}" for o in new) or "none")
    return True


async def poll_overrides(gw: Gateway, every: float) -> None:
    """Forever: an override added or cleared on any replica is in force here within `every` s."""
    while True:
        try:
            await refresh_overrides(gw)
        except Exception as exc:  # a down database keeps the overrides last seen
            log.warning("override poll failed: %s", type(exc).__name__)
        await asyncio.sleep(every)
