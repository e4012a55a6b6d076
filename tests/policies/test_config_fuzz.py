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
from policies.config.yamlsource import MAX_DEPTH, ConfigErrors, parse_yaml
from tests.support.servers import EXAMPLES

DIRS = 500
SEED = 9


def _alias_bomb(rng: random.Random) -> str:
    width = rng.randint(5, 12)
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, rng.randint(6, 12)):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# What a mutation must be refused with: (phrases any one of which an error names, the line it
# must name or None for any line). None: the mutation may load or be refused.
Expect = tuple[tuple[str, ...], int | None] | None


def _lines(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _key_lines(text: str) -> set[int]:
    """Lines (1-based) of the mapping keys a file has, outside any list item's first line."""
    docs = parse_yaml(text, "sample.yaml", {})
    keys = {ln for d in docs for path, ln in d.lines.items() if path and isinstance(path[-1], str)}
    lines = text.splitlines()
    return {ln for ln in keys if not lines[ln - 1].lstrip().startswith(("-", "{", "#"))}


def _mutate(text: str, rng: random.Random) -> tuple[bytes, Expect]:
    """A mutated copy of `text` (bytes: a mutation may break the encoding) and, for the hostile
    kinds, what it must be refused with."""
    lines = text.splitlines()
    kind = rng.randrange(13)
    bomb = ("aliases expand to more than", "values; split it")
    if kind == 0:
        return (text + _alias_bomb(rng)).encode(), (bomb, None)
    if kind == 1:
        return (_alias_bomb(rng) + text).encode(), (bomb, None)
    if kind == 2:
        loop = rng.choice(["r: &r [*r]\n", "m: &m {k: *m}\n", "x: &x [1, [*x]]\n"])
        return (text + loop).encode(), (("alias refers to its own anchor",), _lines(text) + 1)
    if kind == 3:
        depth = rng.randint(MAX_DEPTH - 2, 600)
        out = text + "deep: " + "[" * depth + "1" + "]" * depth + "\n"
        return out.encode(), ((("nested deeper than",), _lines(text) + 1)
                              if depth >= MAX_DEPTH - 1 else None)
    if kind == 4:
        depth = rng.randint(MAX_DEPTH - 2, 300)
        out = text + "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"
        return out.encode(), ((("nested deeper than",), _lines(text) + MAX_DEPTH)
                              if depth >= MAX_DEPTH else None)
    if kind == 5 and lines:  # a key written twice
        i = rng.randrange(len(lines))
        out = "\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]]) + "\n"
        expect = (("duplicate key",), i + 2) if i + 1 in _key_lines(text) else None
        return out.encode(), expect
    if kind == 6:
        return text[: rng.randrange(len(text) + 1)].encode(), None
    if kind == 7:
        chars = list(text)
        for _ in range(rng.randint(1, 20)):
            chars[rng.randrange(len(chars))] = rng.choice("{}[]:&*!|>-?#%@`'\"\t\n ,\x00\ufeff")
        return "".join(chars).encode(), None
    if kind == 8 and lines:
        i = rng.randrange(len(lines))
        value = rng.choice(["[]", "{}", "~", "-1", "1e999", "9" * 400, "!!binary x", "*nope",
                            "!!python/object:os.system {}", "&a", "2020-99-99", "'" + "x" * 5000])
        key = lines[i].split(":")[0] if ":" in lines[i] else "k"
        lines[i] = f"{key}: {value}"
        return ("\n".join(lines) + "\n").encode(), None
    if kind == 9:
        return text.replace("  ", "\t").encode(), None
    if kind == 10:
        size = rng.choice([10, 2_000_000])
        out = text + "big: " + "x" * size + "\n"
        return out.encode(), ((("file larger than",), _lines(text) + 1) if size > 10 else None)
    if kind == 11:  # byte noise: bytes that are never UTF-8 (0xf8-0xff), anywhere in the file
        raw = bytearray(text.encode())
        at = [rng.randrange(len(raw)) for _ in range(rng.randint(1, 20))]
        for pos in at:
            raw[pos] = rng.randint(0xF8, 0xFF)
        # The first bad byte is the first one written (or the lead byte of the character it
        # landed in: the same line); the line counts the newlines the noise left.
        return bytes(raw), (("not UTF-8",), raw.count(b"\n", 0, min(at)) + 1)
    return ("\n".join(lines[rng.randrange(len(lines) + 1) :] + lines[: 1]) + "\n").encode(), None


def test_500_mutated_config_directories_load_or_fail_with_file_and_line(tmp_path: Path) -> None:
    """Every outcome is a config or located errors; the hostile kinds (alias bombs, recursive
    aliases, nesting past the limit, a key written twice, a file past 1 MiB, bytes that are not
    UTF-8) are refused, each with the error it must give on the line it must name."""
    rng = random.Random(SEED)
    sample = {p.name: p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))}
    names = sorted(sample)
    outcomes = {"ok": 0, "refused": 0, "hostile refused": 0}
    worst = 0.0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in range(DIRS):
        d = tmp_path / f"d{n}"
        d.mkdir()
        victim = rng.choice(names)  # the directory holds the mutated file alone: fast
        data, expect = _mutate(sample[victim], rng)
        (d / victim).write_bytes(data)
        t0 = time.perf_counter()
        try:
            load_config_dir(d, env={})
            outcomes["ok"] += 1
            assert expect is None, f"dir {n} ({victim}) loaded; must be refused: {expect}"
        except ConfigErrors as exc:
            outcomes["refused"] += 1
            assert exc.errors
            for e in exc.errors:
                assert e.file == str(d / victim), e
                assert e.line is not None, f"{e} (dir {n}, mutated {victim})"
            if expect is not None:
                phrases, line = expect
                hit = [e for e in exc.errors if any(p in str(e) for p in phrases)
                       and (line is None or e.line == line)]
                assert hit, f"dir {n} ({victim}): want {expect}, got {exc.errors}"
                outcomes["hostile refused"] += 1
        worst = max(worst, time.perf_counter() - t0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"{outcomes}, worst load {worst * 1000:.0f} ms, peak RSS growth {grown_mb:.0f} MB")
    assert grown_mb < 100
    assert outcomes["refused"] > DIRS // 2  # the mutations do reach the loader's limits
    assert outcomes["hostile refused"] > DIRS // 3
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
