"""`GovernorClient`: a governed agent session for agents that run outside Temporal.

The agent's loop stays where it is (a script, a service); each turn is an Update on the session's
workflow, so the session still gets the ceiling, loop detector, budget fallback and kill switch,
and survives a worker crash. The identity comes from the agent's Governor API key, resolved
against the config here, exactly as the proxy resolves it: a caller never names its own user.

    gc = await GovernorClient.connect()                 # TEMPORAL_ADDRESS or 127.0.0.1:7233
    await gc.start_session(api_key="gk-dev-developer", project="demo", workflow_tag="triage")
    out = await gc.chat([{"role": "user", "content": "hi"}], model="support-cheap")
    print(out.response["choices"][0]["message"]["content"], out.governance.model)
    await gc.close()
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.session_types import SessionIdentity
from governor.up import TASK_QUEUE, connect_temporal
from policies.config.gateway import GatewayConfig
from policies.identity import resolve_identity as envelope
from policies.refusals import Refusal
from workflows.session import SessionWorkflow
from workflows.session_client import session_handle, start_session
from workflows.session_models import (
    ChatInput,
    ChatOutput,
    SessionPolicy,
    SessionStatus,
    ToolInput,
    ToolOutput,
)
from workflows.session_policy import session_policy_from_config

DEFAULT_ADDRESS = "127.0.0.1:7233"


class GovernanceRefused(Exception):
    """Governance (or the session's state) refused a call: `code` is machine-readable
    (session_killed, session_closed, session_ceiling_exceeded, rate_limited, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def refusal_of(exc: BaseException) -> GovernanceRefused:
    """The governance refusal inside a failed update, or a generic one naming the failure."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return GovernanceRefused(cause.type or "refused", cause.message)
        cause = cause.__cause__
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        return GovernanceRefused("session_not_found", "no running session workflow has this id")
    return GovernanceRefused("call_failed", str(exc))


def resolve_identity(
    config: GatewayConfig,
    api_key: str,
    *,
    project: str | None = None,
    workflow_tag: str | None = None,
    session_id: str | None = None,
    environment: str | None = None,
    cost_center: str | None = None,
) -> SessionIdentity:
    """Who the session acts for: the same identity envelope as the proxy's (the key binds
    user, team and role; a metadata value that contradicts the key is refused, never used)."""
    from activities.gateway import hash_key

    key = config.keys_by_hash.get(hash_key(api_key))
    if key is None:
        raise GovernanceRefused(
            "invalid_api_key", "this API key is not known to the gateway; check it or ask for one"
        )
    meta = (
        ("project", project),
        ("workflow-tag", workflow_tag),
        ("environment", environment),
        ("cost-center", cost_center),
    )
    headers = {f"x-governor-{name}": value for name, value in meta if value}
    try:
        ident = envelope(key, headers, config.settings)
    except Refusal as r:
        raise GovernanceRefused(r.code, r.message) from None
    return SessionIdentity(
        session_id=session_id or f"agent-{uuid.uuid4().hex[:16]}",
        user=ident.user,
        team=ident.team,
        project=ident.project,
        workflow_tag=ident.workflow_tag,
        environment=ident.environment,
        key_id=ident.key_id,
        role=ident.role,
        cost_center=ident.cost_center,
    )


class GovernorClient:
    """A Temporal client plus the gateway config; one current session at a time (or pass ids)."""

    def __init__(self, client: Client, config: GatewayConfig, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.config = config
        self.task_queue = task_queue
        self.session_id: str | None = None

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        *,
        namespace: str | None = None,
        config_dir: str | Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        task_queue: str = TASK_QUEUE,
    ) -> GovernorClient:
        """Defaults from TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_TLS_CERT / _KEY and
        GOVERNOR_CONFIG_DIR (else `examples/config`), the same as `governor up`."""
        from activities.config_source import load_config_dir

        env = os.environ
        cert = tls_cert or (
            Path(env["TEMPORAL_TLS_CERT"]) if env.get("TEMPORAL_TLS_CERT") else None
        )
        key = tls_key or (Path(env["TEMPORAL_TLS_KEY"]) if env.get("TEMPORAL_TLS_KEY") else None)
        client = await connect_temporal(
            address or env.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS,
            namespace or env.get("TEMPORAL_NAMESPACE") or "default",
            cert,
            key,
        )
        cfg_dir = config_dir or env.get("GOVERNOR_CONFIG_DIR") or "examples/config"
        return cls(client, load_config_dir(cfg_dir), task_queue)

    def _sid(self, session_id: str | None) -> str:
        sid = session_id or self.session_id
        if sid is None:
            raise GovernanceRefused("no_session", "call start_session(...) first")
        return sid

    async def start_session(
        self,
        api_key: str,
        *,
        project: str | None = None,
        workflow_tag: str | None = None,
        session_id: str | None = None,
        environment: str | None = None,
        cost_center: str | None = None,
        policy: SessionPolicy | None = None,
        **policy_overrides: Any,
    ) -> str:
        """Start (or rejoin, same `session_id`) a session; it becomes the current one.

        The policy is resolved from the config for this identity; `policy_overrides` (e.g.
        `loop_action="throttle"`) win over it, or pass a whole `policy`.
        """
        ident, pol = self.resolve(
            api_key,
            project=project,
            workflow_tag=workflow_tag,
            session_id=session_id,
            environment=environment,
            cost_center=cost_center,
            **policy_overrides,
        )
        pol = policy or pol
        await start_session(self.client, ident, pol, self.task_queue)
        self.session_id = ident.session_id
        return ident.session_id

    def resolve(
        self,
        api_key: str,
        *,
        project: str | None = None,
        workflow_tag: str | None = None,
        session_id: str | None = None,
        environment: str | None = None,
        cost_center: str | None = None,
        **policy_overrides: Any,
    ) -> tuple[SessionIdentity, SessionPolicy]:
        """Identity and policy for a session, e.g. to start your own agent workflow that uses
        `governor.sdk.workflow` (pass both in its input)."""
        ident = resolve_identity(
            self.config,
            api_key,
            project=project,
            workflow_tag=workflow_tag,
            session_id=session_id,
            environment=environment,
            cost_center=cost_center,
        )
        return ident, session_policy_from_config(self.config, ident, **policy_overrides)

    async def chat(
        self,
        messages: list[dict[str, Any]],
        model: str,
        *,
        session_id: str | None = None,
        protocol: str = "openai",
        **params: Any,
    ) -> ChatOutput:
        """One governed turn; raises `GovernanceRefused` when governance says no."""
        body = {"model": model, "messages": messages, **params}
        inp = ChatInput(body=body, protocol=protocol)  # type: ignore[arg-type]
        try:
            return await session_handle(self.client, self._sid(session_id)).execute_update(
                SessionWorkflow.chat, inp
            )
        except (WorkflowUpdateFailedError, RPCError) as exc:
            raise refusal_of(exc) from None

    async def tool(
        self, name: str, *, session_id: str | None = None, **arguments: Any
    ) -> ToolOutput:
        """Run a tool registered on the worker, as an activity of the session."""
        try:
            return await session_handle(self.client, self._sid(session_id)).execute_update(
                SessionWorkflow.tool, ToolInput(name=name, arguments=arguments)
            )
        except (WorkflowUpdateFailedError, RPCError) as exc:
            raise refusal_of(exc) from None

    async def kill(self, reason: str, *, actor: str = "sdk", session_id: str | None = None) -> None:
        """Kill the session (its in-flight call is cancelled). For an audited kill that also
        reaches proxy sessions, use `governor sessions kill` / the admin API."""
        await session_handle(self.client, self._sid(session_id)).signal(
            SessionWorkflow.kill, args=[reason, actor]
        )

    async def close(self, *, session_id: str | None = None) -> None:
        """End the session normally; later calls are refused as `session_closed`."""
        await session_handle(self.client, self._sid(session_id)).signal(SessionWorkflow.close)

    async def status(self, *, session_id: str | None = None) -> SessionStatus:
        """Tokens, cost, calls, rate vs baseline, state and recent governance decisions."""
        try:
            return await session_handle(self.client, self._sid(session_id)).query(
                SessionWorkflow.status
            )
        except RPCError as exc:
            raise refusal_of(exc) from None
