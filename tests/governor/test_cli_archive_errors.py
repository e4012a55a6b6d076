"""A bad archive URL or key: `governor proxy` and `governor up` say so in one line and exit
non-zero (no traceback), before they bind a port or start anything."""

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


def _run(command: str, tmp_path: Path, case: str) -> tuple[subprocess.CompletedProcess[str], str]:
    yaml, extra_env, needle = BAD[case]
    cfg = tmp_path / "cfg"
    shutil.copytree(REPO / "examples" / "config", cfg)
    with (cfg / "gateway.yaml").open("a") as f:
        f.write(yaml)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GOVERNOR_ARCHIVE_KEY") and k != "GOVERNOR_LEDGER_URL"}
    env.update(extra_env)
    proc = subprocess.run(
        [sys.executable, "-m", "governor.cli", command, "--config", str(cfg),
         "--data-dir", str(tmp_path / "data"), "--port", str(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    return proc, lines[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_governor_proxy_with_a_bad_archive_says_so_in_one_line_and_exits_2(
    tmp_path: Path, case: str
) -> None:
    proc, line = _run("proxy", tmp_path, case)
    assert proc.returncode == 2 and line.startswith("governor proxy: archive: ")


@pytest.mark.parametrize("case", sorted(BAD))
def test_governor_up_with_a_bad_archive_says_so_in_one_line_before_starting_anything(
    tmp_path: Path, case: str
) -> None:
    proc, line = _run("up", tmp_path, case)
    assert proc.returncode == 1 and line.startswith("error: archive: ")
