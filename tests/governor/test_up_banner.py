"""The banner `governor up` prints: every command it shows runs from a fresh shell. `scripts/up`
puts the venv on its own PATH only, so a bare `python examples/…` or `governor sessions …`
failed in the newcomer's shell (ModuleNotFoundError / command not found)."""

from __future__ import annotations

import sys
from pathlib import Path

from governor.up import UpOptions, banner, env_command

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "config"


def _banner() -> str:
    return banner(UpOptions(config_dir=CONFIG), "http://127.0.0.1:8080", None, True)


def test_commands_name_this_environments_python_and_governor() -> None:
    out = _banner()
    python = env_command("python")
    governor = env_command("governor")
    assert Path(python).is_absolute() or Path.cwd().joinpath(python).exists()
    assert f"Agents as workflows: {python} examples/agents/well_behaved.py" in out
    assert f"GOVERNOR_ADMIN_KEY=gk-dev-oncall {governor} sessions list" in out
    assert " python examples/" not in out and "On-call: governor " not in out


def test_env_command_is_relative_under_the_working_directory_else_absolute(tmp_path) -> None:
    exe = Path(sys.executable)
    assert env_command("python", cwd=exe.parent.parent) == f"{exe.parent.name}/{exe.name}"
    assert env_command("python", cwd=tmp_path) == sys.executable
    assert env_command("no-such-program-xyz", cwd=tmp_path) == "no-such-program-xyz"


def test_the_metrics_line_says_it_needs_a_key_and_names_the_dev_one() -> None:
    assert "/metrics   (a metrics or admin key: Bearer gk-dev-metrics)" in _banner()
