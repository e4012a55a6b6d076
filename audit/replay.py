"""`governor audit replay`: a session's recorded governance, decided again by today's code.

Two checks, on a session's record (its call rows, the config versions that decided them, and
its workflow history when it ran as a workflow):

1. **History** (workflow sessions): the history goes through Temporal's `Replayer` on today's
   workflow code, and every activity the replayed code schedules is compared, input by input,
   with the activity the history recorded. `Replayer` alone only fails when the *commands*
   change; comparing inputs also catches a decision that only changes what the next call
   carries (a session that no longer pins the cheaper model after a budget fallback).
2. **Decisions** (every call with a decision record, both paths): `decide()` and, where the
   call planned a weighted route, `plan_route()` are run again on the call's recorded inputs
   (`audit.decisions`) under the config version that decided it (`audit.versions`), or under
   `--config DIR` ("what would this config have decided").

The record comes from the ledger database (the history from the Temporal server, else from the
session archive), from the admin API (`GET /gateway/audit/sessions/{id}/decisions`), or from an
exported bundle (`audit.bundle`), so replay works after the server deleted the workflow.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from audit.decisions import rate_verdict, redecide, repeat_verdict
from audit.stored_text import TextChecks, check_stored_text
from audit.versions import config_from_body
from policies.config.gateway import GatewayConfig

log = logging.getLogger("governor.audit")

MAX_DIVERGENCES_SHOWN = 1000  # a report names at most this many (the count is always exact)


@dataclass
class SessionRecord:
    """What replay needs of one session."""

    session_id: str
    calls: list[dict[str, Any]] = field(default_factory=list)  # ledger rows, ts order
    versions: dict[str, str] = field(default_factory=dict)  # version id -> body (JSON text)
    # (workflow id, Temporal history JSON {"events": [...]}) per run, oldest first
    histories: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    guardrail_events: list[dict[str, Any]] = field(default_factory=list)  # recorded verdicts
    # the session's events when `guardrail_events` holds only the first of them (the admin
    # API sends at most `archive.max_export_calls`); None: all of them are here
    guardrail_events_total: int | None = None
    # The deployment's fingerprint salt, when the replaying side holds it (direct mode): the
    # guardrail verdicts are then checked against the stored text (`audit.stored_text`)
    salt: bytes | None = None
    # ...or that check as the proxy made it (admin API: the salt never leaves the proxy)
    text_checks: TextChecks | None = None


@dataclass(frozen=True, slots=True)
class Divergence:
    call_id: str
    check: str  # "decision" | "route" | "loop" | "workflow" | "guardrail"
    recorded: Any
    replayed: Any

    def text(self) -> str:
        return (f"call {self.call_id}: {self.check} recorded {self.recorded!r}, "
                f"now {self.replayed!r}")


@dataclass
class ReplayReport:
    session_id: str
    history: str = "none"  # "reproduced" | "failed: …" | "none (…)"
    activities_checked: int = 0
    decisions: int = 0
    reproduced: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (call id, why)
    config: str = "recorded versions"
    # guardrail (and classifier) verdicts by action: recorded, not re-run
    guardrail_verdicts: dict[str, int] = field(default_factory=dict)
    # guardrail verdicts checked against the stored text (store_text), and those not checked
    guardrail_checked: int = 0
    guardrail_unchecked: int = 0
    guardrail_events_total: int = 0  # the session's events; more than the verdicts: cut

    @property
    def ok(self) -> bool:
        return not self.divergences and not self.history.startswith("failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "ok": self.ok,
            "config": self.config,
            "history": self.history,
            "activities_checked": self.activities_checked,
            "decisions": self.decisions,
            "reproduced": self.reproduced,
            "divergences": [
                {"call_id": d.call_id, "check": d.check, "recorded": d.recorded,
                 "replayed": d.replayed}
                for d in self.divergences[:MAX_DIVERGENCES_SHOWN]
            ],
            "divergence_count": len(self.divergences),
            "skipped": [{"call_id": c, "why": w} for c, w in self.skipped],
            "guardrail_verdicts": self.guardrail_verdicts,
            "guardrail_checked": self.guardrail_checked,
            "guardrail_unchecked": self.guardrail_unchecked,
            "guardrail_events_total": self.guardrail_events_total,
            "guardrail_events_truncated": self._guardrail_cut(),
        }

    def _guardrail_cut(self) -> bool:
        return sum(self.guardrail_verdicts.values()) < self.guardrail_events_total

    def lines(self) -> list[str]:
        out = [f"session {self.session_id} (config: {self.config})",
               f"history: {self.history}"
               + (f" ({self.activities_checked} activities compared)"
                  if self.activities_checked else "")]
        out.append(f"{self.reproduced} of {self.decisions} decisions reproduced")
        if self.guardrail_verdicts:
            parts = ", ".join(f"{n} {a}" for a, n in sorted(self.guardrail_verdicts.items()))
            out.append(f"guardrail verdicts: {parts} (recorded); {self.guardrail_checked} "
                       f"checked against the stored text, {self.guardrail_unchecked} not "
                       "(no stored text, tool-input, or a classifier's)")
        if self._guardrail_cut():
            out.append(f"guardrail verdicts counted on the first "
                       f"{sum(self.guardrail_verdicts.values())} of the session's "
                       f"{self.guardrail_events_total} events (archive.max_export_calls)")
        for d in self.divergences[:MAX_DIVERGENCES_SHOWN]:
            out.append("  DIVERGED " + d.text())
        for c, w in self.skipped:
            out.append(f"  skipped call {c}: {w}")
        return out


# Where records come from ---------------------------------------------------------------------


def record_from_bundle(path: Path) -> SessionRecord:
    """A session record from an exported bundle (`audit.bundle`: its manifest's hashes are
    checked first). Raises `audit.bundle.BundleError` naming what does not match."""
    from audit.bundle import read_bundle

    b = read_bundle(path)
    calls = sorted(b.records.get("call", []), key=lambda r: (r.get("ts") or 0.0,
                                                            str(r.get("call_id"))))
    versions = {v["version_id"]: v["body"] for v in b.records.get("config_version", [])
                if isinstance(v.get("version_id"), str) and isinstance(v.get("body"), str)}
    hist = [(str(h.get("workflow_id")), h["history"]) for h in b.histories
            if isinstance(h.get("history"), dict)]
    return SessionRecord(b.session_id, calls, versions, hist,
                         list(b.records.get("guardrail_event", [])))


def histories_of(runs: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(h.get("workflow_id")), h["history"]) for h in runs
            if isinstance(h.get("history"), dict)]


def record_from_doc(doc: dict[str, Any]) -> SessionRecord:
    """A session record from the admin API's answer (`proxy.audit_routes`)."""
    tc = doc.get("guardrail_text_checks")
    checks = None
    if isinstance(tc, dict):
        checks = TextChecks(int(tc.get("checked") or 0), int(tc.get("unchecked") or 0),
                            [(str(d[0]), list(d[1]), str(d[2]))
                             for d in tc.get("divergences") or [] if len(d) == 3])
    return SessionRecord(
        session_id=str(doc.get("session_id") or ""),
        calls=list(doc.get("calls") or []),
        versions={v["version_id"]: v["body"] for v in doc.get("config_versions") or []},
        histories=histories_of(doc.get("histories") or []),
        guardrail_events=list(doc.get("guardrail_events") or []),
        guardrail_events_total=(total if isinstance(total := doc.get("guardrail_events_total"),
                                                    int) else None),
        text_checks=checks,
    )


