"""`governor config check`: every error with file, line and field; exit status for scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "governor.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_the_sample_config_checks_clean() -> None:
    r = run("config", "check", str(REPO / "examples" / "config"))
    assert r.returncode == 0, r.stderr
    assert "intent-fast" in r.stdout and "budget" in r.stdout


def test_every_error_of_every_file_is_printed_with_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "type: gateway-budget-config\nname: b\nbudgets:\n"
        "  - id: x\n    ceiling_usd: lots\n    window: monthly\n")
    (tmp_path / "b.yaml").write_text("type: gateway-rate-limit-config\nname: r\nrules: [\n")
    (tmp_path / "c.yaml").write_text("type: gateway-nonsense\n")
    r = run("config", "check", str(tmp_path))
    assert r.returncode == 1
    err = r.stderr
    assert "3 config error(s)" in err
    assert f"{tmp_path / 'a.yaml'}:5: budgets.0.ceiling_usd:" in err
    assert f"{tmp_path / 'b.yaml'}:" in err and "invalid YAML" in err
    assert f"{tmp_path / 'c.yaml'}:1: type:" in err and "unknown config type" in err
    assert "Traceback" not in err


def test_the_seed_gateway_files_check_clean_beside_the_sample_providers_pricing_keys(
        tmp_path: Path) -> None:
    seeds = REPO.parent / "shared" / "seeds" / "yaml"
    if not seeds.is_dir():
        return
    for name in ("providers.yaml", "pricing.yaml", "keys.yaml"):
        (tmp_path / name).write_text((REPO / "examples" / "config" / name).read_text())
    for name in ("routing-config.yaml", "rate-limit-config.yaml", "budget-config.yaml"):
        (tmp_path / name).write_text((seeds / name).read_text())
    r = run("config", "check", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "intent-fast" in r.stdout and "3 rate limit(s), 2 budget(s)" in r.stdout


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
    for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_hostile_yaml_gets_located_errors_from_config_check_never_a_hang_or_traceback(
    tmp_path: Path,
) -> None:
    (tmp_path / "bomb.yaml").write_text(BOMB)  # 9^9 values once expanded
    (tmp_path / "loop.yaml").write_text("r: &r [*r]\n")
    (tmp_path / "deep.yaml").write_text("d: " + "[" * 500 + "]" * 500 + "\n")
    (tmp_path / "dup.yaml").write_text(
        "type: gateway-budget-config\nname: b\nbudgets:\n  - id: x\n    ceiling_usd: 4000\n"
        "    ceiling_usd: 40000\n    window: monthly\n"
    )
    (tmp_path / "nul.yaml").write_text("type: gateway-settings\nname: \x00\n")
    r = run("config", "check", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    err = r.stderr
    assert f"{tmp_path / 'bomb.yaml'}:" in err and "aliases expand to more than" in err
    assert f"{tmp_path / 'loop.yaml'}:1:" in err and "alias refers to its own anchor" in err
    assert f"{tmp_path / 'deep.yaml'}:1:" in err and "nested deeper than" in err
    assert f"{tmp_path / 'dup.yaml'}:6: budgets.0.ceiling_usd: duplicate key" in err
    assert f"{tmp_path / 'nul.yaml'}:2:" in err
