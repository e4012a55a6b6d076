"""Streaming translation: Anthropic message events <-> OpenAI chat completion chunks.

Converters are fed one parsed upstream event at a time and return ready-to-send SSE bytes in the
caller's protocol, so a relay never buffers a whole response. Each instance serves one stream.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from activities.wire.errors import anthropic_stream_error, openai_stream_error
from activities.wire.mapping import (
    RESPONSE_FORMAT_TOOL,
    anthropic_message_id,
    anthropic_tool_id,
    anthropic_usage_dict,
    finish_from_anthropic,
    openai_completion_id,
    openai_tool_id,
    openai_usage_dict,
    stop_from_openai,
)
from activities.wire.usage import (
    Usage,
    index_of,
    merge_anthropic_delta_usage,
    obj,
    parse_anthropic_usage,
    parse_openai_usage,
)

DONE = b"data: [DONE]\n\n"
Json = dict[str, Any]


class AnthropicToOpenAIStream:
    """Anthropic stream events in, OpenAI `chat.completion.chunk` SSE lines out."""

    __slots__ = (
        "_answer_blocks",
        "_created",
        "_done",
        "_estimated",
        "_finish",
        "_id",
        "_include_usage",
        "_model",
        "_tool_of_block",
        "_usage",
    )

    def __init__(
        self, include_usage: bool = False, model: str | None = None, created: int | None = None
    ) -> None:
        self._include_usage = include_usage
        self._model = model or ""
        self._created = int(time.time()) if created is None else created
        self._id = "chatcmpl-governor"
        self._usage = Usage()
        self._tool_of_block: dict[int, int] = {}
        self._answer_blocks: set[int] = set()  # response-format tool blocks: streamed as content
        self._finish: str | None = None
        self._done = False
        self._estimated = False

    @property
    def usage(self) -> Usage:
        return self._usage

    def set_usage(self, usage: Usage, estimated: bool = False) -> None:
        """The usage the final chunk reports (Governor's estimate, flagged, when the upstream
        sent none)."""
        self._usage = usage
        self._estimated = estimated

    def _chunk(self, delta: Json, finish: str | None = None) -> bytes:
        return (
            b"data: "
            + orjson.dumps(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
            )
            + b"\n\n"
        )

    def convert(self, event: str | None, data: dict[str, Any]) -> list[bytes]:
        """SSE lines for one upstream event; non-object data is skipped."""
        if self._done or not isinstance(data, dict):
            return []
        kind = data.get("type", event)
        if kind == "content_block_delta":
            delta = obj(data.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                return [self._chunk({"content": text})] if text else []
            if dtype == "input_json_delta":
                index = index_of(data.get("index"), -1)
                part = delta.get("partial_json")
                if index in self._answer_blocks:
                    return [self._chunk({"content": part})] if part else []
                tool = self._tool_of_block.get(index)
                if tool is None or not part:
                    return []
                return [
                    self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": part}}]})
                ]
            return []
        if kind == "content_block_start":
            block = obj(data.get("content_block"))
            btype = block.get("type")
            if btype == "tool_use" and block.get("name") == RESPONSE_FORMAT_TOOL:
                self._answer_blocks.add(index_of(data.get("index"), -1))
                return []
            if btype == "tool_use":
                tool = len(self._tool_of_block)
                self._tool_of_block[index_of(data.get("index"), tool)] = tool
                start_input = block.get("input")
                args = orjson.dumps(start_input).decode() if start_input else ""
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": tool,
                                    "id": openai_tool_id(block.get("id"), f"call_{tool}"),
                                    "type": "function",
                                    "function": {
                                        "name": block.get("name") or "",
                                        "arguments": args,
                                    },
                                }
                            ]
                        }
                    )
                ]
            if btype == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "message_start":
            message = obj(data.get("message"))
            self._id = openai_completion_id(message.get("id"))
            if message.get("model"):
                self._model = message["model"]
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._usage = parse_anthropic_usage(usage, None)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            delta = obj(data.get("delta"))
            usage = data.get("usage")
            if isinstance(usage, dict):
                merge_anthropic_delta_usage(self._usage, usage)
            reason = finish_from_anthropic(delta.get("stop_reason"))
            if reason is None:
                return []
            if reason == "tool_calls" and not self._tool_of_block:
                reason = "stop"  # only the response-format tool was used: a plain answer
            self._finish = reason
            return [self._chunk({}, reason)]
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            self._done = True
            err = data.get("error")
            err = err if isinstance(err, dict) else {}
            code = str(err.get("code") or err.get("type") or "api_error")
            return [
                openai_stream_error(
                    code,
                    str(err.get("message") or "upstream stream error"),
                    type_=str(err.get("type") or "api_error"),
                )
            ]
        return []  # ping, content_block_stop, unknown future events

    def finish(self) -> list[bytes]:
        """At upstream EOF: close the stream even if `message_stop` never came."""
        return self._end()

    def _end(self) -> list[bytes]:
        if self._done:
            return []
        self._done = True
        out: list[bytes] = []
        if self._finish is None:
            self._finish = "stop"
            out.append(self._chunk({}, "stop"))
        if self._include_usage:
            out.append(
                b"data: "
                + orjson.dumps(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": self._usage_dict(),
                    }
                )
                + b"\n\n"
            )
        out.append(DONE)
        return out

    def _usage_dict(self) -> Json:
        usage = openai_usage_dict(self._usage)
        if self._estimated:
            usage["estimated"] = True
        return usage


def _event(name: bytes, payload: Json) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class OpenAIToAnthropicStream:
    """OpenAI chunks in (None for `[DONE]`), the full Anthropic event sequence out."""

    __slots__ = (
        "_block",
        "_block_of_tool",
        "_done",
        "_estimated",
        "_finish",
        "_id",
        "_input_estimate",
        "_model",
        "_next_block",
        "_open_text",
        "_started",
        "_usage",
    )

    def __init__(self, model: str | None = None, input_estimate: int = 0) -> None:
        self._model = model or ""
        self._input_estimate = input_estimate  # message_start's input_tokens (as the real API)
        self._id = "msg_governor"
        self._started = False
        self._done = False
        self._block: int | None = None  # the content block currently open
        self._open_text: int | None = None
        self._next_block = 0
        self._block_of_tool: dict[int, int] = {}
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._estimated = False

    @property
    def usage(self) -> Usage | None:
        return self._usage

    def set_usage(self, usage: Usage, estimated: bool = False) -> None:
        """The usage the final `message_delta` reports (Governor's estimate, flagged as such,
        when the upstream sent none)."""
        self._usage = usage
        self._estimated = estimated

    def _start(self, data: Json | None, out: list[bytes]) -> None:
        self._started = True
        if data is not None:
            self._id = anthropic_message_id(data.get("id"))
            if data.get("model"):
                self._model = data["model"]
        out.append(
            _event(
                b"message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": self._id,
                        "type": "message",
                        "role": "assistant",
                        "model": self._model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {
                            "input_tokens": self._input_estimate,
                            "output_tokens": 0,
                            "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0,
                        },
                    },
                },
            )
        )

    def _close_block(self, out: list[bytes]) -> None:
        if self._block is not None:
            out.append(
                _event(b"content_block_stop", {"type": "content_block_stop", "index": self._block})
            )
            self._block = None
            self._open_text = None

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open_text is None:
            self._close_block(out)
            index = self._next_block
            self._next_block += 1
            self._block = self._open_text = index
            out.append(
                _event(
                    b"content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
        out.append(
            _event(
                b"content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._open_text,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )

    def _tool(self, call: Json, out: list[bytes]) -> None:
        tool = index_of(call.get("index"), len(self._block_of_tool))
        fn = obj(call.get("function"))
        index = self._block_of_tool.get(tool)
        if index is None:
            self._close_block(out)
            index = self._next_block
            self._next_block += 1
            self._block_of_tool[tool] = index
            self._block = index
            out.append(
                _event(
                    b"content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": anthropic_tool_id(call.get("id"), f"toolu_{index}"),
                            "name": fn.get("name") or "",
                            "input": {},
                        },
                    },
                )
            )
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out.append(
                _event(
                    b"content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args},
                    },
                )
            )

    def convert(self, data: dict[str, Any] | None) -> list[bytes]:
        """SSE events for one upstream chunk (None: `[DONE]`); non-object data is skipped."""
        if self._done:
            return []
        out: list[bytes] = []
        if data is None:
            return self._end(out)
        if not isinstance(data, dict):
            return out
        err = data.get("error")
        if err:
            self._done = True
            err = err if isinstance(err, dict) else {"message": str(err)}
            code = str(err.get("code") or err.get("type") or "api_error")
            return [anthropic_stream_error(code, str(err.get("message") or "upstream error"))]
        if not self._started:
            self._start(data, out)
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._usage = parse_openai_usage(usage, self._model)
        choices = data.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    text = delta.get("content") or delta.get("refusal")
                    if isinstance(text, str) and text:
                        self._text(text, out)
                    calls = delta.get("tool_calls")
                    if isinstance(calls, list):
                        for call in calls:
                            if isinstance(call, dict):
                                self._tool(call, out)
                reason = choice.get("finish_reason")
                if reason:
                    self._finish = stop_from_openai(reason)
                    self._close_block(out)
        return out

    def finish(self) -> list[bytes]:
        """At upstream EOF without `[DONE]`: same as `convert(None)`."""
        return self.convert(None)

    def _end(self, out: list[bytes]) -> list[bytes]:
        self._done = True
        if not self._started:
            self._start(None, out)
        self._close_block(out)
        usage = anthropic_usage_dict(self._usage or Usage())
        if self._estimated:
            usage["estimated"] = True
        out.append(
            _event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._finish or "end_turn", "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        out.append(_event(b"message_stop", {"type": "message_stop"}))
        return out
