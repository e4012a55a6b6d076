"""Which roles may use which admin routes: one table, checked by every admin route.

A higher row does not imply a lower one (DESIGN.md, Roles): each set below names every role
that may act. `auditor` reads sessions and audit records and verifies the ledger; it never
kills, reloads, acknowledges or approves, nor clears overrides.
"""

from __future__ import annotations

from activities.gateway import Gateway
from policies.config.models import ApiKey
from policies.refusals import Refusal
from proxy.http import Scope, header_map
from proxy.llm_routes import bearer

SESSION_READERS = frozenset({"admin", "oncall", "auditor"})  # sessions list / show / status
RESPONDERS = frozenset({"admin", "oncall"})  # kill, alerts, runbook steps, overrides list
ADMINS = frozenset({"admin"})  # config reload, overrides clear


def require_role(
    gw: Gateway, scope: Scope, allowed: frozenset[str], what: str, code: str = "role_required"
) -> ApiKey:
    """The caller's key if its role is in `allowed`; else a 403 with `code` naming what it
    needs (401 for a missing or unknown key)."""
    key = gw.authenticate(bearer(header_map(scope)))
    if key.role not in allowed:
        need = " or ".join(sorted(allowed))
        raise Refusal(
            403,
            code,
            f"key {key.id!r} has role {key.role!r}; {what} needs a key with role {need}",
        )
    return key
