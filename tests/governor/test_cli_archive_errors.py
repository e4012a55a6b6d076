"""A bad archive URL or key: `governor proxy` says so in one line and exits 2 (no traceback),
before it binds its port — as `governor up` does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]

BAD = {
    "key": ("archive:\n  encrypt: true\n  key_env: GOVERNOR_ARCHIVE_KEY\n",
            {"GOVERNOR_ARCHIVE_KEY": "too-short"}, "32 bytes"),
    "missing-key": ("archive:\n  encrypt: true\n  key_env: GOVERNOR_ARCHIVE_KEY_T\n", {},
                    "GOVERNOR_ARCHIVE_KEY_T"),
    "url": ("archive:\n  url: \"nope://bucket/x\"\n", {}, "nope://bucket/x"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_governor_proxy_with_a_bad_archive_says_so_in_one_line_and_exits_2(
    tmp_path: Path, case: str
) -> None:
    yaml, extra_env, needle = BAD[case]
    cfg = tmp_path / "cfg"
    shutil.copytree(REPO / "examples" / "config", cfg)
    with (cfg / "gateway.yaml").open("a") as f:
        f.write(yaml)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GOVERNOR_ARCHIVE_KEY") and k != "GOVERNOR_LEDGER_URL"}
    env.update(extra_env)
    proc = subprocess.run(
        [sys.executable, "-m", "governor.cli", "proxy", "--config", str(cfg),
         "--data-dir", str(tmp_path / "data"), "--port", str(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("governor proxy: archive: ") and needle in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
