"""Reading a config directory: env expansion, located errors, and the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.config_source import load_config_dir
from policies.config.yamlsource import ConfigErrors, parse_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"

PROVIDERS = """\
# upstreams
type: gateway-providers
providers:
  - name: openai
    protocol: openai
    base_url: ${UPSTREAM_URL:-http://127.0.0.1:8790}
    api_key_env: ${KEY_VAR}
"""


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text, encoding="utf-8")
    return p


def test_default_is_used_when_the_variable_is_unset(tmp_path: Path) -> None:
    write(tmp_path, "providers.yaml", PROVIDERS)
    cfg = load_config_dir(tmp_path, env={"KEY_VAR": "OPENAI_API_KEY"})
    p = cfg.providers["openai"]
    assert p.base_url == "http://127.0.0.1:8790"
    assert p.api_key_env == "OPENAI_API_KEY"


def test_a_set_variable_replaces_the_default(tmp_path: Path) -> None:
    write(tmp_path, "providers.yaml", PROVIDERS)
    cfg = load_config_dir(tmp_path, env={"UPSTREAM_URL": "https://api.example", "KEY_VAR": "K"})
    assert cfg.providers["openai"].base_url == "https://api.example"


def test_an_empty_variable_counts_as_unset() -> None:
    assert parse_yaml("a: ${X:-dflt}\n", "f.yaml", {"X": ""})[0].data == {"a": "dflt"}


def test_an_empty_default_is_allowed() -> None:
    assert parse_yaml("a: '${X:-}'\n", "f.yaml", {})[0].data == {"a": ""}


def test_a_value_with_yaml_syntax_cannot_change_the_structure() -> None:
    doc = parse_yaml("a: ${X}\nb: 1\n", "f.yaml", {"X": "x: y # z"})[0].data
    assert doc == {"a": "x: y # z", "b": 1}


def test_a_missing_variable_without_default_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "providers.yaml", PROVIDERS)
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(tmp_path, env={})
    (e,) = exc.value.errors
    assert (e.file, e.line) == (str(path), 7)
    assert "KEY_VAR" in e.message


def test_every_missing_variable_is_reported() -> None:
    with pytest.raises(ConfigErrors) as exc:
        parse_yaml("a: ${A}\nb: ok\nc: ${C} ${D}\n", "f.yaml", {})
    assert [(e.line, e.message.split()[2]) for e in exc.value.errors] == [
        (1, "A"),
        (3, "C"),
        (3, "D"),
    ]


def test_yaml_and_yml_files_are_read_in_name_order_and_others_ignored(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", "type: gateway-settings\nstore_text: true\n")
    write(tmp_path, "a.yaml", PROVIDERS.replace("${KEY_VAR}", "K"))
    write(tmp_path, "notes.txt", "not: [yaml\n")
    (tmp_path / "sub.yaml").mkdir()
    cfg = load_config_dir(tmp_path, env={})
    assert cfg.sources == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yml"))
    assert cfg.settings.store_text is True


def test_errors_carry_the_real_file_path(tmp_path: Path) -> None:
    path = write(tmp_path, "rl.yaml", "type: gateway-rate-limit-config\nname: x\nrules: 3\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config_dir(tmp_path, env={})
    (e,) = exc.value.errors
    assert (e.file, e.line, e.field) == (str(path), 3, "rules")


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="does not exist"):
        load_config_dir(tmp_path / "nope", env={})


def test_a_directory_without_yaml_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path, "README", "hi")
    with pytest.raises(ConfigErrors, match=r"no \*\.yaml files"):
        load_config_dir(tmp_path, env={})


def test_a_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"type: gateway-settings\nname: \xff\xfe\n")
    with pytest.raises(ConfigErrors, match=r"bad\.yaml:2: not UTF-8"):
        load_config_dir(tmp_path, env={})


def test_the_shipped_example_config_validates() -> None:
    cfg = load_config_dir(EXAMPLES, env={})
    assert set(cfg.virtual_models) == {
        "intent-fast",
        "code-review-strong",
        "support-cheap",
        "haiku",
        "code-openai",
        "embed",
    }
    assert cfg.model_aliases["claude-haiku-4-5-20251001"] == "haiku"
    assert cfg.model_aliases["gpt-5-codex"] == "code-openai"
    assert [r.id for r in cfg.rate_limits] == [
        "per-session-loop-guard",
        "per-user-burst",
        "classify-intent-soft-cap",
    ]
    assert {b.id for b in cfg.budgets} >= {  # the seed's budgets, plus the demo agents' own
        "platform-search-monthly",
        "intern-sandbox-cap",
        "untagged-daily",
    }
    assert len(cfg.keys_by_hash) == 8  # five callers, metrics scraper, viewer, auditor
    assert all(p.base_url == "http://127.0.0.1:8790" for p in cfg.providers.values())


def test_the_shipped_example_follows_the_simulator_url() -> None:
    cfg = load_config_dir(EXAMPLES, env={"GOVERNOR_SIM_URL": "http://10.0.0.5:9000"})
    assert {p.base_url for p in cfg.providers.values()} == {"http://10.0.0.5:9000"}


def test_a_variable_in_a_commented_out_line_is_not_required(tmp_path: Path) -> None:
    text = PROVIDERS.replace("${KEY_VAR}", "K") + "    # base_url: ${OLD_UPSTREAM}\n"
    write(tmp_path, "providers.yaml", text)
    assert load_config_dir(tmp_path, env={}).providers["openai"].api_key_env == "K"


def test_invalid_utf8_is_refused_with_file_and_line(tmp_path: Path) -> None:
    """Before: `x.yaml: cannot read: 'utf-8' codec can't decode byte 0xff in position 29`."""
    (tmp_path / "x.yaml").write_bytes(b"type: gateway-settings\nname: \xff\xfe\nx: 1\n")
    with pytest.raises(ConfigErrors) as e:
        load_config_dir(tmp_path, env={})
    (err,) = e.value.errors
    assert err.file == str(tmp_path / "x.yaml") and err.line == 2, err
    assert f"{tmp_path / 'x.yaml'}:2" in str(e.value)
    assert "UTF-8" in str(err)


def test_a_file_over_the_size_limit_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """A 200 MB (sparse) file is refused after reading 1 MiB + 1 byte: before, it was read and
    decoded whole (a 60 MB file took `governor config check` to 160 MB RSS)."""
    import resource
    import time

    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.write(b"type: gateway-settings\n")
        f.truncate(200 * 1024 * 1024)  # NULs, no disk blocks
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    with pytest.raises(ConfigErrors) as e:
        load_config_dir(tmp_path, env={})
    cpu = time.process_time() - t0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mb < 20 and cpu < 1.0, (grown_mb, cpu)
    (err,) = e.value.errors
    assert err.file == str(big) and err.line == 2 and "1048576 bytes" in str(err), err
