"""Decision records: the inputs of a call's governance decisions that are not in its config.

With the config version that decided a call (`audit.versions`) and this record, the pure policy
core can decide the call again: `decide()` reads the rate counters and budget spend (settled and
reserved) the call was compared against, the time, the estimates, the kill state and the
requested model; `plan_route()` reads the random draw and which targets' breakers were open.

Capture is cheap by construction: `Reads` wraps the four counter mappings the decision reads and
remembers exactly the keys it looked up (a dict store per lookup); `capture` turns them into a
few short lists. Nothing is serialised here: the record rides in the call row as a small dict,
the journal writes it with the row, and the ledger's writer turns it into compact JSON text.

Record shape (`calls.decision_record`, keys kept short, all optional but `v`):

    v   1 (format)                    m   requested model (first 256 chars)
    t   the decision's `now` (s)      ei, eo  input / output token estimates
    k   kill reason (killed session)  id  [role, subject_type] of the caller's key
    r   [[rule, scope value, window start, settled req, settled tok, held req, held tok], ...]
    s   [[budget, window start, settled USD, held USD], ...]
    o   the decision: ["allow"|"queue"|"fallback", virtual model, pinned target key or null]
        or ["refused", code]
    wp  target the session workflow pinned (wins over the decision's route)
    x   the random draw of the weighted route   bo  targets whose breaker was open
    rt  the planned target order (keys)
    lp  proxy loop detector: [baseline p95 or null, baseline sessions, token rate per hour]
    lf  its repeat inputs: [prompt fingerprint (HMAC-SHA256 under the deployment salt, 16 hex;
        "" for a text-less call), times in a row it ends the session's recent history (≤ 32)]
    lv  its verdict on this call: [kind "rate"|"repeat", action]
    g   a refusal before the policy core (`policies.gates`): [closed 0|1, throttle seconds left]
        (then only v, m, t, id, g and o are recorded)
    wg  a workflow-path turn refused before its governed call (`policies.gates.workflow_gate`):
        [session status, window tokens, token ceiling, window seconds, hard block 0|1]
        (then only v, m, t, id, wg and o are recorded)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from policies.config.gateway import GatewayConfig
from policies.config.models import RoutingConfig, Target
from policies.decision import PreCall
from policies.gates import session_gate, workflow_gate
from policies.identity import Identity
from policies.loops import is_loop, rate_baseline, rate_signal_action, repeats_over
from policies.refusals import Refusal

FORMAT = 1
MODEL_CHARS = 256


class Reads:
    """A read-only view of a counter mapping that remembers every key looked up."""

    __slots__ = ("seen", "src")

    def __init__(self, src: Any) -> None:
        self.src = src
        self.seen: dict[Any, Any] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        v = self.src.get(key, default)
        self.seen[key] = v
        return v


def record_decision(
    counts: Reads,
    spend: Reads,
    r_rates: Reads,
    r_spend: Reads,
    model: object,
    now: float,
    est_in: int,
    est_out: int,
    killed: str | None,
    ident: Identity,
    pre: PreCall | None,
    refused: Refusal | None,
) -> dict[str, Any]:
    """The record of one `decide()` call: its inputs (what it read) and its outcome."""
    rec: dict[str, Any] = {
        "v": FORMAT,
        "m": model[:MODEL_CHARS] if isinstance(model, str) else None,
        "t": now,
        "ei": est_in,
        "eo": est_out,
        "id": [ident.role, ident.subject_type],
    }
    if killed:
        rec["k"] = killed
    c, rr = counts.seen, r_rates.seen
    if c or rr:
        rows = []
        for key in (c.keys() | rr.keys()) if rr else c:
            a = c.get(key) or (0, 0)
            b = rr.get(key) or (0, 0)
            rows.append([key[0], key[1], key[2], a[0], a[1], b[0], b[1]])
        rec["r"] = rows
    if spend.seen:
        rs = r_spend.seen
        rec["s"] = [[k[0], k[1], v or 0.0, rs.get(k) or 0.0] for k, v in spend.seen.items()]
    if refused is not None:
        rec["o"] = ["refused", refused.code]
    elif pre is not None:
        rec["o"] = [pre.action, pre.vm.name, pre.pinned.key if pre.pinned else None]
    return rec


def record_gate(model: object, now: float, ident: Identity, closed: bool, throttle_left: float,
                refused: Refusal) -> dict[str, Any]:
    """The record of a call refused at a session gate (closed, loop-throttled): the state it
    was checked against and the refusal."""
    return {
        "v": FORMAT,
        "m": model[:MODEL_CHARS] if isinstance(model, str) else None,
        "t": now,
        "id": [ident.role, ident.subject_type],
        "g": [int(closed), round(throttle_left, 3)],
        "o": ["refused", refused.code],
    }


def record_workflow_gate(model: object, now: float, ident: Identity, gate: list[Any],
                         refused: Refusal) -> dict[str, Any]:
    """The record of a workflow-path turn its session workflow refused before the governed
    call (killed, closed, hard ceiling): the state it was checked against and the refusal."""
    return {
        "v": FORMAT,
        "m": model[:MODEL_CHARS] if isinstance(model, str) else None,
        "t": now,
        "id": [ident.role, ident.subject_type],
        "wg": list(gate),
        "o": ["refused", refused.code],
    }


def open_breakers(vm: RoutingConfig, allowed: Callable[[Target], bool]) -> list[str]:
    """The targets of `vm` whose breaker refused calls at decision time (`bo`)."""
    out = [r.target.key for r in vm.rules if not allowed(r.target)]
    out += [t.key for t in vm.fallbacks if not allowed(t) and t.key not in out]
    return out


# Re-deciding ------------------------------------------------------------------------------------


def rate_verdict(config: GatewayConfig, row: Mapping[str, Any], rec: Mapping[str, Any]
                 ) -> list[str] | None:
    """The proxy loop detector's rate signal on the recorded inputs (`lp`) under `config`:
    ["rate", action] when the session's rate is over the bar, else None."""
    p95, n, rate = [*rec["lp"], None, 0, 0.0][:3]
    st = config.settings
    tag = row.get("workflow_tag")
    baseline, source = rate_baseline(
        p95, int(n or 0), st.loop_min_sessions,
        st.loop_baselines.get(tag) if tag else None, st.loop_default_baseline_tokens_per_hour,
    )
    if not is_loop(float(rate or 0.0), baseline, st.loop_multiplier):
        return None
    return ["rate", rate_signal_action(source, st.loop_action, st.loop_rate_untrusted_action)]


