"""Gates a session's call passes before the policy core: closed by its owner, throttled by the
loop detector (the proxy path, `session_gate`); killed, closed or over its hard token ceiling
(the session workflow, `workflow_gate`). Pure: the state is passed in (the live gateway or
workflow reads it, replay reads the call's decision record), so both decide the same way."""

from __future__ import annotations

from policies.refusals import Refusal


def session_gate(session_id: str | None, closed: bool, throttle_left: float) -> Refusal | None:
    """The refusal of a call of `session_id`: `closed` (its owner closed it) -> 409
    `session_closed`; `throttle_left` seconds of a loop throttle still to run (> 0) -> 429
    `session_throttled` with that Retry-After; else None (the call goes on to `decide()`)."""
    if closed:
        return Refusal(409, "session_closed",
                       f"session {session_id!r} was closed by its owner; start a new session id")
    if throttle_left > 0:
        return Refusal(429, "session_throttled",
                       f"session {session_id!r} is throttled by the loop detector for "
                       f"{throttle_left:.0f}s more; check the agent for a loop",
                       retry_after=throttle_left)
    return None


def workflow_gate(session_id: str, status: str, killed_by: str | None, kill_reason: str | None,
                  window_tokens: int, token_ceiling: int | None, window_seconds: float,
                  hard_block: bool) -> Refusal | None:
    """The session workflow's refusal of a turn before its governed call: `status` "killed"
    -> 403 `session_killed`; "closed" -> 409 `session_closed`; a `hard_block` ceiling whose
    window already holds `window_tokens` >= `token_ceiling` -> 429 `session_ceiling_exceeded`;
    else None (the turn's governed call goes on to `decide()`)."""
    if status == "killed":
        return Refusal(403, "session_killed",
                       f"session {session_id!r} was killed by {killed_by or 'an operator'} "
                       f"({kill_reason or 'no reason given'}); start a new session")
    if status == "closed":
        return Refusal(409, "session_closed",
                       f"session {session_id!r} is closed; start a new session")
    if hard_block and token_ceiling is not None and window_tokens >= token_ceiling:
        return Refusal(429, "session_ceiling_exceeded",
                       f"session {session_id!r} used {window_tokens} tokens of its "
                       f"{token_ceiling} ceiling per {window_seconds:.0f}s window; wait for the "
                       "window to move on or start a new session")
    return None


class GateRefusal(Refusal):
    """A workflow-path refusal decided at `workflow_gate`, carried back to the gateway with
    what it was decided on: `gate` = [status, window tokens, ceiling, window seconds, hard
    block 0|1] (a call row's decision record `wg`) and `identity` (the session's, as the
    workflow holds it; None when only part of it is known)."""

    __slots__ = ("gate", "identity")

    def __init__(self, status: int, code: str, message: str, gate: list[object],
                 identity: dict[str, object] | None = None) -> None:
        super().__init__(status, code, message)
        self.gate = gate
        self.identity = identity
