"""Workflow sessions through the gateway: the agent brings its key, the gateway brings the rest.

`POST /gateway/sessions` authenticates the bearer key, resolves the identity (the key binds
user, team, role and maybe project; the body adds project, tag, environment, cost center like
the metadata headers) and the session policy from the gateway's own config, lets the caller
tighten (never loosen) that policy, records the session's owner and grant in the ledger, and
starts the session workflow. The workflow's input holds the identity (a key *id*, never the key
or its hash) and the policy; the session activities refuse any other identity or policy.

Per-session routes (owner, or an on-call/admin key): `POST /gateway/sessions/{id}/chat`,
`/tool`, `/close`, `GET /gateway/sessions/{id}/status`. A call after the session ended gets why
(`session_killed`, `session_closed`) from the completed workflow. `chat` and `tool` honour
`Idempotency-Key`: it names the turn's Temporal update (`activities.idempotency.TurnKeys`), so
a retry of a turn that ran gets its answer instead of running it again.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

from pydantic import ValidationError

from activities.gateway import CLOSED, Gateway
from activities.guardrails import gateway_salt
from activities.idempotency import body_fingerprint
from activities.llm_call import record_gate_refusal
from activities.session_types import SessionIdentity, grant_digest
from audit.decisions import record_workflow_gate
from audit.session_source import SESSION_WORKFLOW_PREFIX
from policies.clients import client_tool
from policies.config.models import NON_CALLING_ROLES, ApiKey
from policies.gates import GateRefusal
from policies.identity import resolve_identity
from policies.refusals import Refusal
from proxy.http import BodyTooLarge, Receive, Scope, Send, header_map, read_body, respond_json
from proxy.llm_routes import bearer, parse_json_body
from workflows.session_models import (
    ChatInput,
    ChatOutput,
    SessionPolicy,
    SessionStatus,
    ToolInput,
    ToolOutput,
)
from workflows.session_policy import session_policy_from_config

_MAX_BODY = 4 * 1024 * 1024
_META = ("project", "workflow_tag", "environment", "cost_center")
_LOOP_ACTIONS = ("alert", "throttle", "kill")  # weakest to strictest


class SessionWorkflows(Protocol):
    """What the gateway needs from Temporal (`workflows.session_client.TemporalSessions`)."""

    async def start(self, identity: SessionIdentity, policy: SessionPolicy) -> str: ...
    async def chat(
        self, session_id: str, inp: ChatInput, update_id: str | None = None
    ) -> ChatOutput: ...
    async def tool(
        self, session_id: str, inp: ToolInput, update_id: str | None = None
    ) -> ToolOutput: ...
    async def close(self, session_id: str) -> None: ...
    async def status(self, session_id: str) -> SessionStatus: ...


def tightened(base: SessionPolicy, asked: Any) -> SessionPolicy:
    """`base` with the caller's changes, each of which may only make the policy stricter."""
    if asked is None:
        return base
    if not isinstance(asked, dict):
        raise Refusal(400, "invalid_request", "`policy` must be an object")
    changes: dict[str, Any] = {}
    for name, value in asked.items():
        if name == "token_ceiling":
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            looser = ok and base.token_ceiling is not None and value > base.token_ceiling
        elif name in ("loop_multiplier", "repeat_threshold"):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            looser = ok and value > getattr(base, name)
        elif name == "loop_action":
            ok = value in _LOOP_ACTIONS
            looser = ok and _LOOP_ACTIONS.index(value) < _LOOP_ACTIONS.index(base.loop_action)
        else:
            raise Refusal(
                403,
                "policy_not_tightenable",
                f"policy field {name!r} cannot be set by the caller; only token_ceiling, "
                "loop_multiplier, repeat_threshold and loop_action can be tightened",
            )
        if not ok:
            raise Refusal(400, "invalid_request", f"policy {name!r} has an invalid value {value!r}")
        if looser:
            raise Refusal(
                403,
                "policy_loosening",
                f"policy {name!r}={value!r} is looser than the gateway's {getattr(base, name)!r} "
                "for this key; a session may only tighten its policy",
            )
        changes[name] = value
    try:
        return SessionPolicy(**{**base.model_dump(), **changes})
    except ValidationError as exc:
        raise Refusal(400, "invalid_request", f"policy: {exc.errors()[0]['msg']}") from None


async def _raw_body(scope: Scope, receive: Receive) -> bytes:
    try:
        return await read_body(scope, receive, _MAX_BODY)
    except BodyTooLarge:
        raise Refusal(413, "request_too_large", f"body exceeds {_MAX_BODY} bytes") from None


def _parsed(raw: bytes) -> dict[str, Any]:
    return parse_json_body(raw) if raw.strip() else {}


async def _body(scope: Scope, receive: Receive) -> dict[str, Any]:
    return _parsed(await _raw_body(scope, receive))


def _turn_update_id(
    gw: Gateway, key: ApiKey, session_id: str, headers: dict[str, str], raw: bytes
) -> str | None:
    """A turn's `Idempotency-Key` as its update id (`TurnKeys`: 422 for another body than the
    key's, 400 for an invalid key, as on the LLM routes); None without the header."""
    idem = headers.get("idempotency-key")
    if idem is None:
        return None
    limit = gw.config.settings.max_idempotency_key_chars
    if not 0 < len(idem) <= limit:
        raise Refusal(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1-{limit} characters"
        )
    fp = body_fingerprint(raw, gateway_salt(gw))
    return gw.turn_keys.update_id(key.id, session_id, idem, fp)


