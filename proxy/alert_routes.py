"""Admin API of alerts and overrides (on-call or admin keys; clearing overrides: admin only).

  POST   /gateway/alerts/alertmanager        Alertmanager webhook (payload version 4)
  GET    /gateway/alerts[?status=]           alerts in the ledger, newest first
  GET    /gateway/alerts/{key}               one alert: ledger rows, steps, live runbook state
  POST   /gateway/alerts/{key}/ack|approve|resolve   an Update carrying the caller as actor
  POST   /gateway/alerts/silences            {"rule"?, "matchers"?, "duration": "2h", "comment"}
  GET    /gateway/alerts/silences
  GET    /gateway/overrides                  active runtime overrides
  DELETE /gateway/overrides[/{id}]           clear one or all (admin)
"""

from __future__ import annotations

import time
from typing import Any

from activities.gateway import Gateway
from activities.overrides import refresh_overrides
from ledger.alert_store import active_overrides, clear_overrides, list_alerts, steps_of
from policies.alerts import ALERT_NAME
from policies.config.models import ApiKey, window_seconds
from policies.refusals import Refusal
from proxy.errors import BUSY_RETRY_AFTER_S
from proxy.http import BodyTooLarge, Receive, Scope, Send, header_map, read_body, respond_json
from proxy.llm_routes import bearer, parse_json_body

MAX_WEBHOOK_BODY = 1024 * 1024
MAX_ALERTS = 1000
MAX_LABELS = 64
MAX_LABEL_LEN = 1024
ALERT_STATUSES = ("firing", "waiting", "resolved", "closed")  # a runbook's, as the ledger has it


def _key(gw: Gateway, scope: Scope) -> ApiKey:
    key = gw.authenticate(bearer(header_map(scope)))
    if key.role not in ("admin", "oncall"):
        raise Refusal(403, "oncall_required",
                      f"key {key.id!r} has role {key.role!r}; alerts need an on-call or admin key")
    return key


def _hub(gw: Gateway) -> Any:
    if gw.alerts is None:
        raise Refusal(503, "alerting_unavailable",
                      "this replica runs no alert hub (it needs a Temporal connection); "
                      "send alerts to a replica started by `governor up` or with Temporal")
    return gw.alerts


async def _body(scope: Scope, receive: Receive, limit: int) -> dict[str, Any]:
    try:
        raw = await read_body(scope, receive, limit)
    except BodyTooLarge:
        raise Refusal(413, "request_too_large", f"body is larger than {limit} bytes") from None
    if not raw.strip():
        return {}
    doc = parse_json_body(raw)
    if not isinstance(doc, dict):
        raise Refusal(400, "invalid_request", "the body must be a JSON object")
    return doc


async def handle_alert_routes(gw: Gateway, parts: list[str], scope: Scope, receive: Receive,
                              send: Send) -> None:
    method = scope["method"]
    key = _key(gw, scope)
    if parts[1] == "overrides":
        await _overrides(gw, key, parts, method, send)
        return
    rest = parts[2:]
    if rest == ["alertmanager"] and method == "POST":
        await respond_json(send, 200, await _alertmanager(gw, await _body(scope, receive,
                                                                           MAX_WEBHOOK_BODY)))
    elif rest == ["silences"] and method == "POST":
        doc = await _body(scope, receive, 64 * 1024)
        await respond_json(send, 200, await _silence(gw, key, doc))
    elif rest == ["silences"] and method == "GET":
        hub = _hub(gw)
        await hub.refresh_silences()
        await respond_json(send, 200, {"silences": [s.model_dump() for s in hub.silences]})
    elif not rest and method == "GET":
        from proxy.admin import route_query

        status = route_query(scope).get("status")
        if status is not None and status not in ALERT_STATUSES:
            raise Refusal(400, "invalid_request",
                          f"`status` must be one of {', '.join(ALERT_STATUSES)}")
        rows = await list_alerts(gw.store, status=status, limit=200)
        await respond_json(send, 200, {"alerts": [r.model_dump() for r in rows]})
    elif len(rest) == 1 and method == "GET":
        await respond_json(send, 200, await _show(gw, rest[0]))
    elif len(rest) == 2 and rest[1] in ("ack", "approve", "resolve") and method == "POST":
        doc = await _body(scope, receive, 64 * 1024)
        await respond_json(send, 200, await _person(gw, rest[0], rest[1], key, doc))
    else:
        raise Refusal(404, "not_found", f"no alerts route {method} {scope['path']}")


