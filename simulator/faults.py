"""Fault injection: what goes wrong with a request, from three sources.

Precedence, lowest to highest: `SimConfig` defaults, the first matching `/_sim/faults` rule,
`[[sim:key=value]]` directives in the last user message (so a test can ask for a fault
through a proxy it does not control).

Timing: `latency_ms` delays the response headers; `first_byte_ms` further delays the first
body byte (time to first token when streaming); `chunk_delay_ms` separates stream events.
`cut_after_chunks=N` writes N stream events then drops the connection without a terminating
event; `stall_after_chunks=N` with `stall_ms=M` writes N stream events, then nothing for M ms,
then the rest (N=0 with the head already sent: a head-then-stall stream); `hang` never answers.
`omit_usage` makes either endpoint report no usage at all (some OpenAI- or Anthropic-compatible
servers do), stream or not. Every wait is a cancellable asyncio sleep.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Any

from simulator.models import SimConfig


class FaultSpecError(ValueError):
    """A fault rule or directive that cannot be applied; the message says which field."""


@dataclass(slots=True)
class Fault:
    """The effective fault for one request (all-zero means a normal answer)."""

    status: int | None = None
    latency_ms: int = 0
    first_byte_ms: int = 0
    chunk_delay_ms: int = 0
    cut_after_chunks: int | None = None
    hang: bool = False
    output_tokens: int | None = None
    retry_after: int | None = None
    stall_after_chunks: int | None = None
    stall_ms: int = 0
    omit_usage: bool = False
    reply: str | None = None  # exact reply text (streamed in REPLY_CHUNK_CHARS pieces)
    # {"name", "arguments"}: call this tool with these arguments whenever the request offers
    # it, even after a tool result (a scripted agent step, or a loop when the rule never ends).
    tool_call: dict[str, Any] | None = None


# Fields a rule or directive may set, with their parser.
_INT_FIELDS = (
    "status",
    "latency_ms",
    "first_byte_ms",
    "chunk_delay_ms",
    "cut_after_chunks",
    "output_tokens",
    "retry_after",
    "stall_after_chunks",
    "stall_ms",
)
_BOOL_FIELDS = ("hang", "omit_usage")
FAULT_FIELDS = (*_INT_FIELDS, *_BOOL_FIELDS, "reply", "tool_call")
REPLY_CHUNK_CHARS = 5  # small enough that any secret in a scripted reply spans several chunks
NO_FAULT = Fault()


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultSpecError(f"fault field '{name}' must be an integer, got {value!r}")
    if name == "status":
        if not 400 <= value <= 599:
            raise FaultSpecError(f"fault field 'status' must be an HTTP error status, got {value}")
    elif name == "output_tokens":
        if not 1 <= value <= 1_000_000:
            raise FaultSpecError(
                f"fault field 'output_tokens' must be in [1, 1000000], got {value}"
            )
    elif value < 0:
        raise FaultSpecError(f"fault field '{name}' must be >= 0, got {value}")
    return value


def validate_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Checked copy of the fault fields in `values` (unknown keys are an error)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FAULT_FIELDS:
            raise FaultSpecError(f"unknown fault field '{name}'; known: {', '.join(FAULT_FIELDS)}")
        if value is None:
            continue
        if name == "tool_call":
            if (not isinstance(value, dict) or not isinstance(value.get("name"), str)
                    or not value["name"] or not isinstance(value.get("arguments", {}), dict)
                    or set(value) - {"name", "arguments"}):
                raise FaultSpecError(
                    "fault field 'tool_call' must be {name: <tool>, arguments: {...}}")
            out[name] = {"name": value["name"], "arguments": value.get("arguments", {})}
        elif name == "reply":
            if not isinstance(value, str) or not value:
                raise FaultSpecError("fault field 'reply' must be a non-empty string")
            out[name] = value
        elif name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise FaultSpecError(f"fault field '{name}' must be true or false, got {value!r}")
            out[name] = value
        else:
            out[name] = _check_int(name, value)
    return out


_DIRECTIVE = re.compile(r"\[\[sim:([^\]]*)\]\]")


def parse_directives(text: str) -> dict[str, Any]:
    """Fault fields from `[[sim:key=value]]` / `[[sim:k1=v1,k2=v2]]` markers in `text`."""
    if "[[sim:" not in text:
        return {}
    raw: dict[str, Any] = {}
    for body in _DIRECTIVE.findall(text):
        if body.startswith("reply_hex="):
            # Hex, so a scripted reply (say, a planted secret) is not itself in the prompt.
            try:
                raw["reply"] = bytes.fromhex(body[len("reply_hex=") :]).decode("utf-8")
            except ValueError:
                raise FaultSpecError("sim directive reply_hex= needs hex of UTF-8 text") from None
            continue
        if body == "echo":
            raw["reply"] = text  # answer with the message as it arrived (what a proxy forwarded)
            continue
        for item in body.split(","):
            key, sep, value = item.strip().partition("=")
            key, value = key.strip(), value.strip()
            if key in _BOOL_FIELDS and not sep:
                raw[key] = True
                continue
            if not sep or not key:
                raise FaultSpecError(f"sim directive '{item.strip()}' is not key=value")
            if key in _BOOL_FIELDS:
                if value not in ("true", "false", "1", "0"):
                    raise FaultSpecError(f"sim directive {key}={value}: use true or false")
                raw[key] = value in ("true", "1")
            else:
                try:
                    raw[key] = int(value)
                except ValueError:
                    raise FaultSpecError(
                        f"sim directive {key}={value}: value must be an integer"
                    ) from None
    return validate_fields(raw)


@dataclass(slots=True)
class FaultRule:
    """A runtime rule from `POST /_sim/faults`; applies to `count` requests (None: until
    cleared) of `model` (None: any model; matched against name and version)."""

    fields: dict[str, Any]
    model: str | None = None
    count: int | None = None
    applied: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "count": self.count, "applied": self.applied, **self.fields}


def rule_from_json(data: Any) -> FaultRule:
    if not isinstance(data, dict):
        raise FaultSpecError("fault rule must be a JSON object")
    body = dict(data)
    model = body.pop("model", None)
    if model is not None and (not isinstance(model, str) or not model):
        raise FaultSpecError("fault field 'model' must be a non-empty string or null")
    count = body.pop("count", None)
    if count is not None:
        count = _check_int("count", count)
        if count < 1:
            raise FaultSpecError("fault field 'count' must be >= 1 or null")
    fields = validate_fields(body)
    if not fields:
        raise FaultSpecError(f"fault rule sets no fault; fields: {', '.join(FAULT_FIELDS)}")
    return FaultRule(fields=fields, model=model, count=count)


class FaultBook:
    """Config defaults plus runtime rules; resolves the fault for each request."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._rules: list[FaultRule] = []
        self._rng = random.Random(config.seed)
        self._base = Fault(
            latency_ms=config.latency_ms,
            first_byte_ms=config.first_byte_ms,
            chunk_delay_ms=config.chunk_delay_ms,
        )
        self._base_is_clean = self._base == NO_FAULT and config.error_rate == 0.0

    @property
    def rules(self) -> list[FaultRule]:
        return self._rules

    def add(self, rule: FaultRule) -> None:
        self._rules.append(rule)

    def clear(self, model: str | None = None) -> int:
        before = len(self._rules)
        if model is None:
            self._rules.clear()
        else:
            self._rules = [r for r in self._rules if r.model != model]
        return before - len(self._rules)

    def resolve(self, names: tuple[str, str], directives: dict[str, Any]) -> Fault:
        """The fault for one request to the model known by `names` (name, version)."""
        if self._base_is_clean and not self._rules and not directives:
            return NO_FAULT
        fault = Fault(**asdict(self._base))
        if self._config.error_rate and self._rng.random() < self._config.error_rate:
            fault.status = self._config.error_status
        rule = self._take_rule(names)
        if rule is not None:
            for key, value in rule.fields.items():
                setattr(fault, key, value)
        for key, value in directives.items():
            setattr(fault, key, value)
        return fault

    def _take_rule(self, names: tuple[str, str]) -> FaultRule | None:
        for i, rule in enumerate(self._rules):
            if rule.model is None or rule.model in names:
                rule.applied += 1
                if rule.count is not None and rule.applied >= rule.count:
                    del self._rules[i]
                return rule
        return None
