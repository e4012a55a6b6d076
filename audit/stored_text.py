"""Guardrail verdicts checked again on the text a `store_text` deployment kept.

The stored prompt is the request's joined text *after* redaction, so running the guardrail
engine over it cannot reproduce a "redacted" verdict (the value is gone). What it can check, and
what this module checks, is that the stored text is consistent with the recorded verdicts. The
engine's pattern detectors run again over the stored text of the event's side, with the
deployment's salt, and:

- a finding the call let through (`allowed`, `flagged`) is found again, by the same detector
  and type, with the same fingerprint (HMAC-SHA256 of the value under the salt) — for detectors
  whose findings the ledger keeps in clear (prompt injection);
- a finding the call `redacted` or `blocked` is not in the stored text (the redaction held),
  unless the same value was let through elsewhere in the same call;
- secrets and personal data (`ledger.redaction.STORED_DETECTORS`) are never stored in clear,
  whatever the verdict: such a finding must not be found, and a `[REDACTED:<type>]` marker of
  its type must stand in for it (one per event of that type). Their fingerprints cannot be
  compared (the value is gone); that is the bound of this check.

Input side: `request-input` and `tool-output` events against `prompt_text`; output side:
`request-output` events against `completion_text`. `tool-input` events (tool-call arguments,
not part of the stored completion text) and classifier verdicts (events with a `verdict`:
recorded, never re-run) are not checked. Pure: no I/O; the salt is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.redaction import STORED_DETECTORS as HIDDEN
from policies.guardrails.engine import scan

SIDES = {"request-input": "prompt_text", "tool-output": "prompt_text",
         "request-output": "completion_text"}
LET_THROUGH = ("allowed", "flagged")
REMOVED = ("redacted", "blocked")
MARKER = re.compile(r"\[REDACTED:([a-z0-9_]{1,64})\]")
MAX_TEXT_CHARS = 4_000_000  # a stored text longer than this is not re-scanned (counted unchecked)


@dataclass
class TextChecks:
    checked: int = 0  # verdicts compared with the stored text
    unchecked: int = 0  # verdicts of calls without stored text, tool-input or classifier ones
    # (call id, recorded [action, detector, type, fingerprint], what the stored text shows)
    divergences: list[tuple[str, list[str], str]] = field(default_factory=list)


def check_stored_text(calls: Iterable[Mapping[str, Any]],
                      events: Iterable[Mapping[str, Any]], salt: bytes) -> TextChecks:
    """Compare each call's recorded guardrail events with its stored text (see module doc)."""
    by_call: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        by_call.setdefault(str(e.get("call_id")), []).append(e)
    out = TextChecks()
    for row in calls:
        cid = str(row.get("call_id"))
        evs = by_call.pop(cid, [])
        if not evs:
            continue
        for side in ("prompt_text", "completion_text"):
            mine = [e for e in evs if SIDES.get(str(e.get("hook"))) == side
                    and not e.get("verdict")]
            text = row.get(side)
            if not mine:
                continue
            if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
                out.unchecked += len(mine)
                continue
            detectors = frozenset(str(e.get("detector")) for e in mine)
            found = {(f.detector, f.type, f.fingerprint) for f in scan(text, detectors, salt)}
            markers: dict[str, int] = {}
            for m in MARKER.finditer(text):
                markers[m.group(1)] = markers.get(m.group(1), 0) + 1
            through = {str(e.get("fingerprint")) for e in mine
                       if e.get("action") in LET_THROUGH and e.get("detector") not in HIDDEN}
            for e in mine:
                action = str(e.get("action"))
                key = (str(e.get("detector")), str(e.get("type")), str(e.get("fingerprint")))
                rec = [action, *key]
                if action not in LET_THROUGH and action not in REMOVED:
                    out.unchecked += 1
                    continue
                out.checked += 1
                if key[0] in HIDDEN:
                    if key in found:
                        out.divergences.append((cid, rec, "in clear in the stored text"))
                    elif markers.get(key[1], 0) < sum(1 for x in mine if x.get("type") == key[1]):
                        out.divergences.append((cid, rec, "no redaction marker in the stored text"))
                elif action in LET_THROUGH:
                    if key not in found:
                        out.divergences.append((cid, rec, "not found in the stored text"))
                elif key[2] not in through and key in found:
                    out.divergences.append((cid, rec, "still in the stored text"))
        out.unchecked += sum(1 for e in evs if SIDES.get(str(e.get("hook"))) is None
                             or e.get("verdict"))
    out.unchecked += sum(len(v) for v in by_call.values())
    return out
