"""Resolving a session's workflow-side policy from the gateway config (done by the starter).

The workflow never reads config itself: the resolved `SessionPolicy` is part of its input, so a
replay sees exactly the policy the session ran under even after the config changed.
"""

from __future__ import annotations

from typing import Any

from activities.session_types import PinnedTarget, SessionIdentity
from policies.config.gateway import GatewayConfig
from policies.matching import matches
from policies.routing import cheaper_target
from workflows.session_models import SessionPolicy


def session_policy_from_config(
    config: GatewayConfig, identity: SessionIdentity, **overrides: Any
) -> SessionPolicy:
    """Ceiling from the first matching session-scoped token rule, loop detector from the
    settings, cheaper targets of every virtual model; `overrides` win over all of it."""
    ident = identity.to_identity()
    st = config.settings
    # The loop detector reads the same settings on both paths (proxy and workflow).
    fields: dict[str, Any] = {
        "repeat_threshold": st.loop_repeat_threshold,
        "loop_multiplier": st.loop_multiplier,
        "loop_window_seconds": st.loop_window_seconds,
        "default_baseline_tokens_per_hour": st.loop_default_baseline_tokens_per_hour,
        "min_sessions": st.loop_min_sessions,
        "loop_action": st.loop_action,
        "rate_untrusted_action": st.loop_rate_untrusted_action,
        "configured_baseline_tokens_per_hour": (
            st.loop_baselines.get(identity.workflow_tag) if identity.workflow_tag else None
        ),
        "throttle_seconds": st.loop_throttle_seconds,
    }
    for rule in config.rate_limits:
        if rule.scope == "session" and rule.limit.tokens and matches(rule.when, ident):
            on_breach = rule.on_breach
            fields.update(
                token_ceiling=rule.limit.tokens,
                ceiling_window_seconds=float(rule.limit.seconds),
                ceiling_on_breach="hard_block" if on_breach == "queue_then_429" else on_breach,
            )
            break
    cheaper: dict[str, PinnedTarget] = {}
    for name, vm in config.virtual_models.items():
        t = cheaper_target(vm, config.prices, vm.rules[0].target)
        if t is not None:
            cheaper[name] = PinnedTarget(provider=t.provider, model=t.model)
    fields["cheaper_targets"] = cheaper
    fields.update(overrides)
    return SessionPolicy(**fields)
