"""One call between a caller's protocol and a target's protocol, same or different.

The proxy and the LLM activity both need the same three steps around an upstream call: shape the
request for the target, shape the answer for the caller, and relay a stream while accounting for
it. Doing them here keeps the "which direction?" branching out of the hot-path callers.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from activities.wire.errors import WireError
from activities.wire.mapping import anthropic_usage_dict, openai_usage_dict
from activities.wire.sse import SSEParser, encode_sse
from activities.wire.stream_translate import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from activities.wire.translate import (
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from activities.wire.usage import (
    StreamAccumulator,
    Usage,
    estimate_tokens,
    estimated_usage,
    mark_estimated,
)

Protocol = Literal["openai", "anthropic"]


def caller_wants_usage_chunk(caller: Protocol, body: dict[str, Any]) -> bool:
    """Whether an OpenAI caller asked for the final usage chunk (Anthropic always gets usage)."""
    if caller == "anthropic":
        return True
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def request_for_target(
    caller: Protocol,
    target: Protocol,
    body: dict[str, Any],
    model: str,
    max_output_tokens: int | None = None,
) -> dict[str, Any]:
    """The caller's request body shaped for `target` and its concrete `model`.

    Streaming OpenAI requests always ask for usage: accounting needs it whatever the caller said
    (the relay drops the extra chunk when the caller did not ask). `max_output_tokens` (the
    model's catalog maximum) fills an Anthropic target's required max_tokens when the caller
    set no limit, and caps a limit above it.
    """
    if not isinstance(body, dict):
        raise WireError("request body must be a JSON object")
    if caller == target:
        out = dict(body)
        out["model"] = model
        if target == "openai" and out.get("stream"):
            options = out.get("stream_options")
            out["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
    elif caller == "openai":
        out = openai_request_to_anthropic(body, model, max_output_tokens)
    else:
        out = anthropic_request_to_openai(body, model)
    if max_output_tokens:
        _clamp_output(out, target, max_output_tokens)
    return out


def _clamp_output(out: dict[str, Any], target: Protocol, limit: int) -> None:
    """A limit above what the target model can produce is lowered to its maximum.

    The caller asked for a model the route serves with another (an alias such as Claude Code's
    `claude-haiku-5-5`, a fallback): the target's own bound applies, as it would refuse more.
    """
    keys = ("max_tokens",) if target == "anthropic" else ("max_completion_tokens", "max_tokens")
    for key in keys:
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            out[key] = limit
    thinking = out.get("thinking") if target == "anthropic" else None
    if isinstance(thinking, dict):
        budget, mt = thinking.get("budget_tokens"), out.get("max_tokens")
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (budget, mt))
        if ints and budget >= mt:  # (the target refuses other shapes with its own 400)
            out["thinking"] = {**thinking, "budget_tokens": max(1024, mt - 1)}


def response_for_caller(caller: Protocol, target: Protocol, resp: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming target response shaped for the caller."""
    if caller == target:
        return resp
    if caller == "openai":
        return anthropic_response_to_openai(resp)
    return openai_response_to_anthropic(resp)


class StreamRelay:
    """Upstream SSE bytes in, caller-protocol SSE bytes out; `accumulator` sees every event.

    Relays event by event, never raw TCP slices: a stream cut mid-event must not leave half an
    event in front of the error event that ends it. Same protocol: events are re-emitted as they
    came (except an OpenAI usage chunk the caller did not ask for); different protocols: each
    event is translated. `done` turns true with the upstream's terminal event (`[DONE]` or
    `message_stop`). Call `finish()` at upstream EOF. `events` counts upstream events seen.

    An upstream that ends without reporting any usage gets Governor's estimate
    (`estimate_input` prompt tokens plus the output counted from the text) in its place, marked
    `"estimated": true`: the caller's usage chunk or `message_delta` shows what is charged.
    """

    __slots__ = (
        "_a2o",
        "_chunk_head",
        "_estimate_input",
        "_include_usage",
        "_o2a",
        "_parser",
        "_same_openai",
        "_strip_usage",
        "accumulator",
        "done",
        "events",
        "usage_estimated",
    )

    def __init__(
        self,
        caller: Protocol,
        upstream: Protocol,
        *,
        include_usage: bool = False,
        model: str | None = None,
        estimate_input: int = 0,
    ) -> None:
        self._parser = SSEParser()
        self.accumulator = StreamAccumulator(upstream)
        self.done = False
        self.events = 0
        self.usage_estimated = False
        self._estimate_input = estimate_input
        self._include_usage = include_usage
        self._same_openai = caller == "openai" and upstream == "openai"
        self._chunk_head: dict[str, Any] = {}
        self._strip_usage = self._same_openai and not include_usage
        self._a2o = (
            AnthropicToOpenAIStream(include_usage=include_usage, model=model)
            if caller == "openai" and upstream == "anthropic"
            else None
        )
        self._o2a = (
            OpenAIToAnthropicStream(model=model, input_estimate=estimate_input)
            if caller == "anthropic" and upstream == "openai"
            else None
        )

    def feed(self, chunk: bytes) -> bytes:
        return b"".join([self._relay(ev.event, ev.data) for ev in self._parser.feed(chunk)])

    def finish(self) -> bytes:
        """Flush what upstream left unterminated and close the caller's stream properly."""
        out = b"".join([self._relay(ev.event, ev.data) for ev in self._parser.flush()])
        if self._a2o is not None:
            out += b"".join(self._a2o.finish())
        elif self._o2a is not None and not self.done:
            self._fill_missing_usage()
            out += b"".join(self._o2a.finish())
        return out

    def _estimate_if_missing(self) -> bool:
        """Put Governor's estimate where the upstream reported no usage at all."""
        acc = self.accumulator
        if acc.usage is not None and acc.usage.total_tokens:
            return False
        output = acc.text + "".join(c["arguments"] for c in acc.tool_calls)
        acc.usage = estimated_usage(self._estimate_input, output, acc.model_version)
        self.usage_estimated = True
        return True

    def _fill_missing_usage(self) -> bytes:
        """At an OpenAI upstream's end: estimate usage it never sent; the usage chunk for an
        OpenAI caller that asked for one (the Anthropic translator reads the accumulator)."""
        acc = self.accumulator
        if acc.protocol != "openai" or not self._estimate_if_missing():
            return b""
        assert acc.usage is not None
        if self._o2a is not None:
            self._o2a.set_usage(acc.usage, estimated=True)
            return b""
        if not (self._same_openai and self._include_usage):
            return b""
        chunk = {
            **self._chunk_head,
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": mark_estimated(openai_usage_dict(acc.usage)),
        }
        return encode_sse(orjson.dumps(chunk))

    def _anthropic_start(self, event: str | None, doc: dict[str, Any]) -> bytes | None:
        """An Anthropic upstream's `message_start` without usage: the caller's gets Governor's
        input estimate (output 0), as the real API always sends one (the Anthropic SDK's
        stream accumulator needs it). None: relay the event as it came."""
        message = doc.get("message")
        if not isinstance(message, dict) or isinstance(message.get("usage"), dict):
            return None
        usage = mark_estimated(anthropic_usage_dict(Usage(input_tokens=self._estimate_input)))
        return encode_sse(orjson.dumps({**doc, "message": {**message, "usage": usage}}), event)

    def _anthropic_delta(self, event: str | None, doc: dict[str, Any]) -> bytes | None:
        """An Anthropic upstream's `message_delta` when it (and message_start) reported no
        usage, or the delta alone carries none: the estimate goes in its place (None: relay
        the event as it came)."""
        acc = self.accumulator
        if not self._estimate_if_missing():
            if isinstance(doc.get("usage"), dict) or acc.usage is None:
                return None
            # message_start's counts only (its output is the 0 or 1 sent before any text):
            # the output is counted from the text.
            output = acc.text + "".join(c["arguments"] for c in acc.tool_calls)
            acc.usage.output_tokens = max(acc.usage.output_tokens, estimate_tokens(output))
            self.usage_estimated = True
        usage = acc.usage
        assert usage is not None
        if self._a2o is not None:
            out = b"".join(self._a2o.convert(event, doc))
            self._a2o.set_usage(usage, estimated=True)
            return out
        out = anthropic_usage_dict(usage)
        doc = {**doc, "usage": mark_estimated(out) if self.usage_estimated else out}
        return encode_sse(orjson.dumps(doc), event)

    def _observe(self, event: str | None, data: bytes) -> dict[str, Any] | None:
        self.events += 1
        if data == b"[DONE]":
            self.done = True
            return None
        if event == "message_stop":
            self.done = True
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if isinstance(doc, dict):
            self.accumulator.observe(doc, event)
            return doc
        return None

    def _relay(self, event: str | None, data: bytes) -> bytes:
        doc = self._observe(event, data)
        if doc is not None and self.accumulator.protocol == "anthropic" and (
            doc.get("type", event) == "message_delta"
        ):
            filled = self._anthropic_delta(event, doc)
            if filled is not None:
                return filled
        if (
            doc is not None
            and self._a2o is None
            and self.accumulator.protocol == "anthropic"
            and doc.get("type", event) == "message_start"
        ):
            filled = self._anthropic_start(event, doc)
            if filled is not None:
                return filled
        if self._a2o is not None:
            return b"".join(self._a2o.convert(event, doc)) if doc is not None else b""
        if self._o2a is not None:
            if data == b"[DONE]":
                self._fill_missing_usage()
                return b"".join(self._o2a.convert(None))
            return b"".join(self._o2a.convert(doc)) if doc is not None else b""
        if self._same_openai:
            if data == b"[DONE]":
                return self._fill_missing_usage() + encode_sse(data, event)
            if doc is not None and not self._chunk_head and doc.get("id"):
                self._chunk_head = {k: doc[k] for k in ("id", "created", "model") if k in doc}
        if (
            self._strip_usage
            and doc is not None
            and not doc.get("choices")
            and doc.get("usage") is not None
        ):
            return b""  # the gateway asked for usage; the caller did not
        return encode_sse(data, event)
