"""Token usage and output extraction from provider responses and streams.

Accounting prices four token classes differently (input, output, cache read, cache write), and the
providers count them differently: OpenAI's prompt_tokens include cached tokens, Anthropic's
input_tokens exclude both cache classes. `Usage` normalises to uncached input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from policies.request_text import request_view

Protocol = Literal["openai", "anthropic"]


@dataclass(slots=True)
class Usage:
    """Billable tokens of one call; `input_tokens` excludes cache reads and writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model_version: str | None = None

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    @property
    def prompt_tokens(self) -> int:
        """All input-side tokens, cached or not (what rate limits count)."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


def obj(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: provider payloads are not trusted."""
    return value if isinstance(value, dict) else {}


def index_of(value: object, default: int) -> int:
    """A stream event's block/tool index, or `default` when the provider sent something else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _int(value: object) -> int:
    # Providers send null, floats or strings in odd places; a bad count must not break accounting.
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else 0
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value > 0 else 0
    return 0


def parse_openai_usage(usage: dict[str, Any], model: object) -> Usage:
    """Usage from an OpenAI `usage` object (prompt_tokens include cached tokens)."""
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=_int(usage.get("completion_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=0,
        model_version=model if isinstance(model, str) else None,
    )


def parse_anthropic_usage(usage: dict[str, Any], model: object) -> Usage:
    """Usage from an Anthropic `usage` object (input_tokens exclude cache reads and writes)."""
    return Usage(
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
        cache_write_tokens=_int(usage.get("cache_creation_input_tokens")),
        model_version=model if isinstance(model, str) else None,
    )


def usage_from_openai(resp: dict[str, Any]) -> Usage:
    """Usage of an OpenAI chat completion (or its final stream chunk); zeros if none reported."""
    usage = resp.get("usage")
    return parse_openai_usage(usage if isinstance(usage, dict) else {}, resp.get("model"))


def usage_from_anthropic(resp: dict[str, Any]) -> Usage:
    """Usage of an Anthropic message; zeros if none reported."""
    usage = resp.get("usage")
    return parse_anthropic_usage(usage if isinstance(usage, dict) else {}, resp.get("model"))


def has_usage(resp: dict[str, Any]) -> bool:
    """Whether the provider reported usage at all (if not, estimate it)."""
    return isinstance(resp.get("usage"), dict)


def estimate_tokens(text: str) -> int:
    """Rough token count when a provider reports none: one token per four UTF-8 bytes."""
    return (len(text.encode("utf-8")) + 3) // 4


def estimated_usage(input_tokens: int, output_text: str, model_version: str | None = None) -> Usage:
    """What Governor charges when the provider reported no usage: the prompt's estimate and
    the output counted from the text it sent."""
    return Usage(
        input_tokens=input_tokens,
        output_tokens=estimate_tokens(output_text),
        model_version=model_version,
    )


def mark_estimated(usage: dict[str, Any]) -> dict[str, Any]:
    """A caller-facing usage object flagged as Governor's estimate (SDKs keep unknown fields:
    `usage.model_extra["estimated"]` in openai, `usage.estimated` in anthropic)."""
    usage["estimated"] = True
    return usage


class StreamAccumulator:
    """Watches a relayed stream and keeps what accounting and output guardrails need."""

    __slots__ = (
        "_parts",
        "_text",
        "_tool_index",
        "_tools",
        "error",
        "finish_reason",
        "model_version",
        "protocol",
        "usage",
    )

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.model_version: str | None = None
        self.error: dict[str, Any] | None = None
        self._parts: list[str] = []
        self._text: str | None = ""
        self._tools: list[dict[str, Any]] = []
        self._tool_index: dict[int, dict[str, Any]] = {}

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "".join(self._parts)
        return self._text

    @property
    def tool_calls(self) -> list[dict[str, str]]:
        """[{id, name, arguments}]; arguments is a JSON string, "{}" if the model sent none."""
        return [
            {"id": t["id"], "name": t["name"], "arguments": "".join(t["args"]) or "{}"}
            for t in self._tools
        ]

    def _add_text(self, piece: object) -> None:
        if isinstance(piece, str) and piece:
            self._parts.append(piece)
            self._text = None

    def observe(self, data: dict[str, Any], event: str | None = None) -> None:
        """Take in one parsed stream event; anything but a JSON object is ignored."""
        if not isinstance(data, dict):
            return
        if self.protocol == "openai":
            self._observe_openai(data)
        else:
            self._observe_anthropic(data, event)

    def _observe_openai(self, data: dict[str, Any]) -> None:
        err = data.get("error")
        if err:
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return
        model = data.get("model")
        if isinstance(model, str) and model:
            self.model_version = model
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_openai_usage(usage, self.model_version)
        choices = data.get("choices")
        if not choices or not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._add_text(delta.get("content"))
                calls = delta.get("tool_calls")
                if calls and isinstance(calls, list):
                    for call in calls:
                        if isinstance(call, dict):
                            self._openai_tool_delta(call)
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = reason

    def _openai_tool_delta(self, call: dict[str, Any]) -> None:
        index = index_of(call.get("index"), len(self._tools))
        fn = obj(call.get("function"))
        tool = self._tool_index.get(index)
        if tool is None:
            tool = {"id": call.get("id") or "", "name": fn.get("name") or "", "args": []}
            self._tool_index[index] = tool
            self._tools.append(tool)
        else:
            if call.get("id"):
                tool["id"] = call["id"]
            if fn.get("name"):
                tool["name"] = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            tool["args"].append(args)

    def _observe_anthropic(self, data: dict[str, Any], event: str | None) -> None:
        kind = data.get("type", event)
        if kind == "content_block_delta":
            delta = obj(data.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta":
                self._add_text(delta.get("text"))
            elif dtype == "input_json_delta":
                tool = self._tool_index.get(index_of(data.get("index"), -1))
                part = delta.get("partial_json")
                if tool is not None and isinstance(part, str) and part:
                    tool["args"].append(part)
        elif kind == "content_block_start":
            block = obj(data.get("content_block"))
            btype = block.get("type")
            if btype == "text":
                self._add_text(block.get("text"))
            elif btype in ("tool_use", "server_tool_use"):
                start_input = block.get("input")
                args = [orjson.dumps(start_input).decode()] if start_input else []
                tool = {"id": block.get("id") or "", "name": block.get("name") or "", "args": args}
                self._tool_index[index_of(data.get("index"), len(self._tools))] = tool
                self._tools.append(tool)
        elif kind == "message_start":
            message = obj(data.get("message"))
            model = message.get("model")
            if isinstance(model, str) and model:
                self.model_version = model
            usage = message.get("usage")
            if isinstance(usage, dict):
                self.usage = parse_anthropic_usage(usage, self.model_version)
        elif kind == "message_delta":
            delta = obj(data.get("delta"))
            if delta.get("stop_reason"):
                self.finish_reason = delta["stop_reason"]
            usage = data.get("usage")
            if isinstance(usage, dict):
                self._anthropic_delta_usage(usage)
        elif kind == "error":
            err = data.get("error")
            self.error = err if isinstance(err, dict) else {"message": str(err or data)}

    def _anthropic_delta_usage(self, usage: dict[str, Any]) -> None:
        current = self.usage or Usage(model_version=self.model_version)
        merge_anthropic_delta_usage(current, usage)
        self.usage = current


def merge_anthropic_delta_usage(current: Usage, usage: dict[str, Any]) -> None:
    """Apply a `message_delta` usage: its counts are cumulative; absent ones keep their value."""
    if usage.get("output_tokens") is not None:
        current.output_tokens = _int(usage["output_tokens"])
    if usage.get("input_tokens") is not None:
        current.input_tokens = _int(usage["input_tokens"])
    if usage.get("cache_read_input_tokens") is not None:
        current.cache_read_tokens = _int(usage["cache_read_input_tokens"])
    if usage.get("cache_creation_input_tokens") is not None:
        current.cache_write_tokens = _int(usage["cache_creation_input_tokens"])


def request_text(protocol: Protocol, body: dict[str, Any]) -> str:
    """All prompt text of a request (system, messages, tool calls and results): the normalised
    view's text (`policies.request_text`), for callers that need nothing else of it."""
    return request_view(protocol, body).text
