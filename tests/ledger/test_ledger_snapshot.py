"""The last-known-state file a replica starts from during a database outage."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from ledger.snapshot import SNAPSHOT_NAME, Snapshot, load_snapshot, save_snapshot
from tests.support.servers import make_config_dir


def test_a_damaged_snapshot_is_ignored_never_raised(tmp_path: Path) -> None:
    path = tmp_path / SNAPSHOT_NAME
    for text in ('{"ts": "x"}', '{"spend": [[["b", "k"], null]]}', "[1]", "{not json"):
        path.write_text(text)
        assert load_snapshot(tmp_path) == Snapshot()
    path.write_text('{"killed": {"s": "why"}, "ts": 5}')
    assert load_snapshot(tmp_path).killed == {"s": "why"}  # a sound one still loads


class _Spy:
    """Records the real fsync / rename calls (they still happen) and the thread of each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.calls.append(("fsync-" + kind, threading.get_ident(), ""))
            real_fsync(fd)

        def replace(src: Any, dst: Any) -> None:
            self.calls.append(("rename", threading.get_ident(), str(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)


def test_a_snapshot_is_fsynced_before_its_rename_and_the_rename_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    save_snapshot(tmp_path, Snapshot(killed={"s1": "runaway"}, ts=7.0))
    assert [c[0] for c in spy.calls] == ["fsync-file", "rename", "fsync-dir"]
    assert spy.calls[1][2] == str(tmp_path / SNAPSHOT_NAME)
    assert load_snapshot(tmp_path) == Snapshot(killed={"s1": "runaway"}, ts=7.0)
    assert not (tmp_path / SNAPSHOT_NAME).with_suffix(".tmp").exists()


@pytest.mark.asyncio
async def test_the_gateway_saves_its_last_known_state_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    cfg = load_config_dir(make_config_dir(tmp_path / "cfg"))
    gw = await Gateway.open(cfg, f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "j")
    try:
        gw.state.killed["sess-snap"] = "runaway"
        end = time.monotonic() + 30
        while load_snapshot(gw.writer.journal_dir).killed.get("sess-snap") != "runaway":
            assert time.monotonic() < end, "the last known state was never saved"
            await asyncio.sleep(0.05)
    finally:
        await gw.close()
    loop_thread = threading.get_ident()
    saves = [c for c in spy.calls if c[2].endswith(SNAPSHOT_NAME)]
    assert saves and all(t != loop_thread for _, t, _ in saves)
