"""A well-behaved agent: a few different questions, one tool call, then it closes its session.

Run `governor up` in one terminal, then `python examples/agents/well_behaved.py` in another.
"""

from __future__ import annotations

from _common import answer_text, connect, run

QUESTIONS = [
    "Summarise ticket 4711: the login page times out for EU users.",
    "Which service owns the EU login path?",
    "Draft a two-line reply to the customer.",
]


async def main() -> int:
    gc = await connect()
    sid = await gc.start_session(project="demo", workflow_tag="demo-support")
    print(f"session {sid} started (project demo, tag demo-support)")
    last = ""
    for i, q in enumerate(QUESTIONS, 1):
        out = await gc.chat([{"role": "user", "content": q}], model="support-cheap")
        g = out.governance
        last = answer_text(out.response)
        sim = " SIMULATED" if g.simulated else ""
        print(
            f"turn {i}: {g.provider}/{g.model}{sim}, {g.total_tokens} tokens, "
            f"${g.cost_usd:.6f}; session {out.session_tokens} tokens"
        )
    counted = await gc.tool("word_count", text=last)
    print(f"tool word_count -> {counted.result}")
    await gc.close()
    st = await gc.status()
    print(f"ENDING: {st.status} after {st.calls} calls, {st.tokens} tokens, ${st.cost_usd:.6f}")
    return 0 if st.status == "closed" else 1


if __name__ == "__main__":
    run(main())
