"""The journal: one line per row, rotation, torn-line tolerance, one owner per directory."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ledger.errors import LedgerError
from ledger.journal import Journal


def test_appended_rows_read_back_in_order(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    for i in range(5):
        j.append({"call_id": f"c{i}", "n": i})
    (seg,) = j.segments()
    assert seg == j.active
    assert [r["n"] for r in j.read(seg)] == [0, 1, 2, 3, 4]
    j.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.append({"call_id": "a"})
    j.append({"call_id": "b"})
    seg = j.active
    assert seg is not None
    j.close()
    with seg.open("ab") as f:  # the process died halfway through writing a third row
        f.write(b'{"call_id": "c", "inpu')
    assert [r["call_id"] for r in Journal(tmp_path).read(seg)] == ["a", "b"]


def test_a_corrupt_middle_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    seg = tmp_path / "00000000000000000001-1-000001.jsonl"
    seg.write_bytes(b'{"call_id": "a"}\n\x00\x00garbage\n[1, 2]\n{"call_id": "b"}\n')
    j = Journal(tmp_path)
    assert [r["call_id"] for r in j.read(seg)] == ["a", "b"]
    j.close()


def test_rotation_starts_a_new_segment_past_the_size_limit(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_bytes=200)
    for i in range(20):
        j.append({"call_id": f"c{i:02d}", "pad": "x" * 40})
    segs = j.segments()
    assert len(segs) > 3
    assert all(s.stat().st_size < 200 + 80 for s in segs)
    rows = [r["call_id"] for s in segs for r in j.read(s)]
    assert rows == [f"c{i:02d}" for i in range(20)]  # segment names sort oldest first
    j.close()


def test_removing_segments_and_rotating(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.append({"call_id": "a"})
    first = j.active
    j.rotate()
    assert j.active is None
    j.append({"call_id": "b"})
    assert first is not None and j.active != first
    j.remove(first)
    assert j.segments() == [j.active]
    j.remove(j.segments()[0])  # removing the active one seals it first
    assert j.segments() == [] and j.active is None
    j.append({"call_id": "c"})
    assert len(j.segments()) == 1
    j.close()


def test_one_directory_has_one_owner(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    with pytest.raises(LedgerError, match="in use by another process"):
        Journal(tmp_path)
    j.close()
    Journal(tmp_path).close()  # free again once the owner closed it


def test_rejected_rows_are_kept_with_the_reason(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.reject({"call_id": "bad"}, "value out of range")
    j.close()
    (line,) = (tmp_path / "rejected.ndjson").read_bytes().splitlines()
    kept = orjson.loads(line)
    assert kept["row"] == {"call_id": "bad"} and kept["error"] == "value out of range"
    assert Journal(tmp_path).segments() == []  # never replayed as a segment
