"""The control room's JSON: the panels every surface renders (`controlroom.panels`).

  GET /gateway/control-room/panels?since=7d&until=&team=&project=&workflow_tag=&panel=1,3&view=
      a viewer, auditor, on-call or admin key -> {"filters": …, "panels": [Panel JSON …]}

The query is the web page's (`controlroom.filters`, one parser; `tag` and `panels` accepted as
aliases); a bad value is a 400 `invalid_request` naming it. The web page (`/control-room`) and
`governor report` render the same `compute_panels` output, so they show the same numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from activities.gateway import Gateway
from controlroom.filters import FilterError, PageQuery, in_view, parse_page_query
from controlroom.model import Filters
from controlroom.panels import compute_panels
from policies.refusals import Refusal
from proxy.admin import route_query
from proxy.errors import BUSY_RETRY_AFTER_S
from proxy.http import Scope, Send, respond_json
from proxy.outcome_routes import READ_ROLES
from proxy.roles import require_role

# Each page or panels request runs the panel queries over up to 366 days: per ledger store, a
# few at once — the web page's and the JSON route's together — a few more queue, the rest get a
# 503 control_room_busy with Retry-After.
MAX_PANELS_IN_FLIGHT = 4
MAX_PANELS_WAITING = 16


class PanelSlots:
    """The panel computations on one ledger store, from every control-room surface:
    `computing` admits `MAX_PANELS_IN_FLIGHT`, `waiting` counts those queued (at most
    `MAX_PANELS_WAITING`)."""

    def __init__(self) -> None:
        self.computing = asyncio.Semaphore(MAX_PANELS_IN_FLIGHT)
        self.waiting = 0


_SLOTS: weakref.WeakKeyDictionary[Any, PanelSlots] = weakref.WeakKeyDictionary()


def slots_of(store: Any) -> PanelSlots:
    """The store's `PanelSlots` (one per store, dropped with it)."""
    slots = _SLOTS.get(store)
    if slots is None:
        slots = _SLOTS[store] = PanelSlots()
    return slots


@contextlib.asynccontextmanager
async def panel_slot(store: Any) -> AsyncIterator[None]:
    """Hold one of the store's panel computations (waiting in its queue if they are all
    taken); with the queue full, a 503 `control_room_busy` Refusal carrying Retry-After."""
    slots = slots_of(store)
    if slots.waiting >= MAX_PANELS_WAITING:
        raise Refusal(503, "control_room_busy", f"{MAX_PANELS_WAITING} control-room panel "
                      "requests are waiting on this replica; retry in a few seconds",
                      retry_after=BUSY_RETRY_AFTER_S)
    slots.waiting += 1
    try:
        await slots.computing.acquire()
    finally:
        slots.waiting -= 1
    try:
        yield
    finally:
        slots.computing.release()


def parse_query(q: dict[str, str], now: float) -> PageQuery:
    """`controlroom.filters.parse_page_query`, its `FilterError` as a 400 `Refusal`."""
    try:
        return parse_page_query(q, now)
    except FilterError as exc:
        raise Refusal(400, "invalid_request", str(exc)) from None


async def query_panels(store: Any, query: PageQuery, config: Any) -> list[Any]:
    """The panels a query asks for, in its view's layer (what every surface shows)."""
    return in_view(await compute_panels(store, query.filters, query.panels, config=config),
                   query.view)


def panels_document(filters: Filters, panels: list[Any], view: str = "all") -> dict[str, Any]:
    return {"filters": {"since": filters.since, "until": filters.until, "team": filters.team,
                        "project": filters.project, "workflow_tag": filters.workflow_tag,
                        "view": view},
            "panels": [p.to_json() for p in panels]}


async def handle_control_room_routes(gw: Gateway, parts: list[str], scope: Scope,
                                     send: Send) -> None:
    if parts[2:] != ["panels"] or scope["method"] != "GET":
        raise Refusal(404, "not_found", f"no control-room route {scope['method']} {scope['path']}")
    require_role(gw, scope, READ_ROLES, "the control room")
    query = parse_query(route_query(scope), time.time())
    async with panel_slot(gw.store):
        panels = await query_panels(gw.store, query, gw.base_config or gw.config)
    await respond_json(send, 200, panels_document(query.filters, panels, query.view))
