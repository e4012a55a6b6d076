"""The control room's JSON: the panels every surface renders (`controlroom.panels`).

  GET /gateway/control-room/panels?since=7d&until=&team=&project=&tag=&panels=1,3
      a viewer, auditor, on-call or admin key -> {"filters": …, "panels": [Panel JSON …]}

`since` is a duration back from `until` (`30m`, `24h`, `7d`, `4w`; at most 400 days) or epoch
seconds; `until` epoch seconds (default now). The web page (`/control-room`) and
`governor report` render the same `compute_panels` output, so they show the same numbers.
"""

from __future__ import annotations

import math
import time
from typing import Any

from activities.gateway import Gateway
from controlroom.model import Filters
from controlroom.panels import PANELS, compute_panels
from policies.config.models import window_seconds
from policies.refusals import Refusal
from proxy.admin import _query
from proxy.http import Scope, Send, respond_json
from proxy.outcome_routes import READ_ROLES, require_role

MAX_RANGE_SECONDS = 400 * 86400


def parse_filters(q: dict[str, str], now: float) -> Filters:
    """Filters from query parameters (see the module doc); `Refusal` 400 naming the bad one."""
    until = now
    if "until" in q:
        until = _epoch(q["until"], "until")
    since = until - 7 * 86400
    if "since" in q:
        v = q["since"].strip()
        if v and v[-1] in "smhdw":
            try:
                since = until - window_seconds(v)
            except ValueError as exc:
                raise Refusal(400, "invalid_request", f"`since`: {exc}") from None
        else:
            since = _epoch(v, "since")
    if not until > since:
        raise Refusal(400, "invalid_request", "`since` must be before `until`")
    if until - since > MAX_RANGE_SECONDS:
        raise Refusal(400, "invalid_request", "the range is longer than 400 days")
    return Filters(since=since, until=until, team=q.get("team") or None,
                   project=q.get("project") or None, workflow_tag=q.get("tag") or None)


def parse_panels(v: str | None) -> list[int] | None:
    if not v:
        return None
    out = []
    for part in v.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit() and int(part) in PANELS):
            raise Refusal(400, "invalid_request", "`panels` is a comma-separated list of 1-6")
        out.append(int(part))
    return out


def _epoch(v: str, name: str) -> float:
    try:
        t = float(v)
    except ValueError:
        raise Refusal(400, "invalid_request",
                      f"`{name}` must be epoch seconds (since: or a duration like 7d)") from None
    if not math.isfinite(t) or not 0 <= t < 32503680000:
        raise Refusal(400, "invalid_request", f"`{name}` is out of range")
    return t


def panels_document(filters: Filters, panels: list[Any]) -> dict[str, Any]:
    return {"filters": {"since": filters.since, "until": filters.until, "team": filters.team,
                        "project": filters.project, "workflow_tag": filters.workflow_tag},
            "panels": [p.to_json() for p in panels]}


async def handle_control_room_routes(gw: Gateway, parts: list[str], scope: Scope,
                                     send: Send) -> None:
    if parts[2:] != ["panels"] or scope["method"] != "GET":
        raise Refusal(404, "not_found", f"no control-room route {scope['method']} {scope['path']}")
    require_role(gw, scope, READ_ROLES, "the control room")
    q = _query(scope, {"since", "until", "team", "project", "tag", "panels"})
    filters = parse_filters(q, time.time())
    panels = await compute_panels(gw.store, filters, parse_panels(q.get("panels")),
                                  config=gw.base_config or gw.config)
    await respond_json(send, 200, panels_document(filters, panels))
