"""Does a `when:` / `scope:` selector apply to this caller?"""

from __future__ import annotations

from policies.config.models import MetadataMatch
from policies.identity import Identity


def matches(sel: MetadataMatch, ident: Identity) -> bool:
    if sel.keys and ident.key_id not in sel.keys:
        return False
    for name, want in sel.metadata.items():
        if ident.get(name) != want:
            return False
    for name, want in sel.subjects.items():
        have = ident.subject_type if name == "type" else ident.get(name)
        if have != want:
            return False
    return True


def selector_dims(sel: MetadataMatch) -> set[str]:
    """The identity fields `matches(sel, …)` reads, by their ledger names (`project`,
    `session_id`, `key_id` …): a reader of ledger aggregates needs to group by these alone."""
    out: set[str] = set(sel.metadata)  # canonical names: project, team, user, session_id, …
    out.update(k for k in sel.subjects if k in ("user", "team"))
    if sel.keys or "type" in sel.subjects or "role" in sel.subjects:
        out.add("key_id")  # the ledger has no type or role: they are the calling key's
    return out


def selector_values(sel: MetadataMatch) -> dict[str, str] | None:
    """The ledger values `matches(sel, …)` requires, by ledger name (equalities a ledger query
    can filter on, so it reads only the calls the selector matches); None when it matches no
    ledger row (two values required of one field). The rest (a list of several keys, the
    subject's type or role, which are the calling key's) is left to `matches`."""
    out: dict[str, str] = {}
    pairs = [*sel.metadata.items(), *((k, v) for k, v in sel.subjects.items()
                                      if k in ("user", "team"))]  # fmt: skip
    if len(set(sel.keys)) == 1:
        pairs.append(("key_id", sel.keys[0]))
    for name, want in pairs:  # "" too: the ledger reader takes it for "" or NULL, as `matches`
        if out.setdefault(name, want) != want:
            return None
    return out
