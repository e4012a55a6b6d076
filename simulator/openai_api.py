"""`POST /v1/chat/completions`: the OpenAI chat completions wire protocol, streaming included."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from simulator.classifier import judge_answer, judge_text
from simulator.delivery import send_events, send_json, wait_before_headers
from simulator.errors import BadRequest, openai_error, openai_status_fault
from simulator.faults import (
    NO_FAULT,
    REPLY_CHUNK_CHARS,
    Fault,
    FaultSpecError,
    parse_directives,
)
from simulator.models import ModelSpec
from simulator.replies import (
    Reply,
    json_reply,
    scripted_reply,
    scripted_tool_reply,
    seed_digest,
    split_fixed,
    split_words,
    text_reply,
    tool_reply,
)
from simulator.state import STATE_KEY, SimState
from simulator.tokenizer import count_tokens
from simulator.validation import check_openai

FINGERPRINT = "governor-simulated"
MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 85
_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


def content_text(content: Any) -> tuple[str, int]:
    """(text, extra tokens for non-text parts) of a message's `content`."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise BadRequest("message content must be a string or an array of parts", "messages")
    texts = []
    extra = 0
    for part in content:
        if not isinstance(part, dict):
            raise BadRequest("message content parts must be objects", "messages")
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            text = part.get(kind)
            if not isinstance(text, str):
                raise BadRequest(f"content part of type '{kind}' needs a string '{kind}'")
            texts.append(text)
        else:
            extra += IMAGE_TOKENS
    return "\n".join(texts), extra


class ChatRequest:
    """The parts of a chat completion request the simulator acts on."""

    __slots__ = (
        "cum_tokens",
        "digest",
        "directives",
        "include_usage",
        "judge",
        "max_tokens",
        "prompt_tokens",
        "response_format",
        "segments",
        "stream",
        "tool",
        "tool_names",
    )

    def __init__(self, body: dict[str, Any], spec: ModelSpec) -> None:
        factor = spec.tokenizer_factor
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array", "messages")
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise BadRequest("'tools' must be an array", "tools")
        self.max_tokens = _max_tokens(body)
        check_openai(body, spec, self.max_tokens)
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = (
            self.stream and isinstance(options, dict) and options.get("include_usage") is True
        )

        cum: list[int] = []
        total = 0
        if tools:
            total = count_tokens(orjson.dumps(tools).decode(), factor)
            cum.append(total)
        last_text = ""
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest("each message must be an object with a string 'role'", "messages")
            last_text, extra = content_text(message.get("content"))
            total += count_tokens(last_text, factor) + extra + MESSAGE_OVERHEAD
            calls = message.get("tool_calls")
            if calls:
                total += count_tokens(orjson.dumps(calls).decode(), factor)
            cum.append(total)
        self.prompt_tokens = total
        self.cum_tokens = cum
        self.segments: list[Any] = ([tools] if tools else []) + messages

        last = messages[-1]
        role = last["role"]
        self.directives = parse_directives(last_text) if role == "user" else {}
        self.digest = seed_digest(last_text)
        self.judge = judge_text(None, messages)  # the text a guardrail judge asks about
        self.tool: tuple[str, Any] | None = None
        if tools and role == "user":
            self.tool = _chosen_tool(tools, body.get("tool_choice"))
        self.response_format = _response_format(body.get("response_format"))
        self.tool_names = frozenset(
            t["function"]["name"] for t in tools or ()
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str)
        )