def repeat_verdict(config: GatewayConfig, rec: Mapping[str, Any]) -> list[str] | None:
    """The loop detector's repeat signal on the recorded inputs (`lf`) under `config`:
    ["repeat", action] when the prompt's run reaches the threshold, else None."""
    fp, run = [*rec["lf"], "", 0][:2]
    st = config.settings
    if not fp or not repeats_over(int(run or 0), st.loop_repeat_threshold):
        return None
    return ["repeat", st.loop_action]


@dataclass(frozen=True, slots=True)
class Redecided:
    decision: list[Any]  # what `o` would be now
    route: list[str] | None  # what `rt` would be now (None: no route was planned)


def identity_of(row: Mapping[str, Any], rec: Mapping[str, Any]) -> Identity:
    role, subject = (rec.get("id") or ["developer", "user"])[:2]
    return Identity(
        key_id=row.get("key_id") or "",
        user=row.get("user") or "",
        team=row.get("team") or "",
        role=role,
        subject_type=subject,
        project=row.get("project") or "UNTAGGED",
        session_id=row.get("session_id"),
        workflow_tag=row.get("workflow_tag"),
        environment=row.get("environment"),
        cost_center=row.get("cost_center"),
        client=row.get("client_tool"),
    )


def inputs_of(rec: Mapping[str, Any]) -> tuple[dict[Any, Any], ...]:
    """The recorded counters as the mappings `decide()` reads."""
    counts: dict[Any, Any] = {}
    held: dict[Any, Any] = {}
    for rule, val, start, req, tok, hreq, htok in rec.get("r") or ():
        key = (rule, val, float(start))
        counts[key] = (req, tok)
        held[key] = (hreq, htok)
    spend: dict[Any, float] = {}
    held_spend: dict[Any, float] = {}
    for bid, start, spent, res in rec.get("s") or ():
        spend[(bid, float(start))] = spent
        held_spend[(bid, float(start))] = res
    return counts, spend, held, held_spend


def redecide(
    config: GatewayConfig,
    row: Mapping[str, Any],
    rec: Mapping[str, Any],
    decide: Callable[..., PreCall],
    plan_route: Callable[..., list[Target]],
) -> Redecided:
    """Run `decide()` (and `plan_route()` where the call planned a route) again on the recorded
    inputs under `config`. The policy functions are passed in, so the caller decides whose code
    runs (today's `policies.decision.decide`, or a candidate's)."""
    if "g" in rec:  # refused at a session gate, before the policy core
        closed, left = [*rec["g"], 0, 0.0][:2]
        gate = session_gate(row.get("session_id"), bool(closed), float(left or 0.0))
        return Redecided(["refused", gate.code] if gate is not None else ["passed gate"], None)
    if "wg" in rec:  # refused by the session workflow, before its governed call
        status, used, ceiling, window, hard = [*rec["wg"], "", 0, None, 0.0, 0][:5]
        gate = workflow_gate(str(row.get("session_id") or ""), str(status), None, None,
                             int(used or 0), None if ceiling is None else int(ceiling),
                             float(window or 0.0), bool(hard))
        return Redecided(["refused", gate.code] if gate is not None else ["passed gate"], None)
    counts, spend, held, held_spend = inputs_of(rec)
    ident = identity_of(row, rec)
    try:
        pre = decide(
            config, ident, rec.get("m"), counts, spend, float(rec.get("t", row.get("ts", 0.0))),
            int(rec.get("ei", 0)), rec.get("k") or False,
            est_output_tokens=int(rec.get("eo", 0)),
            reserved_rates=held, reserved_spend=held_spend,
        )
    except Refusal as r:
        return Redecided(["refused", r.code], None)
    decision = [pre.action, pre.vm.name, pre.pinned.key if pre.pinned else None]
    if "x" not in rec or rec.get("wp") or pre.pinned is not None:
        return Redecided(decision, None)
    blocked = set(rec.get("bo") or ())
    targets = plan_route(pre.vm, float(rec["x"]), lambda t: t.key not in blocked)
    return Redecided(decision, [t.key for t in targets])
