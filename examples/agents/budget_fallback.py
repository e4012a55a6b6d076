"""An agent that hits its budget and is moved to the cheaper model.

Run `governor up` in one terminal, then `python examples/agents/budget_fallback.py` in another.
It works under project `demo-budget`, whose sample budget (examples/config/demo-budgets.yaml) is a
tiny daily ceiling with `on_exceed: fallback_to_cheaper`: no premium call's estimate fits it, so
the gateway serves the first call on `code-review-strong`'s `cheaper` target and the session pins
that target for the rest. Every turn prints why.
"""

from __future__ import annotations

from _common import connect, run

MODEL = "code-review-strong"
PROMPTS = [
    "Review this diff: retry loop without backoff in payments/client.py.",
    "Review this diff: new index on orders(created_at).",
    "Review this diff: feature flag cleanup in checkout.",
]


async def main() -> int:
    gc = await connect()
    ident, policy = await gc.open_session(project="demo-budget", workflow_tag="demo-review")
    sid = ident.session_id
    cheaper = policy.cheaper_targets.get(MODEL)  # resolved by the gateway from its config
    target = cheaper.model if cheaper else "?"
    print(f"session {sid} started (project demo-budget, virtual model {MODEL})")
    models = []
    for i, p in enumerate(PROMPTS, 1):
        out = await gc.chat([{"role": "user", "content": p}], model=MODEL)
        g = out.governance
        models.append(g.model)
        left = "-" if g.budget_remaining_usd is None else f"${g.budget_remaining_usd:.4f}"
        print(f"turn {i}: {g.provider}/{g.model}, ${g.cost_usd:.6f}, budget left {left}")
        if g.fallback_reason:
            print(f"  routed to a fallback because: {g.fallback_reason}")
        for d in out.decisions:
            print(f"  governance decision: {d.kind}: {d.detail}")
    await gc.close()
    st = await gc.status()
    pin = st.pinned.get(MODEL)
    moved = models[-1] == target
    why = next((d.detail for d in st.decisions if d.kind == "budget_fallback"), None)
    print(
        f"ENDING: {'moved to the cheaper model ' + target if moved else 'not moved'} "
        f"(models used: {', '.join(models)}; pinned: {pin.model if pin else '-'})"
    )
    if why:
        print(f"  why: {why}")
    return 0 if moved else 1


if __name__ == "__main__":
    run(main())
