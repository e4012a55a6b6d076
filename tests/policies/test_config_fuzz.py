"""Config fuzz: mutated copies of the sample config directory never crash the loader.

Seeded and bounded: 500 directories, each one file of the sample config, mutated (alias bombs,
recursive aliases, deep block and flow nesting, duplicate keys, truncation, byte noise, wrong
types, huge files, tabs). Every outcome is a config or `ConfigErrors` whose every error names
its file and line; no other exception, and each directory loads in bounded time and memory.
"""

from __future__ import annotations

import random
import resource
import time
from pathlib import Path

import pytest

from activities.config_source import load_config_dir
from policies.config.yamlsource import MAX_DEPTH, ConfigErrors
from tests.support.servers import EXAMPLES

DIRS = 500
SEED = 9


def _alias_bomb(rng: random.Random) -> str:
    width = rng.randint(5, 12)
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, rng.randint(6, 12)):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    kind = rng.randrange(12)
    if kind == 0:
        return text + _alias_bomb(rng)
    if kind == 1:
        return _alias_bomb(rng) + text
    if kind == 2:
        return text + rng.choice(["r: &r [*r]\n", "m: &m {k: *m}\n", "x: &x [1, [*x]]\n"])
    if kind == 3:
        depth = rng.randint(MAX_DEPTH - 2, 600)
        return text + "deep: " + "[" * depth + "1" + "]" * depth + "\n"
    if kind == 4:
        depth = rng.randint(MAX_DEPTH - 2, 300)
        return text + "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"
    if kind == 5 and lines:  # a key written twice
        i = rng.randrange(len(lines))
        return "\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]]) + "\n"
    if kind == 6:
        return text[: rng.randrange(len(text) + 1)]
    if kind == 7:
        chars = list(text)
        for _ in range(rng.randint(1, 20)):
            chars[rng.randrange(len(chars))] = rng.choice("{}[]:&*!|>-?#%@`'\"\t\n ,\x00\ufeff")
        return "".join(chars)
    if kind == 8 and lines:
        i = rng.randrange(len(lines))
        value = rng.choice(["[]", "{}", "~", "-1", "1e999", "9" * 400, "!!binary x", "*nope",
                            "!!python/object:os.system {}", "&a", "2020-99-99", "'" + "x" * 5000])
        key = lines[i].split(":")[0] if ":" in lines[i] else "k"
        lines[i] = f"{key}: {value}"
        return "\n".join(lines) + "\n"
    if kind == 9:
        return text.replace("  ", "\t")
    if kind == 10:
        return text + "big: " + "x" * rng.choice([10, 2_000_000]) + "\n"
    return "\n".join(lines[rng.randrange(len(lines) + 1) :] + lines[: 1]) + "\n"


def test_500_mutated_config_directories_load_or_fail_with_file_and_line(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    sample = {p.name: p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))}
    names = sorted(sample)
    outcomes = {"ok": 0, "refused": 0}
    worst = 0.0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in range(DIRS):
        d = tmp_path / f"d{n}"
        d.mkdir()
        victim = rng.choice(names)  # the directory holds the mutated file alone: fast
        (d / victim).write_text(_mutate(sample[victim], rng))
        t0 = time.perf_counter()
        try:
            load_config_dir(d, env={})
            outcomes["ok"] += 1
        except ConfigErrors as exc:
            outcomes["refused"] += 1
            assert exc.errors
            for e in exc.errors:
                assert e.file.startswith(str(d)), e
                assert e.line is not None, f"{e} (dir {n}, mutated {victim})"
        worst = max(worst, time.perf_counter() - t0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"{outcomes}, worst load {worst * 1000:.0f} ms, peak RSS growth {grown_mb:.0f} MB")
    assert grown_mb < 100
    assert outcomes["refused"] > DIRS // 2  # the mutations do reach the loader's limits
    assert worst < 5.0


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"b{i}: &b{i} [{', '.join([f'*{p}'] * 10)}]\n"
            for i, p in enumerate(["a", "b0", "b1", "b2", "b3", "b4", "b5", "b6"])),
         None, "aliases expand to more than"),
        ("r: &r [1, *r]\n", 1, "alias refers to its own anchor"),
        ("d: " + "[" * 500 + "]" * 500 + "\n", 1, "nested deeper than"),
        ("type: gateway-budget-config\nbudgets:\n  - id: b\n    ceiling_usd: 4000\n"
         "    ceiling_usd: 40000\n", 5, "budgets.0.ceiling_usd: duplicate key 'ceiling_usd' "
         "(first on line 4)"),
    ],
)  # fmt: skip
def test_hostile_yaml_is_a_located_config_error(text: str, line: int | None, what: str) -> None:
    from policies.config.yamlsource import ConfigError, parse_yaml

    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        parse_yaml(text, "x.yaml", {})
    assert time.perf_counter() - t0 < 2
    assert what in str(e.value) and e.value.file == "x.yaml" and e.value.line is not None
    if line is not None:
        assert e.value.line == line


def test_aliases_within_the_bound_still_work() -> None:
    from policies.config.yamlsource import parse_yaml

    doc = parse_yaml("base: &b {x: 1, y: [1, 2]}\nother: *b\n", "ok.yaml", {})[0]
    assert doc.data == {"base": {"x": 1, "y": [1, 2]}, "other": {"x": 1, "y": [1, 2]}}
