"""YAML parsing that remembers where every value came from.

Config errors must name file, line and field; PyYAML's composed node tree has the marks, so we
build plain Python values from it and keep a map from each value's path to its line.

Any file is parsed in bounded time and memory, and every problem is a located `ConfigError`,
never a traceback: at most `MAX_FILE_CHARS` characters, nesting at most `MAX_DEPTH` levels
(PyYAML's composer recurses: 500 levels was a RecursionError), at most `MAX_VALUES` values per
file and `MAX_ALIAS_VALUES` of them reached through aliases (a "billion laughs" file expanded to
2.5 GB in 20 s), an alias inside its own anchor refused, and a key repeated in one mapping an
error naming both lines (last-one-wins silently turned `ceiling_usd: 4000` into `40000`).
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


MAX_FILE_CHARS = 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_ALIAS_VALUES = 10_000


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose (recursive) composer stops at `MAX_DEPTH` levels of nesting."""

    _depth = 0

    def fetch_flow_collection_start(self, token_class: type) -> None:
        # The scanner's simple-key bookkeeping is quadratic in flow depth: stop it early too.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(
                problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self.get_mark()
            )
        super().fetch_flow_collection_start(token_class)  # type: ignore[misc]

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested deeper than {MAX_DEPTH} levels",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


@dataclass
class _Ctx:
    loader: yaml.SafeLoader
    file: str
    env: Mapping[str, str] | None
    errors: list[ConfigError]
    values: int = 0
    open_nodes: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    in_alias: int = 0
    alias_values: int = 0


def _field(path: Path_) -> str | None:
    return ".".join(str(p) for p in path) or None


def _construct(node: yaml.Node, path: Path_, lines: dict[Path_, int], ctx: _Ctx) -> Any:
    line = node.start_mark.line + 1
    ctx.values += 1
    if ctx.values > MAX_VALUES:
        raise ConfigError(
            ctx.file, line, _field(path), f"the file has more than {MAX_VALUES} values; split it"
        )
    if ctx.in_alias:
        ctx.alias_values += 1
        if ctx.alias_values > MAX_ALIAS_VALUES:
            raise ConfigError(
                ctx.file, line, _field(path),
                f"aliases expand to more than {MAX_ALIAS_VALUES} values; write the values out",
            )  # fmt: skip
    if len(path) > MAX_DEPTH:
        raise ConfigError(ctx.file, line, None, f"nested deeper than {MAX_DEPTH} levels")
    lines[path] = line
    loader = ctx.loader
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in ctx.open_nodes:
            raise ConfigError(ctx.file, line, _field(path), "an alias refers to its own anchor")
        aliased = id(node) in ctx.seen  # built before: this use is an alias's expansion
        ctx.seen.add(id(node))
        ctx.open_nodes.add(id(node))
        ctx.in_alias += aliased
        try:
            return _collection(node, path, lines, ctx, loader)
        finally:
            ctx.open_nodes.discard(id(node))
            ctx.in_alias -= aliased
    value = loader.construct_object(node, deep=True)
    if ctx.env is not None and isinstance(value, str) and "${" in value:
        value = expand_vars(value, ctx.env, ctx.file, node.start_mark.line + 1, ctx.errors)
    return value


def _collection(
    node: yaml.Node, path: Path_, lines: dict[Path_, int], ctx: _Ctx, loader: yaml.SafeLoader
) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, (*path, i), lines, ctx) for i, v in enumerate(node.value)]
    out: dict[Any, Any] = {}
    key_lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(ctx.file, line, _field(path), "a mapping key must be a scalar")
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            msg = "a mapping key must be a scalar"
            raise ConfigError(ctx.file, line, _field(path), msg) from None
        if key in key_lines:
            raise ConfigError(
                ctx.file, line, _field((*path, key)),
                f"duplicate key {key!r} (first on line {key_lines[key]}); keep one",
            )  # fmt: skip
        key_lines[key] = line
        out[key] = _construct(value_node, (*path, key), lines, ctx)
        lines[(*path, key)] = line
    return out


def _reader_error(file: str, text: str, exc: yaml.reader.ReaderError) -> ConfigError:
    line = text.count("\n", 0, exc.position) + 1
    return ConfigError(file, line, None, f"invalid YAML: {exc.reason} (#x{exc.character:04x})")


def parse_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> list[YamlDoc]:
    """Parse every document in `text`; a syntax error becomes a located ConfigError.

    With `env`, `${NAME}` / `${NAME:-default}` in scalar values are expanded from it; every
    unset variable is reported (ConfigErrors)."""
    if len(text) > MAX_FILE_CHARS:
        line = text.count("\n", 0, MAX_FILE_CHARS) + 1
        raise ConfigError(file, line, None, f"file larger than {MAX_FILE_CHARS} characters")
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ...)
        raise _reader_error(file, text, exc) from None
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
    except yaml.reader.ReaderError as exc:
        raise _reader_error(file, text, exc) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, None, f"invalid YAML: {exc}") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        # A shape no check above foresaw: still a located refusal, never a traceback.
        mark = getattr(loader, "mark", None) or getattr(loader, "get_mark", lambda: None)()
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(file, line, None, f"cannot parse: {type(exc).__name__}") from None
    finally:
        loader.dispose()
    if ctx.errors:
        raise ConfigErrors(ctx.errors)
    return docs
