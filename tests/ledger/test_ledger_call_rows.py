"""Call rows are checked and completed when recorded, with errors that name the field."""

from __future__ import annotations

import pytest
from ledger_testdb import call_row

from ledger.call_rows import normalize_call, total_tokens

MINIMAL = {
    "call_id": "c1",
    "ts": 1.0,
    "path": "proxy",
    "protocol": "anthropic",
    "decision": "blocked",
}


def test_a_minimal_blocked_call_gets_defaults_for_what_it_never_knew() -> None:
    row = normalize_call(MINIMAL)
    assert row["project"] == "UNTAGGED"
    assert row["input_tokens"] == 0 and row["cost_usd"] == 0.0 and row["stream"] is False
    assert row["session_id"] is None and row["workflow_tag"] is None
    assert normalize_call({**MINIMAL, "model": None})["model"] == ""


@pytest.mark.parametrize("missing", ["call_id", "ts", "path", "protocol", "decision"])
def test_required_fields_are_named_when_missing(missing: str) -> None:
    row = dict(MINIMAL)
    del row[missing]
    with pytest.raises(ValueError, match=missing):
        normalize_call(row)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_tokens", "12"),
        ("input_tokens", 1.5),
        ("input_tokens", 2**63),
        ("cost_usd", float("inf")),
        ("stream", "yes"),
        ("user", 7),
        ("decision", "approved"),
        ("path", "cli"),
        ("protocol", "gemini"),
    ],
)
def test_wrong_values_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        normalize_call(call_row("c1", **{field: value}))


def test_whole_numbers_are_accepted_in_either_numeric_type() -> None:
    row = normalize_call(call_row("c1", input_tokens=12.0, cost_usd=1, ts=5))
    assert (row["input_tokens"], row["cost_usd"], row["ts"]) == (12, 1.0, 5.0)
    assert type(row["input_tokens"]) is int and type(row["ts"]) is float


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="tokens_in"):
        normalize_call(call_row("c1", tokens_in=4))


def test_text_is_dropped_unless_opted_in() -> None:
    row = call_row("c1", prompt_text="secret", completion_text="reply")
    assert normalize_call(row)["prompt_text"] is None
    assert normalize_call(row, store_text=True)["completion_text"] == "reply"


def test_total_tokens_counts_cache_tokens_too() -> None:
    assert total_tokens(normalize_call(call_row("c1"))) == 100 + 20 + 5 + 1