def _labels(v: Any, where: str) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > MAX_LABELS:
        raise Refusal(400, "invalid_request", f"{where} must be an object of at most "
                                              f"{MAX_LABELS} string labels")
    for k, val in v.items():
        if not isinstance(val, str) or len(k) > 128 or len(val) > MAX_LABEL_LEN:
            raise Refusal(400, "invalid_request", f"{where}.{k[:64]} must be a string of at "
                                                  f"most {MAX_LABEL_LEN} characters")
    return dict(v)


async def _alertmanager(gw: Gateway, doc: dict[str, Any]) -> dict[str, Any]:
    """Webhook payload version 4: each alert firing starts (or repeats) its runbook; each
    resolved one resolves it. Deduplicated on Governor's key, not Alertmanager's fingerprint."""
    from temporalio.service import RPCError

    hub = _hub(gw)
    if str(doc.get("version")) != "4":
        raise Refusal(400, "invalid_request",
                      "expected an Alertmanager webhook payload with \"version\": \"4\"")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list) or len(alerts) > MAX_ALERTS:
        raise Refusal(400, "invalid_request", f"`alerts` must be a list of at most {MAX_ALERTS}")
    parsed = []
    for i, a in enumerate(alerts):
        if not isinstance(a, dict):
            raise Refusal(400, "invalid_request", f"alerts[{i}] must be an object")
        labels = _labels(a.get("labels", {}), f"alerts[{i}].labels")
        name = labels.get("governor_rule") or labels.get("alertname")
        status = a.get("status", doc.get("status"))
        if not name or status not in ("firing", "resolved"):
            raise Refusal(400, "invalid_request",
                          f"alerts[{i}] needs labels.alertname and status firing|resolved")
        parsed.append((name, labels, status))
    results = []
    until = hub.pending_deadline()  # one wait bound for the delivery, not one per alert
    for name, labels, status in parsed:
        # After the same alert's embedded hand-overs still queued here: a resolution must not
        # overtake a firing queued before it (it would then reopen the runbook).
        await hub.after_pending(hub.key_of(name, labels), until)
        try:
            if status == "firing":
                r = await hub.fire_async(name, labels, "alertmanager")
                results.append({"alert": name, "key": r.key, "status": "silenced"
                                if r.silenced_by else "runbook", "run_id": r.run_id,
                                "silenced_by": r.silenced_by, "rule_known": r.rule_known})
            else:
                key = await hub.resolve_async(name, labels, "alertmanager")
                results.append({"alert": name, "key": key, "status": "resolved" if key
                                else "no_runbook"})
        except RPCError as e:  # the server, not the alert: Alertmanager sends it again
            raise Refusal(503, "temporal_unavailable", f"the Temporal server did not take "
                          f"alert {name[:200]!r} ({e.status.name}); retry soon",
                          retry_after=BUSY_RETRY_AFTER_S) from None
    return {"received": len(parsed), "results": results}


async def _silence(gw: Gateway, key: ApiKey, doc: dict[str, Any]) -> dict[str, Any]:
    hub = _hub(gw)
    rule = doc.get("rule")
    if rule is not None and (not isinstance(rule, str) or len(rule) > 200
                             or not ALERT_NAME.match(rule)):
        raise Refusal(400, "invalid_request",
                      "`rule` must be an alert name (letters, digits and _)")
    matchers = _labels(doc.get("matchers", {}), "matchers")
    for k in matchers:
        if not ALERT_NAME.match(k) or k.startswith("__"):
            raise Refusal(400, "invalid_request",
                          f"matchers: {k[:64]!r} is not a label name (letters, digits and _)")
    if rule is None and not matchers:
        raise Refusal(400, "invalid_request", "a silence needs a `rule`, `matchers` or both")
    try:
        seconds = window_seconds(str(doc.get("duration", "1h")))
    except ValueError as exc:
        raise Refusal(400, "invalid_request", f"duration: {exc}") from None
    if seconds > 30 * 86400:
        raise Refusal(400, "invalid_request", "a silence lasts at most 30d")
    comment = doc.get("comment", "")
    if not isinstance(comment, str):
        raise Refusal(400, "invalid_request", "`comment` must be a string")
    s = await hub.add_silence(rule, matchers, seconds, key.user, comment[:1000])
    # A rule name this config does not define silences only Alertmanager alerts of that name:
    # allowed (rules may live in Prometheus only), but said, so a typo is noticed.
    return {"silence": s.model_dump(), "rule_known": rule is None or rule in hub.rules()}


