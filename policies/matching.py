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