def _response_format(fmt: Any) -> tuple[Any] | None:
    """(schema,) for JSON output — schema None for `json_object` — or None for text."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise BadRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'",
                         "response_format")
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return (None,)
    js = fmt.get("json_schema")
    if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
        raise BadRequest("'response_format.json_schema' must be an object with a 'schema'",
                         "response_format.json_schema")
    return (js.get("schema") or {"type": "object"},)


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{key}' must be a positive integer", key)
        return value
    return None


def _chosen_tool(tools: list[Any], choice: Any) -> tuple[str, Any] | None:
    """(name, parameters schema) of the tool to call, or None to answer with text."""
    if choice == "none":
        return None
    wanted = None
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            wanted = function["name"]
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest("each tool needs 'function' with a string 'name'", "tools")
        if wanted is None or function["name"] == wanted:
            return function["name"], function.get("parameters") or {}
    raise BadRequest(f"tool_choice names unknown function '{wanted}'", "tool_choice")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.in_flight += 1
    try:
        return await _serve_chat(request, state)
    finally:
        state.in_flight -= 1


async def read_openai_request(
    request: web.Request, state: SimState
) -> tuple[dict[str, Any], ModelSpec] | web.Response:
    """Auth, JSON body and model of an OpenAI-protocol request, or the error the API returns."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return openai_error(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            "invalid_request_error",
            "missing_api_key",
        )
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return openai_error(400, f"We could not parse the JSON body of your request: {exc}")
    if not isinstance(body, dict):
        return openai_error(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return openai_error(400, "You must provide a model parameter.", param="model")
    spec = state.index.get(model)
    if spec is None:
        return openai_error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return body, spec


async def _serve_chat(request: web.Request, state: SimState) -> web.StreamResponse:
    parsed = await read_openai_request(request, state)
    if isinstance(parsed, web.Response):
        return parsed
    body, spec = parsed
    state.last_request[spec.name] = body
    try:
        chat = ChatRequest(body, spec)
    except BadRequest as exc:
        return openai_error(400, str(exc), param=exc.param)
    except FaultSpecError as exc:
        return openai_error(400, str(exc), code="invalid_sim_directive", param="messages")
    state.count(spec, "chat.completions")

    fault = state.faults.resolve((spec.name, spec.version), chat.directives)
    if fault is not NO_FAULT:
        if fault.status is not None or fault.hang or fault.cut_after_chunks is not None:
            state.faulted[spec.name] += 1
        await wait_before_headers(request, fault)
        if fault.status is not None:
            return openai_status_fault(fault.status, fault.retry_after)

    reply = _reply(state, spec, chat, fault)
    cached = 0
    if chat.prompt_tokens >= state.config.openai_cache_min_tokens:
        cached = state.cache.openai_cached(
            spec.version, chat.segments, chat.cum_tokens, state.config.openai_cache_min_tokens
        )
    usage = _usage(chat.prompt_tokens, cached, reply.output_tokens)
    completion_id = state.new_id("chatcmpl-")
    created = int(time.time())
    if fault.omit_usage:
        chat.include_usage = False  # an OpenAI-compatible server that never reports usage
    if chat.stream:
        events = _stream_events(state, completion_id, created, spec, reply, chat, usage)
        return await send_events(request, events, fault)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text if reply.tool_name is None else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_name is not None:
        message["tool_calls"] = [
            {
                "id": state.new_id("call_"),
                "type": "function",
                "function": {"name": reply.tool_name, "arguments": reply.arguments},
            }
        ]
    completion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": spec.version,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH[reply.finish],
            }
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if fault.omit_usage:
        del completion["usage"]
    return await send_json(orjson.dumps(completion), fault)


def _reply(state: SimState, spec: ModelSpec, chat: ChatRequest, fault: Fault) -> Reply:
    factor = spec.tokenizer_factor
    scripted = fault.tool_call
    if scripted is not None and scripted["name"] in chat.tool_names:
        return scripted_tool_reply(scripted["name"], scripted["arguments"], factor)
    if chat.tool is not None:
        return tool_reply(chat.digest, chat.tool[0], chat.tool[1], factor)
    if fault.reply is not None:
        return scripted_reply(fault.reply, factor, REPLY_CHUNK_CHARS)
    if chat.judge is not None:  # the gateway's guardrail judge asks for a verdict
        return scripted_reply(judge_answer(chat.judge), factor, REPLY_CHUNK_CHARS)
    if chat.response_format is not None:
        return json_reply(chat.digest, chat.response_format[0], factor)
    target = fault.output_tokens or state.config.default_output_tokens
    return text_reply(chat.digest, target, chat.max_tokens, factor)


def _usage(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


_ROLE_DELTA = orjson.dumps({"role": "assistant", "content": "", "refusal": None})


@lru_cache(maxsize=4096)
def _content_deltas(text: str, words_per_chunk: int, chunk_chars: int = 0) -> tuple[bytes, ...]:
    """Serialized content deltas; replies repeat (same prompt, same text), so cache them."""
    pieces = split_fixed(text, chunk_chars) if chunk_chars else split_words(text, words_per_chunk)
    return tuple(orjson.dumps({"content": piece}) for piece in pieces)


def _stream_events(
    state: SimState,
    completion_id: str,
    created: int,
    spec: ModelSpec,
    reply: Reply,
    chat: ChatRequest,
    usage: dict[str, Any],
) -> list[bytes]:
    """`chat.completion.chunk` SSE lines; the envelope bytes are built once per response."""
    envelope = (
        b'data: {"id":'
        + orjson.dumps(completion_id)
        + b',"object":"chat.completion.chunk","created":'
        + str(created).encode()
        + b',"model":'
        + orjson.dumps(spec.version)
        + b',"service_tier":"default","system_fingerprint":"'
        + FINGERPRINT.encode()
        + b'","choices":'
    )
    usage_null = b',"usage":null' if chat.include_usage else b""
    open_choice = envelope + b'[{"index":0,"delta":'
    close_open = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"

    def delta(payload: dict[str, Any]) -> bytes:
        return open_choice + orjson.dumps(payload) + close_open

    events = []
    if reply.tool_name is None:
        events.append(open_choice + _ROLE_DELTA + close_open)
        for payload in _content_deltas(
            reply.text, state.config.stream_chunk_words, reply.chunk_chars
        ):
            events.append(open_choice + payload + close_open)
    else:
        events.append(delta({"role": "assistant", "content": None, "refusal": None}))
        call = {
            "index": 0,
            "id": state.new_id("call_"),
            "type": "function",
            "function": {"name": reply.tool_name, "arguments": ""},
        }
        events.append(delta({"tool_calls": [call]}))
        for piece in split_fixed(reply.arguments, 16):
            events.append(delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    finish = orjson.dumps(_FINISH[reply.finish])
    events.append(
        open_choice
        + b'{},"logprobs":null,"finish_reason":'
        + finish
        + b"}]"
        + usage_null
        + b"}\n\n"
    )
    if chat.include_usage:
        events.append(envelope + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    return events