def _workflows(gw: Gateway) -> SessionWorkflows:
    wf: SessionWorkflows | None = gw.session_workflows
    if wf is None:
        raise Refusal(
            503,
            "workflow_sessions_unavailable",
            "this gateway has no Temporal client, so it cannot run workflow sessions; use "
            "`governor up` (or a proxy started with TEMPORAL_ADDRESS)",
        )
    return wf


def _refuse_non_calling(key: ApiKey) -> None:
    """Keys that read but never call models (metrics, auditor, viewer) open and drive none."""
    if key.role in NON_CALLING_ROLES:
        raise Refusal(403, "role_not_allowed",
                      f"key {key.id!r} has the {key.role} role: it reads, never calls models")


async def open_session(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    request_headers = header_map(scope)
    key = gw.authenticate(bearer(request_headers))
    _refuse_non_calling(key)
    doc = await _body(scope, receive)
    headers: dict[str, str] = {}
    for name in _META:
        v = doc.get(name)
        if v is not None:
            if not isinstance(v, str):
                raise Refusal(400, "invalid_request", f"`{name}` must be a string")
            headers["x-governor-" + name.replace("_", "-")] = v
    sid = doc.get("session_id") or f"agent-{uuid.uuid4().hex[:16]}"
    if not isinstance(sid, str) or len(sid) > 256:
        raise Refusal(400, "invalid_request", "`session_id` must be a string of 1-256 characters")
    headers["x-governor-session-id"] = sid
    if gw.state.killed.get(sid) == CLOSED:  # a close is final, like a kill: its calls are refused
        raise Refusal(409, "session_closed",
                      f"session {sid!r} was closed by its owner; start a new session id")
    start = doc.get("start_workflow", True)
    if not isinstance(start, bool):
        raise Refusal(400, "invalid_request", "`start_workflow` must be true or false")
    ident = resolve_identity(key, headers, gw.config.settings)
    identity = SessionIdentity(
        session_id=sid,
        user=ident.user,
        team=ident.team,
        project=ident.project,
        workflow_tag=ident.workflow_tag,
        environment=ident.environment,
        key_id=ident.key_id,
        role=ident.role,
        cost_center=ident.cost_center,
        # the tool that opened the session (Governor's SDK names itself): its calls count there
        client=client_tool(request_headers),
    )
    policy = tightened(session_policy_from_config(gw.config, identity), doc.get("policy"))
    wf = _workflows(gw) if start else None
    grant = grant_digest(identity, policy.model_dump(mode="json"))
    recorded = await gw.owners.claim_grant(ident, grant)
    if recorded != grant:
        raise Refusal(
            409,
            "session_exists",
            f"session {sid!r} already exists with another identity or policy; use a new id",
        )
    workflow_id = await wf.start(identity, policy) if wf is not None else None
    await respond_json(
        send,
        200,
        {
            "session_id": sid,
            "workflow_id": workflow_id,
            "identity": identity.model_dump(mode="json"),
            "policy": policy.model_dump(mode="json"),
        },
    )


def _record_gate_refusal(gw: Gateway, key: ApiKey, session_id: str, inp: ChatInput,
                         r: GateRefusal) -> None:
    """The ledger row of a chat turn the session workflow refused before its governed call
    (killed, closed, hard ceiling), with its decision record, as a proxy-path refusal has."""
    fields = dict(r.identity or {})
    owner = gw.owners.owner(session_id) or key.id
    fields.setdefault("key_id", owner)
    fields.setdefault("role", key.role if owner == key.id else "developer")
    fields["session_id"] = session_id
    try:
        ident = SessionIdentity(**fields).to_identity()
    except (ValidationError, TypeError):
        ident = SessionIdentity(session_id=session_id, user="", team="", project="UNTAGGED",
                                key_id=owner).to_identity()
    now = time.time()
    model = inp.body.get("model")
    record_gate_refusal(gw, ident, f"{SESSION_WORKFLOW_PREFIX}{session_id}:refused-"
                        f"{uuid.uuid4().hex[:16]}", model, inp.protocol, r,
                        record_workflow_gate(model, now, ident, r.gate, r), now)


async def session_op(
    gw: Gateway, op: str, session_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    headers = header_map(scope)
    key: ApiKey = gw.authenticate(bearer(headers))
    if op == "status" and key.role == "auditor":  # reads any session, like on-call
        await gw.owners.require_owner(key.id, "oncall", session_id)
    else:
        _refuse_non_calling(key)
        await gw.owners.require_owner(key.id, key.role, session_id)
    wf = _workflows(gw)
    out: Any
    try:
        if op in ("chat", "tool"):
            raw = await _raw_body(scope, receive)
            inp = (ChatInput if op == "chat" else ToolInput)(**_parsed(raw))
            update_id = _turn_update_id(gw, key, session_id, headers, raw)
            try:
                if isinstance(inp, ChatInput):
                    out = await wf.chat(session_id, inp, update_id)
                else:
                    out = await wf.tool(session_id, inp, update_id)
            except Refusal as r:
                if update_id is not None and r.code != "workflow_unavailable":
                    # a refused turn keeps nothing, as on the LLM routes: a retry runs
                    gw.turn_keys.refused(key.id, session_id, headers["idempotency-key"])
                if isinstance(r, GateRefusal) and isinstance(inp, ChatInput):
                    _record_gate_refusal(gw, key, session_id, inp, r)  # before its call
                raise
        elif op == "close":
            await wf.close(session_id)
            out = None
        else:
            out = await wf.status(session_id)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise Refusal(400, "invalid_request", f"{where}: {e['msg']}") from None
    except TypeError as exc:
        raise Refusal(400, "invalid_request", f"bad {op} body: {exc}") from None
    doc = {"session_id": session_id, "closed": True} if out is None else out.model_dump(mode="json")
    await respond_json(send, 200, doc)
