"""The last-known-state file a replica starts from during a database outage."""

from __future__ import annotations

from pathlib import Path

from ledger.snapshot import SNAPSHOT_NAME, Snapshot, load_snapshot


def test_a_damaged_snapshot_is_ignored_never_raised(tmp_path: Path) -> None:
    path = tmp_path / SNAPSHOT_NAME
    for text in ('{"ts": "x"}', '{"spend": [[["b", "k"], null]]}', "[1]", "{not json"):
        path.write_text(text)
        assert load_snapshot(tmp_path) == Snapshot()
    path.write_text('{"killed": {"s": "why"}, "ts": 5}')
    assert load_snapshot(tmp_path).killed == {"s": "why"}  # a sound one still loads