def text_checks_doc(c: TextChecks) -> dict[str, Any]:
    """`TextChecks` as the admin API sends it (`record_from_doc` reads it back)."""
    return {"checked": c.checked, "unchecked": c.unchecked,
            "divergences": [list(d) for d in c.divergences[:MAX_DIVERGENCES_SHOWN]]}


async def record_from_ledger(store: Any, session_id: str, salt: bytes | None = None
                             ) -> SessionRecord:
    """The session's call rows, the config versions they name and its guardrail events, from
    the ledger database (`ledger.session_record`). With `salt`, the guardrail verdicts are
    checked against the stored text here (`text_checks`); the text itself is never kept."""
    from ledger.session_record import session_record

    sections = await session_record(store, session_id)
    rows = sections["calls"]
    checks = None
    if salt is not None:
        checks = await asyncio.to_thread(check_stored_text, rows,
                                         sections["guardrail_events"], salt)
    for r in rows:
        r["prompt_text"] = r["completion_text"] = None  # checked above; never sent on
    versions = {v["version_id"]: v["body"] for v in sections["config_versions"]}
    return SessionRecord(session_id, rows, versions,
                         guardrail_events=sections["guardrail_events"], text_checks=checks)


async def histories_from_temporal(client: Any, workflow_id: str
                                  ) -> list[tuple[str, dict[str, Any]]]:
    """Every run's history of the workflow (oldest first) from a Temporal server, as
    `audit.session_source.fetch_histories` reads them for show and export; empty when the
    server no longer has it (deleted, past retention)."""
    from audit.session_source import fetch_histories

    return histories_of(await fetch_histories(client, workflow_id))


