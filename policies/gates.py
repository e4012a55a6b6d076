"""Gates a session's call passes before the policy core: closed by its owner, throttled by the
loop detector. Pure: the state is passed in (the live gateway reads it, replay reads the call's
decision record), so both decide the same way."""

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
