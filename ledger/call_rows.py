"""Checking a call row at the moment it is recorded, not when the batch reaches the database.

A row with a typo'd field or a non-numeric token count must fail in the caller's hands with a
message naming the field: once journaled, a bad row could only be quarantined, never fixed.
Normalising also fills defaults so every journaled line is a complete, self-describing record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

PATHS = frozenset({"proxy", "workflow"})
PROTOCOLS = frozenset({"openai", "anthropic"})
DECISIONS = frozenset({"allowed", "fallback", "blocked", "error"})

_REQUIRED = ("call_id", "ts", "path", "protocol", "decision")

# (field, type, default). Defaults exist for everything a blocked or failed call may not know.
_FIELDS: tuple[tuple[str, Any, Any], ...] = (
    ("call_id", str, None),
    ("ts", float, None),
    ("path", str, None),
    ("key_id", str, ""),
    ("user", str, ""),
    ("team", str, ""),
    ("project", str, "UNTAGGED"),
    ("session_id", str, None),
    ("workflow_tag", str, None),
    ("environment", str, None),
    ("cost_center", str, None),
    ("client_tool", str, None),
    ("request_fingerprint", str, None),
    ("protocol", str, None),
    ("virtual_model", str, ""),
    ("provider", str, ""),
    ("model", str, ""),
    ("model_version", str, ""),
    ("decision", str, None),
    ("fallback_reason", str, None),
    ("status_code", int, 0),
    ("error_code", str, None),
    ("stream", bool, False),
    ("input_tokens", int, 0),
    ("output_tokens", int, 0),
    ("cache_read_tokens", int, 0),
    ("cache_write_tokens", int, 0),
    ("cost_usd", float, 0.0),
    ("latency_ms", float, 0.0),
    ("upstream_ms", float, 0.0),
    ("prompt_sha256", str, ""),
    ("prompt_bytes", int, 0),
    ("completion_sha256", str, ""),
    ("completion_bytes", int, 0),
    ("prompt_text", str, None),
    ("completion_text", str, None),
    ("config_version", str, None),
)

# The decision record (`audit.decisions`): a small dict while the row is in memory and in the
# journal, compact JSON text once written (`decision_record_text`, on the writer's side).
DECISION_RECORD = "decision_record"
CALL_FIELDS: frozenset[str] = frozenset(name for name, _, _ in _FIELDS) | {DECISION_RECORD}
TEXT_FIELDS = ("prompt_text", "completion_text")


_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1  # BIGINT: what both databases can store


def _checked(name: str, kind: type, value: Any) -> Any:
    """`value` as `kind`, or ValueError. Only whole numbers convert to int, and NaN/inf are
    refused because JSON (the journal) cannot carry them."""
    if kind is str or kind is bool:
        if type(value) is kind:
            return value
        what = "a string" if kind is str else "a boolean"
        raise ValueError(f"call row field {name!r} must be {what}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"call row field {name!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"call row field {name!r} must be finite, got {value!r}")
    if kind is float:
        return float(value)
    if value != int(value):
        raise ValueError(f"call row field {name!r} must be a whole number, got {value!r}")
    value = int(value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"call row field {name!r} is out of range: {value}")
    return value


def normalize_call(row: Mapping[str, Any], *, store_text: bool = False) -> dict[str, Any]:
    """A complete, typed copy of `row`; raises ValueError naming the first bad field.

    Unless `store_text`, prompt and completion text are dropped here, before the row is
    journaled, so clear text never reaches disk when the deployment did not opt in.
    """
    unknown = row.keys() - CALL_FIELDS
    if unknown:
        raise ValueError(f"call row has unknown field(s): {', '.join(sorted(unknown))}")
    for name in _REQUIRED:
        if row.get(name) is None:
            raise ValueError(f"call row is missing required field {name!r}")
    out: dict[str, Any] = {}
    get = row.get
    # Exact, in-range values pass with one or two comparisons each; anything else goes
    # through _checked, which converts it or says what is wrong.
    for name, kind, default in _FIELDS:
        value: Any = get(name)
        if value is None:
            value = default  # "not known": the column's default (None where nullable)
        elif type(value) is not kind:
            value = _checked(name, kind, value)
        elif kind is int:
            if not _INT_MIN <= value <= _INT_MAX:
                value = _checked(name, kind, value)
        elif kind is float and value - value != 0.0:  # NaN or infinity
            value = _checked(name, kind, value)
        out[name] = value
    rec = get(DECISION_RECORD)
    if rec is not None and type(rec) is not dict and type(rec) is not str:
        raise ValueError(f"call row field 'decision_record' must be a mapping, got {rec!r}")
    out[DECISION_RECORD] = rec
    if not out["call_id"]:
        raise ValueError("call row field 'call_id' must not be empty")
    if out["path"] not in PATHS:
        raise ValueError(
            f"call row field 'path' must be one of {sorted(PATHS)}, got {out['path']!r}"
        )
    if out["protocol"] not in PROTOCOLS:
        raise ValueError(
            f"call row field 'protocol' must be one of {sorted(PROTOCOLS)}, got {out['protocol']!r}"
        )
    if out["decision"] not in DECISIONS:
        raise ValueError(
            f"call row field 'decision' must be one of {sorted(DECISIONS)}, got {out['decision']!r}"
        )
    if not store_text:
        out["prompt_text"] = None
        out["completion_text"] = None
    return out


def decision_record_text(row: dict[str, Any]) -> None:
    """Serialise the row's decision record to its column's compact JSON, in place (idempotent:
    the ledger's writer calls it off the request path, once per batch row)."""
    rec = row.get(DECISION_RECORD)
    if rec is not None and type(rec) is not str:
        row[DECISION_RECORD] = orjson.dumps(rec).decode()
    elif rec is None:  # rows made before the audit columns (a journal, a generator)
        row[DECISION_RECORD] = None
        row.setdefault("config_version", None)


def total_tokens(row: Mapping[str, Any]) -> int:
    """The token count budgets and session ceilings see: every billed token, cache included."""
    return (
        row["input_tokens"]
        + row["output_tokens"]
        + row["cache_read_tokens"]
        + row["cache_write_tokens"]
    )


def session_deltas(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-session increments contributed by newly inserted calls, in session_id order."""
    acc: dict[str, dict[str, Any]] = {}
    for r in rows:
        sid = r["session_id"]
        if sid is None:
            continue
        d = acc.get(sid)
        if d is None:
            acc[sid] = {
                "session_id": sid,
                "kind": r["path"],
                "user": r["user"],
                "team": r["team"],
                "project": r["project"],
                "workflow_tag": r["workflow_tag"],
                "status": "open",
                "created_ts": r["ts"],
                "updated_ts": r["ts"],
                "calls": 1,
                "tokens": total_tokens(r),
                "cost_usd": r["cost_usd"],
            }
            continue
        d["calls"] += 1
        d["tokens"] += total_tokens(r)
        d["cost_usd"] += r["cost_usd"]
        d["created_ts"] = min(d["created_ts"], r["ts"])
        d["updated_ts"] = max(d["updated_ts"], r["ts"])
    return [acc[k] for k in sorted(acc)]
