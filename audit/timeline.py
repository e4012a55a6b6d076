"""`governor audit show`: a session's governed record as a human timeline.

`timeline(sections, histories)` turns a session's record (sections as
`ledger.session_record.session_record` returns them, histories as `{"workflow_id", "run_id",
"history"}`) into `Entry`s ordered by time; `render(...)` prints them. Each call shows time,
route (virtual model -> provider/model), tokens in+out, cost in USD, the decision and why
(fallback reason, refusal code, the recorded decision inputs where there are some); kills show
actor and reason; guardrail events show hook, detector, type, action and the value's fingerprint
(never the value); runbook steps show action, phase, actor and result; a workflow session adds
the governance decisions its history recorded (budget fallback, loop detected, killed …).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from ledger.models import CLOSE_ACTOR

_JSON_PLAIN = base64.b64encode(b"json/plain").decode()
MAX_DETAIL = 300  # characters of a recorded decision shown on one line


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: `ts` epoch seconds UTC, `kind` (call, refusal, guardrail,
    decision, kill, close, alert, runbook_step, outcome), `text` for people, `ref` (a call id,
    alert run id …) for cross-reference."""

    ts: float
    kind: str
    text: str
    ref: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def utc(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _call(c: Mapping[str, Any]) -> Entry:
    route = f"{c.get('virtual_model') or '-'} -> {c.get('provider') or '-'}/{c.get('model') or '-'}"
    decision = str(c.get("decision") or "-")
    if decision == "blocked":
        text = f"refused {route}: {c.get('error_code') or 'blocked'} ({c.get('status_code')})"
        return Entry(float(c["ts"]), "refusal", text + _recorded(c), str(c.get("call_id", "")))
    tokens = f"{int(c.get('input_tokens') or 0)}+{int(c.get('output_tokens') or 0)} tokens"
    cached = int(c.get("cache_read_tokens") or 0) + int(c.get("cache_write_tokens") or 0)
    if cached:
        tokens += f" (+{cached} cache)"
    why = ""
    if c.get("fallback_reason"):
        why = f": {c['fallback_reason']}"
    elif c.get("error_code"):
        why = f": {c['error_code']} ({c.get('status_code')})"
    text = (f"call {route} {tokens} ${float(c.get('cost_usd') or 0):.6f} "
            f"{decision}{why}")
    return Entry(float(c["ts"]), "call", text + _recorded(c), str(c.get("call_id", "")))


def _recorded(c: Mapping[str, Any]) -> str:
    """The decision record and config version, where the call has them (compact)."""
    parts = []
    if c.get("config_version"):
        parts.append(f"config {c['config_version']}")
    rec = c.get("decision_record")
    if rec:
        s = rec if isinstance(rec, str) else orjson.dumps(rec).decode()
        parts.append("inputs " + (s if len(s) <= MAX_DETAIL else s[:MAX_DETAIL] + "…"))
    return f" [{'; '.join(parts)}]" if parts else ""


def _guardrail(e: Mapping[str, Any]) -> Entry:
    fp = str(e.get("fingerprint") or "")
    text = (f"guardrail {e.get('hook')} {e.get('detector')}/{e.get('type')} {e.get('action')}"
            + (f" fingerprint {fp[:24]}" if fp else "")
            + (f" rule {e['rule_id']}" if e.get("rule_id") else ""))
    return Entry(float(e["ts"]), "guardrail", text, str(e.get("call_id", "")))


def _kill(k: Mapping[str, Any]) -> Entry:
    if k.get("actor") == CLOSE_ACTOR:
        return Entry(float(k["ts"]), "close", "closed by its owner")
    return Entry(float(k["ts"]), "kill", f"killed by {k.get('actor')}: {k.get('reason')}")


def _alert(a: Mapping[str, Any]) -> Entry:
    text = f"alert {a.get('name')} {a.get('status')}" + (
        f" ({a['severity']})" if a.get("severity") else "") + (
        f": {a['summary']}" if a.get("summary") else "")
    return Entry(float(a.get("opened_ts") or 0), "alert", text, str(a.get("run_id", "")))


def _step(s: Mapping[str, Any]) -> Entry:
    text = (f"runbook step {s.get('step')} {s.get('action')} {s.get('phase')}"
            + (f" by {s['actor']}" if s.get("actor") else "")
            + (f": {s['result']}" if s.get("result") else ""))
    return Entry(float(s["ts"]), "runbook_step", text, str(s.get("run_id", "")))


def _outcome(o: Mapping[str, Any]) -> Entry:
    text = f"outcome {o.get('kind')} from {o.get('source') or '-'}" + (
        f" {o['url']}" if o.get("url") else "") + (
        f" pass rate {o['pass_rate']}" if o.get("pass_rate") is not None else "")
    return Entry(float(o.get("ts") or 0), "outcome", text, str(o.get("event_id", "")))


def history_decisions(histories: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """The governance decisions a session workflow returned from its turns, as its history
    recorded them (each Update's result carries `decisions`: kind, detail, turn)."""
    from datetime import datetime

    out: list[Entry] = []
    seen: set[tuple[Any, ...]] = set()
    for h in histories:
        for ev in (h.get("history") or {}).get("events") or []:
            attrs = ev.get("workflowExecutionUpdateCompletedEventAttributes")
            if not attrs:
                continue
            payloads = (((attrs.get("outcome") or {}).get("success") or {}).get("payloads")) or []
            doc = _decode(payloads[0]) if payloads else None
            if not isinstance(doc, dict):
                continue
            try:
                ts = datetime.fromisoformat(str(ev.get("eventTime")).replace("Z", "+00:00"))
            except ValueError:
                continue
            for d in doc.get("decisions") or []:
                if not isinstance(d, dict):
                    continue
                key = (d.get("turn"), d.get("kind"), d.get("detail"))
                if key in seen:
                    continue
                seen.add(key)
                at = d.get("at")
                when = float(at) if isinstance(at, int | float) else ts.timestamp()
                out.append(Entry(when, "decision",
                                 f"decision turn {d.get('turn')}: {d.get('kind')}: "
                                 f"{d.get('detail')}", str(h.get("workflow_id", ""))))
    return out


def _decode(payload: Mapping[str, Any]) -> Any:
    meta = payload.get("metadata") or {}
    if meta.get("encoding") != _JSON_PLAIN:
        return None
    try:
        return orjson.loads(base64.b64decode(payload.get("data") or ""))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        return None


def timeline(
    sections: Mapping[str, list[dict[str, Any]]],
    histories: Iterable[Mapping[str, Any]] = (),
) -> list[Entry]:
    """Every event of the session, oldest first (ties keep the record's order)."""
    entries: list[Entry] = []
    entries += [_call(c) for c in sections.get("calls", [])]
    entries += [_guardrail(e) for e in sections.get("guardrail_events", [])]
    entries += [_kill(k) for k in sections.get("kills", [])]
    entries += [_alert(a) for a in sections.get("alerts", [])]
    entries += [_step(s) for s in sections.get("runbook_steps", [])]
    entries += [_outcome(o) for o in sections.get("outcomes", [])]
    entries += history_decisions(histories)
    return sorted(entries, key=lambda e: e.ts)


def summary(session_id: str, sections: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The session's header: identity, status, totals (from the calls themselves)."""
    s = (sections.get("session") or [{}])[0]
    calls = sections.get("calls", [])
    return {
        "session_id": session_id,
        "kind": s.get("kind") or "-",
        "status": s.get("status") or "-",
        "user": s.get("user") or "",
        "team": s.get("team") or "",
        "project": s.get("project") or "",
        "workflow_tag": s.get("workflow_tag") or "",
        "calls": len(calls),
        "refusals": sum(1 for c in calls if c.get("decision") == "blocked"),
        "tokens": sum(int(c.get(k) or 0) for c in calls for k in (
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")),
        "cost_usd": round(sum(float(c.get("cost_usd") or 0) for c in calls), 9),
        "config_versions": [v.get("version_id") for v in sections.get("config_versions", [])],
    }


def render(head: Mapping[str, Any], entries: Iterable[Entry], source: str,
           tombstones: Iterable[Mapping[str, Any]] = ()) -> str:
    """The timeline as text: a header, then one line per entry (times in UTC)."""
    lines = [
        f"session   {head['session_id']} ({head['kind']}, {head['status']}) from the {source}",
        f"who       user {head['user'] or '-'}, team {head['team'] or '-'}, project "
        f"{head['project'] or '-'}, tag {head['workflow_tag'] or '-'}",
        f"usage     {head['calls']} calls ({head['refusals']} refused), {head['tokens']} tokens, "
        f"${head['cost_usd']:.6f}",
    ]
    if head.get("config_versions"):
        lines.append(f"config    {', '.join(str(v) for v in head['config_versions'])}")
    for t in tombstones:
        lines.append(f"deleted   {utc(t.get('ts'))} by {t.get('actor')} ({t.get('cause')}): "
                     f"{t.get('reason')}; {len(t.get('removed') or [])} archive object(s)")
    for e in entries:
        lines.append(f"{utc(e.ts)}  {e.text}")
    return "\n".join(lines) + "\n"
