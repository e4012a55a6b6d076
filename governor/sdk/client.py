"""`GovernorClient`: a governed agent session, for agents that run outside Temporal.

The agent needs the gateway's URL and its own API key, nothing else: the gateway resolves who
the key is and the session's policy from its own config, starts the session workflow, and runs
each turn as an Update on it — so the session gets the ceiling, loop detector, budget fallback
and kill switch, and survives a worker crash. The agent may tighten its policy (a lower
`token_ceiling`, ...), never loosen it.

    import asyncio
    from governor.sdk.client import GovernorClient

    async def main() -> None:
        gov = await GovernorClient.connect("http://127.0.0.1:8080", "gk-dev-developer")
        await gov.start_session(project="demo", workflow_tag="triage")
        out = await gov.chat([{"role": "user", "content": "hi"}], model="support-cheap")
        print(out.response["choices"][0]["message"]["content"], out.governance.model)
        await gov.close()

    asyncio.run(main())

`GOVERNOR_URL` and `GOVERNOR_API_KEY` are the defaults of `connect()`.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from activities.session_types import SessionIdentity
from workflows.session_models import ChatOutput, SessionPolicy, SessionStatus, ToolOutput

DEFAULT_URL = "http://127.0.0.1:8080"
# How the SDK names itself to the gateway: the session's calls are counted under the tool
# `governor-sdk` (the adoption panel's "an SDK"), whatever HTTP library carries them.
USER_AGENT = "governor-sdk/0.1 (python)"


class GovernanceRefused(Exception):
    """Governance (or the session's state) refused a call: `code` is machine-readable
    (session_killed, session_closed, session_ceiling_exceeded, rate_limited, ...)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class GovernorClient:
    """One agent's connection to the gateway; one current session at a time (or pass ids)."""

    def __init__(self, gateway_url: str, api_key: str, *, timeout: float = 660.0) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.gateway_url,
            headers={"authorization": f"Bearer {api_key}", "user-agent": USER_AGENT},
            timeout=timeout,
        )
        self.session_id: str | None = None

    @classmethod
    async def connect(
        cls, gateway_url: str | None = None, api_key: str | None = None
    ) -> GovernorClient:
        """Defaults: GOVERNOR_URL (else the local `governor up`) and GOVERNOR_API_KEY."""
        key = api_key or os.environ.get("GOVERNOR_API_KEY")
        if not key:
            raise GovernanceRefused("missing_api_key", "pass api_key or set GOVERNOR_API_KEY")
        gc = cls(gateway_url or os.environ.get("GOVERNOR_URL") or DEFAULT_URL, key)
        try:
            await gc._http.get("/healthz")
        except httpx.HTTPError as exc:
            await gc._http.aclose()
            raise GovernanceRefused(
                "gateway_unreachable", f"cannot reach the gateway at {gc.gateway_url}: {exc}"
            ) from None
        return gc

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            r = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise GovernanceRefused(
                "gateway_unreachable", f"{method} {self.gateway_url}{path}: {exc}"
            ) from None
        try:
            doc = r.json()
        except ValueError:
            doc = {}
        if r.status_code >= 400:
            err = doc.get("error") if isinstance(doc, dict) else None
            err = err if isinstance(err, dict) else {}
            raise GovernanceRefused(
                str(err.get("code") or f"http_{r.status_code}"),
                str(err.get("message") or r.text[:500]),
                r.status_code,
            )
        return doc if isinstance(doc, dict) else {}

    def _sid(self, session_id: str | None) -> str:
        sid = session_id or self.session_id
        if sid is None:
            raise GovernanceRefused("no_session", "call start_session(...) first")
        return sid

    async def open_session(
        self,
        *,
        project: str | None = None,
        workflow_tag: str | None = None,
        session_id: str | None = None,
        environment: str | None = None,
        cost_center: str | None = None,
        start_workflow: bool = True,
        **tighten: Any,
    ) -> tuple[SessionIdentity, SessionPolicy]:
        """Open a session at the gateway: the identity and policy it resolved for this key;
        with the workflow started it becomes the current session.

        `start_workflow=False` only registers them, for your own agent workflow that uses
        `governor.sdk.workflow` (pass both in its input). `tighten`: token_ceiling,
        loop_multiplier, repeat_threshold, loop_action — stricter than the config only."""
        body: dict[str, Any] = {
            "project": project,
            "workflow_tag": workflow_tag,
            "session_id": session_id,
            "environment": environment,
            "cost_center": cost_center,
            "start_workflow": start_workflow,
        }
        body = {k: v for k, v in body.items() if v is not None}
        if tighten:
            body["policy"] = tighten
        doc = await self._call("POST", "/gateway/sessions", body)
        identity, policy = SessionIdentity(**doc["identity"]), SessionPolicy(**doc["policy"])
        if start_workflow:
            self.session_id = identity.session_id  # the current session from now on
        return identity, policy

    async def start_session(self, **kwargs: Any) -> str:
        """Start (or rejoin, same `session_id`) a session workflow; it becomes the current one.
        Takes the keyword arguments of `open_session`."""
        identity, _ = await self.open_session(**kwargs)
        return identity.session_id

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
        body = {"body": {"model": model, "messages": messages, **params}, "protocol": protocol}
        doc = await self._call("POST", f"/gateway/sessions/{self._sid(session_id)}/chat", body)
        return ChatOutput(**doc)

    async def tool(
        self, name: str, *, session_id: str | None = None, **arguments: Any
    ) -> ToolOutput:
        """Run a tool registered on the worker, as an activity of the session."""
        doc = await self._call(
            "POST",
            f"/gateway/sessions/{self._sid(session_id)}/tool",
            {"name": name, "arguments": arguments},
        )
        return ToolOutput(**doc)

    async def kill(self, reason: str, *, session_id: str | None = None) -> None:
        """Kill a session (an on-call or admin key): audited, in-flight work cancelled. An
        agent ends its own session with `close()`."""
        await self._call(
            "PUT", f"/gateway/sessions/{self._sid(session_id)}/kill", {"reason": reason}
        )

    async def close(self, *, session_id: str | None = None) -> None:
        """End the session normally; later calls are refused as `session_closed`."""
        await self._call("POST", f"/gateway/sessions/{self._sid(session_id)}/close")

    async def status(self, *, session_id: str | None = None) -> SessionStatus:
        """Tokens, cost, calls, rate vs baseline, state and recent governance decisions."""
        doc = await self._call("GET", f"/gateway/sessions/{self._sid(session_id)}/status")
        return SessionStatus(**doc)

    async def aclose(self) -> None:
        """Close the HTTP connections (the session itself is left as it is)."""
        await self._http.aclose()