async def histories_from_archive(archive: Any, session_id: str
                                 ) -> list[tuple[str, dict[str, Any]]]:
    """The session's workflow histories as the archive (`audit.archive`) keeps them."""
    from audit.archive import load_session

    arch = await load_session(archive, session_id)
    return histories_of(arch.histories) if arch is not None else []


# Check 1: the history ------------------------------------------------------------------------


def _scheduled(history: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(activity type, decoded input arguments) of every activity the history scheduled."""
    out = []
    for ev in history.get("events", []):
        a = ev.get("activityTaskScheduledEventAttributes")
        if a is None:
            continue
        args = []
        for p in (a.get("input") or {}).get("payloads", []):
            try:
                args.append(orjson.loads(base64.b64decode(p.get("data", ""))))
            except (ValueError, orjson.JSONDecodeError):
                args.append(p.get("data"))
        out.append(((a.get("activityType") or {}).get("name", ""), args))
    return out


def _replayed_args(args: Sequence[Any]) -> list[Any]:
    from temporalio.contrib.pydantic import pydantic_data_converter

    out = []
    for p in pydantic_data_converter.payload_converter.to_payloads(list(args)):
        try:
            out.append(orjson.loads(p.data))
        except orjson.JSONDecodeError:
            out.append(base64.b64encode(p.data).decode())
    return out


def _call_id(args: list[Any]) -> str:
    first = args[0] if args else None
    if isinstance(first, dict):
        return str(first.get("call_id") or "")
    return ""


def _differences(recorded: Any, replayed: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        out = []
        for k in sorted(recorded.keys() | replayed.keys()):
            out += _differences(recorded.get(k), replayed.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if recorded == replayed else [(path or "input", recorded, replayed)]


async def replay_history(
    history: dict[str, Any], workflow_id: str, workflows: Sequence[type] | None = None
) -> tuple[str, int, list[Divergence]]:
    """Run the history through `Replayer` on today's workflow code and compare every
    scheduled activity's input. Returns (verdict, activities compared, divergences)."""
    from temporalio.client import WorkflowHistory
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.exceptions import ApplicationError
    from temporalio.worker import (
        HandleUpdateInput,
        Interceptor,
        Replayer,
        StartActivityInput,
        UnsandboxedWorkflowRunner,
        WorkflowInboundInterceptor,
        WorkflowInterceptorClassInput,
        WorkflowOutboundInterceptor,
    )

    if workflows is None:
        from workflows.session import SessionWorkflow

        workflows = [SessionWorkflow]
    started: list[tuple[str, list[Any]]] = []

    class _Out(WorkflowOutboundInterceptor):
        def start_activity(self, input: StartActivityInput) -> Any:
            started.append((input.activity, _replayed_args(input.args)))
            return super().start_activity(input)

    answered: dict[str, Any] = {}  # update id -> its replayed result (or the refusal's type)

    class _In(WorkflowInboundInterceptor):
        def init(self, outbound: WorkflowOutboundInterceptor) -> None:
            super().init(_Out(outbound))

        async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
            try:
                result = await super().handle_update_handler(input)
            except ApplicationError as exc:
                answered[input.id] = {"refused": exc.type}
                raise
            answered[input.id] = {"result": _replayed_args([result])[0]}
            return result

    class _Capture(Interceptor):
        def workflow_interceptor_class(
            self, input: WorkflowInterceptorClassInput
        ) -> type[WorkflowInboundInterceptor] | None:
            return _In

    replayer = Replayer(
        workflows=list(workflows),
        runtime=_quiet_runtime(),
        data_converter=pydantic_data_converter,
        interceptors=[_Capture()],
        # Replay runs the workflow code as the worker does, minus the import sandbox, so the
        # activity inputs it schedules can be captured here.
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    result = await replayer.replay_workflow(
        WorkflowHistory.from_json(workflow_id, history), raise_on_replay_failure=False
    )
    verdict = "reproduced"
    if result.replay_failure is not None:
        verdict = f"failed: {result.replay_failure}"
    divergences: list[Divergence] = []
    recorded = _scheduled(history)
    for i, (kind, args) in enumerate(recorded):
        call = _call_id(args) or f"activity #{i + 1} ({kind})"
        if i >= len(started):
            if result.replay_failure is None:
                divergences.append(Divergence(call, "workflow", kind, "(not scheduled)"))
            continue
        new_kind, new_args = started[i]
        if new_kind != kind:
            divergences.append(Divergence(call, "workflow", kind, new_kind))
            continue
        if len(args) != len(new_args):
            divergences.append(Divergence(call, "workflow", args, new_args))
            continue
        diffs = [d for a, b in zip(args, new_args, strict=True) for d in _differences(a, b)]
        if diffs:
            divergences.append(Divergence(call, "workflow", {w: o for w, o, _ in diffs},
                                          {w: n for w, _, n in diffs}))
    for uid, old_answer in _update_answers(history).items():
        new_answer = answered.get(uid)
        if new_answer is None:
            continue  # not replayed (the replay failed before it): the verdict says so
        call = _answer_call_id(old_answer) or f"update {uid}"
        diffs = _differences(old_answer, new_answer)
        if diffs:
            divergences.append(Divergence(call, "workflow", {w: o for w, o, _ in diffs},
                                          {w: n for w, _, n in diffs}))
    return verdict, min(len(recorded), len(started)), divergences


def _update_answers(history: dict[str, Any]) -> dict[str, Any]:
    """Update id -> what the workflow answered ({"result": …} or {"refused": type})."""
    out: dict[str, Any] = {}
    for ev in history.get("events", []):
        a = ev.get("workflowExecutionUpdateCompletedEventAttributes")
        if a is None:
            continue
        uid = (a.get("meta") or {}).get("updateId", "")
        outcome = a.get("outcome") or {}
        if "success" in outcome:
            payloads = (outcome["success"] or {}).get("payloads") or [{}]
            try:
                out[uid] = {"result": orjson.loads(base64.b64decode(payloads[0].get("data", "")))}
            except (ValueError, orjson.JSONDecodeError):
                continue
        elif "failure" in outcome:
            info = (outcome["failure"] or {}).get("applicationFailureInfo") or {}
            out[uid] = {"refused": info.get("type", "")}
    return out


def _answer_call_id(answer: dict[str, Any]) -> str:
    r = answer.get("result")
    if isinstance(r, dict):
        g = r.get("governance")
        if isinstance(g, dict) and g.get("call_id"):
            return str(g["call_id"])
        if r.get("call_id"):
            return str(r["call_id"])
    return ""


_RUNTIME: Any = None


def _quiet_runtime() -> Any:
    """A Temporal runtime whose core logs only errors, through Python logging (the replay's
    verdict carries a nondeterminism failure; the core's own WARN line would go to stdout)."""
    global _RUNTIME
    if _RUNTIME is None:
        from temporalio.runtime import (
            LogForwardingConfig,
            LoggingConfig,
            Runtime,
            TelemetryConfig,
            TelemetryFilter,
        )

        _RUNTIME = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
            filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")))))
    return _RUNTIME


# Check 2: the decisions ----------------------------------------------------------------------


def _record_of(row: dict[str, Any]) -> dict[str, Any] | None:
    rec = row.get("decision_record")
    if isinstance(rec, str):
        try:
            rec = orjson.loads(rec)
        except orjson.JSONDecodeError:
            return None
    return rec if isinstance(rec, dict) else None


def replay_decisions(
    record: SessionRecord,
    report: ReplayReport,
    config: GatewayConfig | None = None,
    decide: Callable[..., Any] | None = None,
    plan_route: Callable[..., Any] | None = None,
) -> None:
    """Re-decide every call that has a decision record; divergences and skips into `report`.
    `decide`/`plan_route`: the policy entry points (default: today's, looked up at call time)."""
    import policies.decision
    import policies.routing

    configs: dict[str, GatewayConfig | None] = {}
    tracks: dict[str, _LoopTrack] = {}  # per session: the loop detector as replay follows it
    for row in record.calls:
        call_id = str(row.get("call_id"))
        rec = _record_of(row)
        if rec is None or "o" not in rec:
            report.skipped.append((call_id, "no decision record (decided before records)"))
            continue
        cfg = config
        if cfg is None:
            vid = row.get("config_version") or ""
            if vid not in configs:
                body = record.versions.get(vid)
                try:
                    configs[vid] = config_from_body(body) if body else None
                except ValueError as exc:
                    log.warning("config version %s unreadable: %s", vid, exc)
                    configs[vid] = None
            cfg = configs[vid]
            if cfg is None:
                report.skipped.append((call_id, f"config version {vid or '(none)'} not stored"))
                continue
        try:
            new = redecide(cfg, row, rec, decide or policies.decision.decide,
                           plan_route or policies.routing.plan_route)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            report.skipped.append((call_id, f"decision record unreadable ({type(exc).__name__})"))
            continue
        report.decisions += 1
        same = True
        if list(rec["o"]) != new.decision:
            report.divergences.append(Divergence(call_id, "decision", rec["o"], new.decision))
            same = False
        if same and new.route is not None and rec.get("rt") is not None \
                and list(rec["rt"]) != new.route:
            report.divergences.append(Divergence(call_id, "route", rec["rt"], new.route))
            same = False
        if same and "lp" in rec:
            same = _loop_same(cfg, row, rec, tracks, report)
        if same:
            report.reproduced += 1


@dataclass
class _LoopTrack:
    """A session's loop detector state as replay follows it."""

    fired: set[str] = field(default_factory=set)  # signals that gave a verdict
    until: float = 0.0  # a throttle's end: the signals re-arm after it


def _loop_same(config: GatewayConfig, row: dict[str, Any], rec: dict[str, Any],
               tracks: dict[str, _LoopTrack], report: ReplayReport) -> bool:
    """The proxy loop detector again: its repeat signal (from the recorded fingerprint run,
    `lf`), else its rate signal (`lp`); one verdict per signal per session, as live. The
    signals that fired follow the record, so one divergence does not cascade; a throttle
    re-arms them when it ends. Records without `lf` (before fingerprints were recorded) keep
    their repeat verdict unchecked."""
    recorded = list(rec["lv"]) if rec.get("lv") else None
    tr = tracks.setdefault(str(row.get("session_id") or ""), _LoopTrack())
    t = float(rec.get("t", row.get("ts", 0.0)))
    if tr.until and tr.until <= t:
        tr.fired.clear()
        tr.until = 0.0
    new = None
    if "lf" not in rec and recorded is not None and recorded[0] == "repeat":
        new = recorded
    elif "lf" in rec and "repeat" not in tr.fired:
        new = repeat_verdict(config, rec)
    if new is None and "rate" not in tr.fired:
        new = rate_verdict(config, row, rec)
    if recorded is not None:
        tr.fired.add(recorded[0])
        if recorded[1] == "throttle":
            tr.until = t + config.settings.loop_throttle_seconds
    if recorded != new:
        report.divergences.append(Divergence(str(row.get("call_id")), "loop", recorded, new))
        return False
    return True


async def replay(
    record: SessionRecord,
    *,
    config: GatewayConfig | None = None,
    config_label: str | None = None,
    workflows: Sequence[type] | None = None,
) -> ReplayReport:
    """Both checks on one session record."""
    report = ReplayReport(record.session_id)
    if config is not None:
        report.config = config_label or "a given config"
    if record.histories:
        verdicts = []
        for wid, history in record.histories:
            verdict, n, divs = await replay_history(history, wid, workflows)
            verdicts.append(verdict)
            report.activities_checked += n
            report.divergences.extend(divs)
        failed = [v for v in verdicts if v != "reproduced"]
        report.history = failed[0] if failed else (
            "reproduced" + (f" ({len(verdicts)} runs)" if len(verdicts) > 1 else ""))
    elif any(r.get("path") == "workflow" for r in record.calls):
        report.history = ("failed: the workflow's history is neither on the Temporal server "
                          "nor in the record (replay its exported bundle)")
    else:
        report.history = "none (proxy session: no workflow)"
    replay_decisions(record, report, config)
    for e in record.guardrail_events:
        a = str(e.get("action") or "?")
        report.guardrail_verdicts[a] = report.guardrail_verdicts.get(a, 0) + 1
    report.guardrail_events_total = max(record.guardrail_events_total or 0,
                                        len(record.guardrail_events))
    checks = record.text_checks
    if checks is None and record.salt is not None:  # a bundle, with the salt at hand
        checks = await asyncio.to_thread(check_stored_text, record.calls,
                                         record.guardrail_events, record.salt)
    if checks is None:
        report.guardrail_unchecked = len(record.guardrail_events)
    else:
        report.guardrail_checked, report.guardrail_unchecked = checks.checked, checks.unchecked
        report.divergences.extend(Divergence(c, "guardrail", rec, now)
                                  for c, rec, now in checks.divergences)
    return report
