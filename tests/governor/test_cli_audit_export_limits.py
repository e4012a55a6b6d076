"""`governor audit export|show|replay` on the ledger directly keep the bounds of the admin
API's routes: more than `archive.max_export_calls` calls, or a bundle past
`archive.max_export_bytes`, is one `error:` line and exit 1, before any row is read."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from audit.bundle import parse_bundle
from audit.offloop import ExportTooLarge, Source, build_export, build_show
from ledger.store import LedgerStore
from tests.audit.test_archive_store import _session
from tests.support.servers import make_config_dir

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, name: str, archive: str) -> Path:
    cfg = make_config_dir(tmp_path / name)
    (cfg / "gateway.yaml").write_text((cfg / "gateway.yaml").read_text() + archive)
    return cfg


def _audit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "GOVERNOR_LEDGER_URL"} | (env or {})
    return subprocess.run([sys.executable, "-m", "governor.cli", "audit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=e)


@pytest.fixture
async def session(tmp_path: Path) -> str:
    (tmp_path / "data").mkdir()
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    try:
        sid = f"s-limit-{uuid.uuid4().hex[:6]}"
        await _session(store, sid, calls=3)
        return sid
    finally:
        await store.close()


async def test_local_export_and_show_keep_the_routes_call_and_byte_bounds(
    tmp_path: Path, session: str
) -> None:
    data = tmp_path / "data"
    out = tmp_path / "bundle.jsonl"
    two = _config(tmp_path, "two", "archive:\n  max_export_calls: 2\n")
    for cmd in (["export", session, "--out", str(out)], ["show", session]):
        r = _audit(*cmd, "--data-dir", str(data), "--config", str(two))
        assert r.returncode == 1, (r.stdout, r.stderr)
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"error: session {session!r} has 3 calls, more than "
                               "archive.max_export_calls (2)"), line
        assert "Traceback" not in r.stderr and not out.exists()

    tiny = _config(tmp_path, "tiny", "archive:\n  max_export_bytes: 600\n")
    r = _audit("export", session, "--out", str(out), "--data-dir", str(data),
               "--config", str(tiny))
    assert r.returncode == 1, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "max_export_bytes" in line, line
    assert not out.exists()

    three = _config(tmp_path, "three", "archive:\n  max_export_calls: 3\n")
    r = _audit("export", session, "--out", str(out), "--data-dir", str(data),
               "--config", str(three))
    assert r.returncode == 0, r.stderr
    bundle = parse_bundle(out.read_bytes())
    assert [c["call_id"] for c in bundle.records["call"]] == [f"{session}-c{i}" for i in range(3)]
    r = _audit("show", session, "--json", "--data-dir", str(data), "--config", str(three))
    assert r.returncode == 0, r.stderr


async def test_the_shared_builders_bound_a_live_session_by_its_ledger_count(
    tmp_path: Path, session: str
) -> None:
    src = Source(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}", None, None)
    with pytest.raises(ExportTooLarge,
                       match=r"has 3 calls, more than archive.max_export_calls \(2\)"):
        await build_export(src, session, [], max_bytes=10**6, max_calls=2)
    with pytest.raises(ExportTooLarge, match=r"has 3 calls"):
        await build_show(src, session, [], 0, 10, max_calls=2)
    got = await build_export(src, session, [], max_bytes=10**6, max_calls=3)
    assert got is not None
    with got[1]:
        pass


async def test_local_replay_keeps_the_same_call_bound(tmp_path: Path, session: str) -> None:
    """`governor audit replay --data-dir/--ledger` reads the session's whole record: past
    `archive.max_export_calls` (the one bound of show, export and replay) it is one `error:`
    line and exit 1, before any row is read; the bound comes from --config, else from
    GOVERNOR_CONFIG_DIR."""
    data = tmp_path / "data"
    two = _config(tmp_path, "two", "archive:\n  max_export_calls: 2\n")
    three = _config(tmp_path, "three", "archive:\n  max_export_calls: 3\n")
    for args, env in ((["--config", str(two)], None),
                      ([], {"GOVERNOR_CONFIG_DIR": str(two)})):
        r = _audit("replay", session, "--data-dir", str(data), *args, env=env)
        assert r.returncode == 1, (r.stdout, r.stderr)
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"error: session {session!r} has 3 calls, more than "
                               "archive.max_export_calls (2)"), line
        assert "Traceback" not in r.stderr and not r.stdout
    r = _audit("replay", session, "--json", "--data-dir", str(data), "--config", str(three))
    assert r.returncode == 0 and '"session_id"' in r.stdout, r.stderr
    r = _audit("replay", session, "--json", "--ledger",
               f"sqlite:///{data / 'ledger.db'}", env={"GOVERNOR_CONFIG_DIR": str(three)})
    assert r.returncode == 0 and '"session_id"' in r.stdout, r.stderr


def test_the_call_bound_has_a_sane_default_and_ceiling() -> None:
    from pydantic import ValidationError

    from policies.config.models import MOST_EXPORT_CALLS, ArchiveSettings

    assert ArchiveSettings().max_export_calls == 200_000
    assert ArchiveSettings(max_export_calls=MOST_EXPORT_CALLS).max_export_calls == 1_000_000
    for bad in (0, MOST_EXPORT_CALLS + 1):
        with pytest.raises(ValidationError, match="max_export_calls"):
            ArchiveSettings(max_export_calls=bad)
