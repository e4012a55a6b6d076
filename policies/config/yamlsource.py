"""YAML parsing that remembers where every value came from.

Config errors must name file, line and field; PyYAML's composed node tree has the marks, so we
build plain Python values from it and keep a map from each value's path to its line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(Exception):
    """One problem in one config file, located as precisely as we can."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = f" {self.field}:" if self.field else ""
        return f"{where}:{what} {self.message}"


class ConfigErrors(Exception):
    """Every error found in a config directory: a reload shows them all at once."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


Path_ = tuple[str | int, ...]


@dataclass
class YamlDoc:
    """One YAML document: its data, and the line of every path inside it."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    start_line: int = 1

    def line_of(self, path: Path_) -> int:
        """Line of the deepest known ancestor of `path` (pydantic locs may go past the YAML)."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return self.start_line


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(
    value: str, env: Mapping[str, str], file: str, line: int, errors: list[ConfigError]
) -> str:
    """`${NAME}` / `${NAME:-default}` inside one scalar value. Done after parsing, so comments
    are never expanded and a value can never change the document's structure. An unset NAME
    without a default is an error naming the line (appended to `errors`), never a silent
    empty string."""

    def sub(m: re.Match[str]) -> str:
        val = env.get(m.group(1))
        if val:
            return val
        if m.group(2) is not None:
            return m.group(2)
        errors.append(
            ConfigError(file, line, None, f"environment variable {m.group(1)} is not set")
        )
        return ""

    return _VAR.sub(sub, value)


@dataclass
class _Ctx:
    loader: yaml.SafeLoader
    file: str
    env: Mapping[str, str] | None
    errors: list[ConfigError]


def _construct(node: yaml.Node, path: Path_, lines: dict[Path_, int], ctx: _Ctx) -> Any:
    lines[path] = node.start_mark.line + 1
    loader = ctx.loader
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (dict, list)):
                raise yaml.MarkedYAMLError(
                    problem="a mapping key must be a scalar", problem_mark=key_node.start_mark
                )
            out[key] = _construct(value_node, (*path, key), lines, ctx)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, (*path, i), lines, ctx) for i, v in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if ctx.env is not None and isinstance(value, str) and "${" in value:
        value = expand_vars(value, ctx.env, ctx.file, node.start_mark.line + 1, ctx.errors)
    return value


def parse_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> list[YamlDoc]:
    """Parse every document in `text`; a syntax error becomes a located ConfigError.

    With `env`, `${NAME}` / `${NAME:-default}` in scalar values are expanded from it; every
    unset variable is reported (ConfigErrors)."""
    loader = yaml.SafeLoader(text)
    docs: list[YamlDoc] = []
    ctx = _Ctx(loader, file, env, [])
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[Path_, int] = {}
            data = _construct(node, (), lines, ctx)
            docs.append(
                YamlDoc(file=file, data=data, lines=lines, start_line=node.start_mark.line + 1)
            )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(file, line, None, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, None, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if ctx.errors:
        raise ConfigErrors(ctx.errors)
    return docs
