"""A looping agent: it asks the same thing over and over until the loop detector kills it.

Run `governor up` in one terminal, then `python examples/agents/looping.py` in another.
The session's repeat detector (the config's `loop_repeat_threshold`) and the token-rate detector
(3x the workflow tag's p95) both watch it; the session policy's `loop_action` is `kill`.
"""

from __future__ import annotations

from _common import connect, run

from governor.sdk.client import GovernanceRefused

PROMPT = "Is the build green yet? Check again."
MAX_TURNS = 50


async def main() -> int:
    gc = await connect()
    sid = await gc.start_session(project="demo", workflow_tag="demo-looping")
    print(f"session {sid} started (project demo, tag demo-looping)")
    for turn in range(1, MAX_TURNS + 1):
        try:
            out = await gc.chat([{"role": "user", "content": PROMPT}], model="support-cheap")
        except GovernanceRefused as refused:
            print(f"turn {turn}: refused ({refused.code}): {refused.message}")
            break
        print(f"turn {turn}: {out.governance.total_tokens} tokens, session status {out.status}")
        for d in out.decisions:
            print(f"  governance decision: {d.kind}: {d.detail}")
    st = await gc.status()
    print(f"ENDING: {st.status} by {st.killed_by}: {st.kill_reason}")
    return 0 if st.status == "killed" else 1


if __name__ == "__main__":
    run(main())