async def _workflow_status(gw: Gateway, alert_key: str) -> Any:
    from temporalio.service import RPCError

    from workflows.runbook import RunbookWorkflow

    if gw.alerts is None:
        return None
    try:
        st = await gw.alerts.client.get_workflow_handle(alert_key).query(RunbookWorkflow.status)
    except RPCError:
        return None
    return None if st is None else st.model_dump()


async def _show(gw: Gateway, alert_key: str) -> dict[str, Any]:
    rows = await list_alerts(gw.store, key=alert_key, limit=20)
    live = await _workflow_status(gw, alert_key)
    if not rows and live is None:
        raise Refusal(404, "alert_not_found", f"no alert {alert_key!r}")
    runs = []
    for r in rows:
        runs.append({**r.model_dump(),
                     "steps": [s.model_dump() for s in await steps_of(gw.store, r.run_id)]})
    return {"key": alert_key, "runbook": live, "runs": runs}


async def _person(gw: Gateway, alert_key: str, what: str, key: ApiKey,
                  doc: dict[str, Any]) -> dict[str, Any]:
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.runbook import RunbookWorkflow
    from workflows.runbook_models import Person

    hub = _hub(gw)
    comment = doc.get("comment", "")
    if not isinstance(comment, str):
        raise Refusal(400, "invalid_request", "`comment` must be a string")
    update = {"ack": RunbookWorkflow.ack, "approve": RunbookWorkflow.approve,
              "resolve": RunbookWorkflow.resolve}[what]
    handle = hub.client.get_workflow_handle(alert_key)
    try:
        st = await handle.execute_update(update, Person(actor=key.user, comment=comment[:1000]))
    except WorkflowUpdateFailedError as e:
        msg = getattr(e.cause, "message", None) or str(e.cause or e)
        raise Refusal(409, "runbook_refused", f"{what}: {msg}") from None
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise Refusal(404, "alert_not_found",
                          f"no runbook is running for alert {alert_key!r}") from None
        raise Refusal(503, "temporal_unavailable", f"the Temporal server did not take the "
                      f"{what} ({e.status.name}); retry soon",
                      retry_after=BUSY_RETRY_AFTER_S) from None
    return {"key": alert_key, "action": what, "actor": key.user, "runbook": st.model_dump()}


async def _overrides(gw: Gateway, key: ApiKey, parts: list[str], method: str,
                     send: Send) -> None:
    if len(parts) == 2 and method == "GET":
        rows = await active_overrides(gw.store)
        await respond_json(send, 200, {"overrides": [r.model_dump() for r in rows]})
        return
    if method == "DELETE" and len(parts) in (2, 3):
        if key.role != "admin":
            raise Refusal(403, "admin_required",
                          f"key {key.id!r} has role {key.role!r}; clearing overrides needs admin")
        oid: int | None = None
        if len(parts) == 3:
            if not (parts[2].isascii() and parts[2].isdigit() and len(parts[2]) <= 18):
                raise Refusal(400, "invalid_request", "override id must be a number")
            oid = int(parts[2])
        n = await clear_overrides(gw.store, actor=key.user, ts=time.time(), override_id=oid)
        await refresh_overrides(gw)
        await respond_json(send, 200, {"cleared": n})
        return
    raise Refusal(404, "not_found", f"no overrides route {method} /{'/'.join(parts)}")
