"""Checking a guardrail event row when it is recorded, like call rows (`ledger.call_rows`).

An event row describes a finding without its value: a field that could carry text (anything
not in the list below) is refused, so a caller cannot smuggle a matched value into the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HOOKS = frozenset({"request-input", "request-output", "tool-input", "tool-output"})
ACTIONS = frozenset({"allowed", "flagged", "redacted", "blocked"})
EVENT_KIND = "guardrail_event"  # marks an event row among call rows in the writer's journal

# (field, type, default); None default = required.
_FIELDS: tuple[tuple[str, type, Any], ...] = (
    ("ts", float, None),
    ("call_id", str, None),
    ("hook", str, None),
    ("seq", int, 0),
    ("detector", str, None),
    ("type", str, None),
    ("action", str, None),
    ("rule_id", str, ""),
    ("fingerprint", str, ""),
    ("session_id", str, None),
    ("project", str, "UNTAGGED"),
    ("workflow_tag", str, None),
    ("model", str, ""),
    ("verdict", str, None),  # a classifier's verdict, compact JSON (never the text it judged)
)
EVENT_FIELDS = frozenset(name for name, _, _ in _FIELDS)
_NULLABLE = frozenset({"session_id", "workflow_tag", "verdict"})
_MAX_LEN = 256  # names and ids only: nothing longer belongs in an event row
_MAX_VERDICT = 1024  # the verdict's JSON: flags, short category names, a score, timings


def normalize_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A complete, typed copy of `row` (without the journal's kind marker); ValueError names
    the first bad field."""
    unknown = row.keys() - EVENT_FIELDS - {"_kind"}
    if unknown:
        raise ValueError(f"guardrail event row has unknown field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, kind, default in _FIELDS:
        value = row.get(name)
        if value is None:
            if default is None and name not in _NULLABLE:
                raise ValueError(f"guardrail event row is missing required field {name!r}")
            value = default
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"guardrail event field {name!r} must be a number")
            value = float(value)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"guardrail event field {name!r} must be a whole number >= 0")
        elif type(value) is not str:
            raise ValueError(f"guardrail event field {name!r} must be a string, got {value!r}")
        elif len(value) > (_MAX_VERDICT if name == "verdict" else _MAX_LEN):
            raise ValueError(f"guardrail event field {name!r} is longer than {_MAX_LEN}")
        out[name] = value
    if out["hook"] not in HOOKS:
        raise ValueError(f"guardrail event field 'hook' must be one of {sorted(HOOKS)}")
    if out["action"] not in ACTIONS:
        raise ValueError(f"guardrail event field 'action' must be one of {sorted(ACTIONS)}")
    if not out["call_id"]:
        raise ValueError("guardrail event field 'call_id' must not be empty")
    return out
