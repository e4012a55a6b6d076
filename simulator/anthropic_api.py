"""`POST /v1/messages`: the Anthropic messages wire protocol, streaming included."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from simulator.classifier import judge_answer, judge_text
from simulator.delivery import send_events, send_json, wait_before_headers
from simulator.errors import BadRequest, anthropic_error, anthropic_status_fault
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
from simulator.validation import check_anthropic

MESSAGE_OVERHEAD = 4
MEDIA_TOKENS = 85
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def _block_tokens(block: Any, factor: float) -> tuple[int, str | None, bool]:
    """(tokens, text usable as seed or None, is tool_result) of one content block."""
    if not isinstance(block, dict):
        raise BadRequest("content blocks must be objects", "messages")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise BadRequest("text blocks need a string 'text'", "messages")
        return count_tokens(text, factor), text, False
    if kind == "tool_result":
        content = block.get("content")
        if content is None:
            return 0, "", True
        if isinstance(content, str):
            return count_tokens(content, factor), content, True
        if not isinstance(content, list):
            raise BadRequest("tool_result content must be a string or blocks", "messages")
        tokens = 0
        texts = []
        for inner in content:
            inner_tokens, text, _ = _block_tokens(inner, factor)
            tokens += inner_tokens
            if text:
                texts.append(text)
        return tokens, "\n".join(texts), True
    if kind == "tool_use":
        return count_tokens(orjson.dumps(block.get("input")).decode(), factor) + 4, None, False
    if kind in ("thinking", "redacted_thinking"):
        return (
            count_tokens(str(block.get("thinking") or block.get("data") or ""), factor),
            None,
            False,
        )
    if kind in ("image", "document"):
        return MEDIA_TOKENS, None, False
    return count_tokens(orjson.dumps(block).decode(), factor), None, False


class MessagesRequest:
    """The parts of a messages request the simulator acts on; content is walked once, as
    cacheable segments (tools, system blocks, message blocks) with running token totals."""

    __slots__ = (
        "breakpoints",
        "cum_tokens",
        "digest",
        "directives",
        "input_tokens",
        "judge",
        "max_tokens",
        "output_schema",
        "segments",
        "stream",
        "tool",
        "tool_names",
    )

    def __init__(
        self,
        body: dict[str, Any],
        spec: ModelSpec,
        counting: bool = False,
        mid_system: bool = False,
    ) -> None:
        factor = spec.tokenizer_factor
        max_tokens = body.get("max_tokens", 1 if counting else None)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("max_tokens: Field required (a positive integer)")
        self.max_tokens = max_tokens
        if not counting:
            check_anthropic(body, spec, max_tokens)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: must be a non-empty list")
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise BadRequest("tools: must be a list")
        self.stream = body.get("stream") is True

        segments: list[Any] = []
        cum: list[int] = []
        breakpoints: list[int] = []
        total = 0

        def add(segment: Any, tokens: int) -> None:
            nonlocal total
            total += tokens
            if isinstance(segment, dict) and segment.get("cache_control"):
                breakpoints.append(len(segments))
            segments.append(segment)
            cum.append(total)

        for tool in tools or ():
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise BadRequest("tools: each tool needs a string 'name'")
            add(tool, count_tokens(orjson.dumps(tool).decode(), factor))
        system = body.get("system")
        if isinstance(system, str):
            if system:
                add(system, count_tokens(system, factor) + MESSAGE_OVERHEAD)
        elif isinstance(system, list):
            for block in system:
                add(block, _block_tokens(block, factor)[0])
        elif system is not None:
            raise BadRequest("system: must be a string or a list of text blocks")

        last_texts: list[str] = []
        last_is_tool_result = False
        role = ""
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise BadRequest(f"messages.{i}: Input should be a valid dictionary")
            if message.get("role") == "system" and mid_system:
                # Beta mid-conversation-system-*: system text in position; it is not a turn.
                system_content = message.get("content")
                if isinstance(system_content, str):
                    add(system_content, count_tokens(system_content, factor) + MESSAGE_OVERHEAD)
                elif isinstance(system_content, list):
                    for block in system_content:
                        add(block, _block_tokens(block, factor)[0])
                else:
                    raise BadRequest(f"messages.{i}.content: must be a string or text blocks")
                continue
            if message.get("role") not in ("user", "assistant"):
                # The real API's wording (clients such as Claude Code key on it).
                raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            role = message["role"]
            content = message.get("content")
            last_texts = []
            last_is_tool_result = False
            if isinstance(content, str):
                add(content, count_tokens(content, factor) + MESSAGE_OVERHEAD)
                last_texts.append(content)
            elif isinstance(content, list) and content:
                overhead = MESSAGE_OVERHEAD
                for block in content:
                    tokens, text, is_result = _block_tokens(block, factor)
                    add(block, tokens + overhead)
                    overhead = 0
                    if is_result:
                        last_is_tool_result = True
                    if text is not None and (is_result or block.get("type") == "text"):
                        last_texts.append(text)
            else:
                raise BadRequest("messages: content must be a string or a non-empty block list")
        self.segments = segments
        self.cum_tokens = cum
        self.breakpoints = breakpoints
        self.input_tokens = total

        seed = "\n".join(last_texts)
        self.digest = seed_digest(seed)
        self.judge = judge_text(body.get("system"), messages)  # a guardrail judge's text
        self.directives = parse_directives(seed) if role == "user" else {}
        self.tool: tuple[str, Any] | None = None
        if tools and role == "user" and not last_is_tool_result:
            self.tool = _chosen_tool(tools, body.get("tool_choice"))
        self.output_schema = _output_schema(body)
        self.tool_names = frozenset(t["name"] for t in tools or ())


def _output_schema(body: dict[str, Any]) -> Any:
    """Structured output: `output_config.format` (or the older beta's `output_format`)."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else body.get("output_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise BadRequest("output_config.format.type: Input should be 'json_schema'")
    if not isinstance(fmt.get("schema"), dict):
        raise BadRequest("output_config.format.schema: Field required")
    return fmt["schema"]


def _chosen_tool(tools: list[dict[str, Any]], choice: Any) -> tuple[str, Any] | None:
    wanted = None
    if isinstance(choice, dict):
        if choice.get("type") == "none":
            return None
        if choice.get("type") == "tool":
            wanted = choice.get("name")
    for tool in tools:
        if wanted is None or tool["name"] == wanted:
            return tool["name"], tool.get("input_schema") or {}
    raise BadRequest(f"tool_choice: unknown tool '{wanted}'")


async def messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.in_flight += 1
    try:
        return await _serve_messages(request, state)
    finally:
        state.in_flight -= 1


async def _parse(
    request: web.Request, state: SimState, counting: bool = False
) -> tuple[MessagesRequest, ModelSpec] | web.Response:
    """Auth, JSON and model checks shared by messages and count_tokens."""
    headers = request.headers
    key = headers.get("x-api-key", "").strip()
    if not key:
        auth = headers.get("Authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
    if not key:
        return anthropic_error(401, "authentication_error", "x-api-key header is required")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return anthropic_error(400, "invalid_request_error", f"The request body is not JSON: {exc}")
    if not isinstance(body, dict):
        return anthropic_error(400, "invalid_request_error", "The request body must be an object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return anthropic_error(400, "invalid_request_error", "model: Field required")
    spec = state.index.get(model)
    if spec is None:
        return anthropic_error(404, "not_found_error", f"model: {model}")
    if not counting:
        state.last_request[spec.name] = body
    try:
        beta = headers.get("anthropic-beta", "")
        return MessagesRequest(body, spec, counting, "mid-conversation-system" in beta), spec
    except (BadRequest, FaultSpecError) as exc:
        return anthropic_error(400, "invalid_request_error", str(exc))


async def count_message_tokens(request: web.Request) -> web.Response:
    """`POST /v1/messages/count_tokens`: the input tokens a message would cost, no reply."""
    state = request.app[STATE_KEY]
    parsed = await _parse(request, state, counting=True)
    if isinstance(parsed, web.Response):
        return parsed
    state.by_endpoint["count_tokens"] += 1
    return web.Response(
        body=orjson.dumps({"input_tokens": parsed[0].input_tokens}), content_type="application/json"
    )


async def _serve_messages(request: web.Request, state: SimState) -> web.StreamResponse:
    parsed = await _parse(request, state)
    if isinstance(parsed, web.Response):
        return parsed
    req, spec = parsed
    state.count(spec, "messages")

    fault = state.faults.resolve((spec.name, spec.version), req.directives)
    if fault is not NO_FAULT:
        if fault.status is not None or fault.hang or fault.cut_after_chunks is not None:
            state.faulted[spec.name] += 1
        await wait_before_headers(request, fault)
        if fault.status is not None:
            return anthropic_status_fault(fault.status, fault.retry_after)

    reply = _reply(state, spec, req, fault)
    written = read = 0
    if req.breakpoints:
        written, read = state.cache.anthropic_usage(
            spec.version,
            req.segments,
            req.cum_tokens,
            req.breakpoints,
            state.config.anthropic_cache_min_tokens,
        )
    usage = {
        "input_tokens": req.input_tokens - written - read,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        "output_tokens": reply.output_tokens,
        "service_tier": "standard",
    }
    message_id = state.new_id("msg_")
    tool_id = state.new_id("toolu_") if reply.tool_name is not None else ""
    if req.stream:
        events = _stream_events(state, message_id, tool_id, spec, reply, usage)
        if fault.omit_usage:
            events = [_without_usage(e) for e in events]
        return await send_events(request, events, fault)
    content: list[dict[str, Any]]
    if reply.tool_name is None:
        content = [{"type": "text", "text": text} for text in reply.blocks]
    else:
        content = [
            {
                "type": "tool_use",
                "id": tool_id,
                "name": reply.tool_name,
                "input": orjson.loads(reply.arguments),
            }
        ]
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": spec.version,
        "content": content,
        "stop_reason": _STOP[reply.finish],
        "stop_sequence": None,
        "usage": usage,
    }
    if fault.omit_usage:
        del message["usage"]  # an Anthropic-compatible server that never reports usage
    return await send_json(orjson.dumps(message), fault)


def _reply(state: SimState, spec: ModelSpec, req: MessagesRequest, fault: Fault) -> Reply:
    factor = spec.tokenizer_factor
    scripted = fault.tool_call
    if scripted is not None and scripted["name"] in req.tool_names:
        return scripted_tool_reply(scripted["name"], scripted["arguments"], factor)
    if req.tool is not None:
        return tool_reply(req.digest, req.tool[0], req.tool[1], factor)
    if fault.reply is not None:
        return scripted_reply(fault.reply, factor, REPLY_CHUNK_CHARS)
    if req.judge is not None:  # the gateway's guardrail judge asks for a verdict
        return scripted_reply(judge_answer(req.judge), factor, REPLY_CHUNK_CHARS)
    if req.output_schema is not None:
        return json_reply(req.digest, req.output_schema, factor)
    target = fault.output_tokens or state.config.default_output_tokens
    return text_reply(req.digest, target, req.max_tokens, factor)


def _without_usage(event: bytes) -> bytes:
    """The same SSE event with every `usage` object removed (the omit_usage fault)."""
    if b'"usage"' not in event:
        return event
    head, _, data = event.partition(b"data: ")
    doc = orjson.loads(data)
    doc.pop("usage", None)
    if isinstance(doc.get("message"), dict):
        doc["message"].pop("usage", None)
    return head + b"data: " + orjson.dumps(doc) + b"\n\n"


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_BLOCK_STOP = _event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = _event(b"message_stop", {"type": "message_stop"})


_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'


@lru_cache(maxsize=4096)
def _text_delta_events(
    text: str, words_per_chunk: int, chunk_chars: int = 0
) -> tuple[bytes, ...]:
    """Whole text_delta events (they carry no per-response ids), cached per reply text."""
    pieces = split_fixed(text, chunk_chars) if chunk_chars else split_words(text, words_per_chunk)
    return tuple(
        _DELTA_HEAD + orjson.dumps({"type": "text_delta", "text": piece}) + b"}\n\n"
        for piece in pieces
    )


def _add_block(events: list[bytes], index: int, block: dict[str, Any], pieces: list[bytes]) -> None:
    events.append(
        _event(
            b"content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
    )
    if not index:
        events.append(_PING)
    events.extend(pieces)
    if index:
        events.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": index}))
    else:
        events.append(_BLOCK_STOP)


def _stream_events(
    state: SimState,
    message_id: str,
    tool_id: str,
    spec: ModelSpec,
    reply: Reply,
    usage: dict[str, Any],
) -> list[bytes]:
    start_usage = dict(usage, output_tokens=1)
    events = [
        _event(
            b"message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": spec.version,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
    ]
    if reply.tool_name is None:
        for i, text in enumerate(reply.blocks):
            pieces = list(_text_delta_events(
                text, state.config.stream_chunk_words, reply.chunk_chars
            ))  # fmt: skip
            if i:  # a scripted later text block (`BLOCK_BREAK`): its own index
                pieces = [p.replace(b'"index":0', b'"index":%d' % i, 1) for p in pieces]
            _add_block(events, i, {"type": "text", "text": ""}, pieces)
    else:
        block = {"type": "tool_use", "id": tool_id, "name": reply.tool_name, "input": {}}
        pieces = [
            _DELTA_HEAD
            + orjson.dumps({"type": "input_json_delta", "partial_json": piece})
            + b"}\n\n"
            for piece in split_fixed(reply.arguments, 16)
        ]
        _add_block(events, 0, block, pieces)
    events.append(
        _event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _STOP[reply.finish], "stop_sequence": None},
                "usage": {
                    "input_tokens": usage["input_tokens"],
                    "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                    "cache_read_input_tokens": usage["cache_read_input_tokens"],
                    "output_tokens": usage["output_tokens"],
                },
            },
        )
    )
    events.append(_MESSAGE_STOP)
    return events
