"""Request and response translation between OpenAI chat completions and Anthropic messages.

A virtual model may send an OpenAI-format caller to an Anthropic target and the reverse, so each
direction must keep everything the other side can express: system text, multi-part content,
images, tool calls and results, tool choice, limits, stop sequences, usage with cache fields.
What the target cannot express is refused with a `WireError` (a 400 for the caller), never a crash.
Every top-level request field is decided in `activities.wire.fields` (translated, refused or
ignored, and why); values are normalised to what the target's API validates (image media types,
tool-call ids, stop-sequence counts, temperature range). Streams are translated by
`activities.wire.stream_translate` (re-exported here).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from activities.wire.errors import WireError
from activities.wire.fields import ANTHROPIC_TO_OPENAI, OPENAI_TO_ANTHROPIC, admit
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
    usage_of_anthropic,
    usage_of_openai,
)
from activities.wire.stream_translate import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from activities.wire.usage import obj

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "WireError",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
]

# Anthropic requires max_tokens; when neither the caller nor the catalog gives one (every Claude
# model since 3.0 can write at least this much).
DEFAULT_MAX_TOKENS = 4096
Json = dict[str, Any]

# Image media types both APIs accept (Anthropic validates an enum; OpenAI: png, jpeg, gif, webp).
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_MEDIA_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
}
DOCUMENT_MEDIA_TYPES = frozenset({"application/pdf"})
OPENAI_MAX_STOP = 4  # OpenAI refuses more stop sequences
OPENAI_MAX_TOOL_NAME = 64  # OpenAI function names: ^[a-zA-Z0-9_-]{1,64}$
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
MIN_THINKING_BUDGET = 1024  # Anthropic's minimum budget_tokens


def _require_dict(value: object, what: str) -> Json:
    if not isinstance(value, dict):
        raise WireError(f"{what} must be a JSON object")
    return value


def _require_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise WireError(f"{what} must be an array")
    return value


def _list(value: object) -> list[Any]:
    # For provider responses: tolerate what we cannot use rather than fail the caller's call.
    return value if isinstance(value, list) else []


def _with_cache_control(block: Json, source: Json) -> Json:
    cc = source.get("cache_control")
    if cc is not None:
        block["cache_control"] = cc
    return block


# ---------------------------------------------------------------- OpenAI request -> Anthropic


def media_type_for(kind: str, media_type: object, where: str) -> str:
    """`media_type` as the target validates it (`image/jpg` -> `image/jpeg`, case folded), or a
    WireError naming what is accepted."""
    mt = media_type.strip().lower() if isinstance(media_type, str) else ""
    mt = _MEDIA_ALIASES.get(mt, mt)
    allowed = IMAGE_MEDIA_TYPES if kind == "image" else DOCUMENT_MEDIA_TYPES
    if mt not in allowed:
        raise WireError(
            f"{where}: {kind} media type {media_type!r} is not accepted by the target; use one "
            f"of {', '.join(sorted(allowed))}"
        )
    return mt


def _data_url_source(url: str, where: str, kind: str = "image") -> Json:
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or not media_type:
        raise WireError(f"{where}: only base64 data URLs (data:<type>;base64,...) are supported")
    return {"type": "base64", "media_type": media_type_for(kind, media_type, where), "data": data}


def _image_block(part: Json, where: str) -> Json:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise WireError(f"{where}: image_url.url must be a non-empty string")
    if url.startswith("data:"):
        source = _data_url_source(url, where)
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise WireError(f"{where}: image_url.url must be an http(s) or data URL")
    return _with_cache_control({"type": "image", "source": source}, part)


def _file_block(part: Json, where: str) -> Json:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise WireError(f"{where}: only inline file_data (a base64 data URL) can be translated")
    source = _data_url_source(data, where, "document")
    return _with_cache_control({"type": "document", "source": source}, part)


def _anthropic_blocks(content: object, where: str) -> list[Json]:
    """OpenAI content (string or parts) -> Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if content is None:
        return []
    blocks: list[Json] = []
    for i, part in enumerate(_require_list(content, f"{where}.content")):
        at = f"{where}.content[{i}]"
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
            continue
        part = _require_dict(part, at)
        ptype = part.get("type")
        if ptype == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise WireError(f"{at}.text must be a string")
            if text:
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
        elif ptype == "refusal":
            text = part.get("refusal")
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        elif ptype == "image_url":
            blocks.append(_image_block(part, at))
        elif ptype == "file":
            blocks.append(_file_block(part, at))
        else:
            raise WireError(
                f"{at}: content part type {ptype!r} cannot be sent to an Anthropic model"
            )
    return blocks


def _tool_result_content(content: object, where: str) -> str | list[Json]:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return _anthropic_blocks(content, where)


def _tool_use_block(call: object, where: str) -> Json:
    call = _require_dict(call, where)
    fn = _require_dict(call.get("function"), f"{where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise WireError(f"{where}.function.name must be a non-empty string")
    raw = fn.get("arguments") or "{}"
    try:
        args = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        raise WireError(f"{where}.function.arguments is not valid JSON") from None
    if not isinstance(args, dict):
        raise WireError(f"{where}.function.arguments must encode a JSON object")
    return {
        "type": "tool_use",
        "id": anthropic_tool_id(call.get("id"), f"toolu_{name}"),
        "name": name,
        "input": args,
    }


def _append_turn(messages: list[Json], role: str, blocks: list[Json]) -> None:
    # Anthropic wants alternating turns and tool_results first in a user turn: merge neighbours.
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _system_blocks(msg: Json, where: str) -> list[Json]:
    blocks = _anthropic_blocks(msg.get("content"), where)
    for block in blocks:
        if block["type"] != "text":
            raise WireError(f"{where}: system messages may contain only text")
    return blocks


def _anthropic_tools(tools: object, what: str = "tools") -> list[Json]:
    out: list[Json] = []
    for i, tool in enumerate(_require_list(tools, what)):
        tool = _require_dict(tool, f"{what}[{i}]")
        if what == "functions":
            fn = tool  # the deprecated list holds the function objects themselves
        else:
            if tool.get("type", "function") != "function":
                raise WireError(f"{what}[{i}]: only function tools can be sent to an Anthropic "
                                "model")
            fn = _require_dict(tool.get("function"), f"{what}[{i}].function")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise WireError(f"{what}[{i}].function.name must be a non-empty string")
        if name == RESPONSE_FORMAT_TOOL:
            raise WireError(f"{what}[{i}]: the tool name {name!r} is reserved by the gateway")
        params = fn.get("parameters")
        entry: Json = {"name": name}
        if fn.get("description"):
            entry["description"] = fn["description"]
        if not isinstance(params, dict):
            params = {"type": "object", "properties": {}}
        elif "type" not in params:
            params = {"type": "object", **params}  # Anthropic requires input_schema.type
        entry["input_schema"] = params
        out.append(_with_cache_control(entry, tool))
    return out


def _anthropic_tool_choice(choice: object, parallel: object) -> Json | None:
    if choice is None:
        result: Json | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type", "function") == "function":
        fn = choice.get("function", choice)  # {"name": ...} alone: the deprecated function_call
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise WireError("tool_choice.function.name must be a non-empty string")
        result = {"type": "tool", "name": name}
    else:
        raise WireError("tool_choice must be 'auto', 'none', 'required' or a function choice")
    if result is not None and parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def _stop_sequences(stop: object, field: str = "stop") -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s] or None
    raise WireError(f"{field} must be a string or an array of strings")


def _positive_int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WireError(f"{field} must be a positive integer")
    return value


def _response_format_tool(fmt: object) -> Json | None:
    """OpenAI `response_format` as the forced tool whose input is the answer (None for text)."""
    if fmt is None:
        return None
    fmt = _require_dict(fmt, "response_format")
    ftype = fmt.get("type")
    if ftype == "text":
        return None
    if ftype == "json_object":
        schema: Json = {"type": "object"}
        description = "Reply with a JSON object: its input is your whole answer."
    elif ftype == "json_schema":
        spec = _require_dict(fmt.get("json_schema"), "response_format.json_schema")
        schema = _require_dict(spec.get("schema", {"type": "object"}), "json_schema.schema")
        if schema.get("type", "object") != "object":
            raise WireError("response_format.json_schema.schema must describe an object for an "
                            "Anthropic target (its answer is a tool input)")
        description = str(spec.get("description") or "")
        name = spec.get("name")
        description = (
            f"Reply with {name!r}: its input is your whole answer. {description}".strip()
            if name else f"Reply through this tool: its input is your whole answer. {description}"
        ).strip()
    else:
        raise WireError("response_format.type must be text, json_object or json_schema")
    return {"name": RESPONSE_FORMAT_TOOL, "description": description, "input_schema": schema}


def _apply_response_format(out: Json, tool: Json, choice: object) -> None:
    """Offer the answer tool: forced when the caller's tools cannot be called this turn, one of
    the choices ("any") when they can; a caller forcing one of its own tools keeps that."""
    tools = out.setdefault("tools", [])
    tools.append(tool)
    current = out.get("tool_choice")
    ctype = current.get("type") if isinstance(current, dict) else None
    if ctype == "tool":
        return
    if len(tools) == 1 or ctype == "none" or choice == "none":
        forced: Json = {"type": "tool", "name": RESPONSE_FORMAT_TOOL}
    else:
        forced = {"type": "any"}
    if isinstance(current, dict) and current.get("disable_parallel_tool_use"):
        forced["disable_parallel_tool_use"] = True
    out["tool_choice"] = forced


def _thinking(effort: object, max_tokens: int) -> Json | None:
    if effort is None or effort in ("none", "minimal"):
        return None
    budget = THINKING_BUDGET.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise WireError("reasoning_effort must be one of none, minimal, low, medium, high")
    budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        raise WireError(
            f"reasoning_effort {effort!r} needs max_completion_tokens above "
            f"{MIN_THINKING_BUDGET} for an Anthropic target (its thinking budget is at least "
            f"{MIN_THINKING_BUDGET} tokens and counts within the output limit)"
        )
    return {"type": "enabled", "budget_tokens": budget}


_SERVICE_TIER_TO_ANTHROPIC = {"auto": "auto", "default": "standard_only"}


def openai_request_to_anthropic(
    body: dict[str, Any], model: str, default_max_tokens: int | None = None
) -> dict[str, Any]:
    """An OpenAI chat completions request as an Anthropic messages request for `model`.

    `default_max_tokens` (the model's catalog max_output_tokens) fills Anthropic's required
    max_tokens when the caller set no limit.
    """
    body = _require_dict(body, "request body")
    admit(body, OPENAI_TO_ANTHROPIC, "Anthropic")
    system: list[Json] = []
    messages: list[Json] = []
    for i, msg in enumerate(_require_list(body.get("messages"), "messages")):
        where = f"messages[{i}]"
        msg = _require_dict(msg, where)
        role = msg.get("role")
        if role == "system" or role == "developer":
            system.extend(_system_blocks(msg, where))
        elif role == "user":
            _append_turn(messages, "user", _anthropic_blocks(msg.get("content"), where))
        elif role == "assistant":
            blocks = _anthropic_blocks(msg.get("content"), where)
            calls = msg.get("tool_calls")
            if calls:
                blocks.extend(
                    _tool_use_block(c, f"{where}.tool_calls[{j}]")
                    for j, c in enumerate(_require_list(calls, f"{where}.tool_calls"))
                )
            _append_turn(messages, "assistant", blocks)
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise WireError(f"{where}.tool_call_id must be a non-empty string")
            result = {
                "type": "tool_result",
                "tool_use_id": anthropic_tool_id(call_id, call_id),
                "content": _tool_result_content(msg.get("content"), where),
            }
            _append_turn(messages, "user", [result])
        else:
            raise WireError(
                f"{where}.role {role!r} is not one of system, developer, user, assistant, tool"
            )
    if messages:
        _strip_final_assistant(messages)
    if not messages:
        raise WireError("messages must contain at least one user or assistant message")

    out: Json = {"model": model}
    if system:
        plain = len(system) == 1 and "cache_control" not in system[0]
        out["system"] = system[0]["text"] if plain else system
    out["messages"] = [_collapse(m) for m in messages]
    limit = body.get("max_completion_tokens")
    field = "max_completion_tokens"
    if limit is None:
        limit, field = body.get("max_tokens"), "max_tokens"
    if limit is None:
        limit = default_max_tokens or DEFAULT_MAX_TOKENS
    out["max_tokens"] = _positive_int(limit, field)
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            raise WireError("temperature must be a number")
        out["temperature"] = max(0.0, min(float(temperature), 1.0))  # Anthropic's range is 0..1
    top_p = body.get("top_p")
    if top_p is not None:
        if "temperature" not in out:
            out["top_p"] = top_p
        elif top_p != 1 and out["temperature"] != 1.0:
            # Current Claude models take temperature or top_p, not both.
            raise WireError("temperature and top_p cannot both be sent to an Anthropic target; "
                            "set one of them (or leave top_p at 1)")
        elif top_p != 1:
            out["top_p"] = top_p
            del out["temperature"]  # temperature 1 is Anthropic's default: nothing is lost
    stops = _stop_sequences(body.get("stop"))
    if stops:
        out["stop_sequences"] = stops
    tools = body.get("tools") or body.get("functions")
    if tools:
        out["tools"] = _anthropic_tools(tools, "tools" if body.get("tools") else "functions")
    raw_choice = body.get("tool_choice")
    if raw_choice is None and body.get("function_call") is not None:
        fc = body["function_call"]
        raw_choice = {"type": "function", "function": fc} if isinstance(fc, dict) else fc
    choice = _anthropic_tool_choice(raw_choice, body.get("parallel_tool_calls"))
    if choice is not None and "tools" in out:
        out["tool_choice"] = choice
    answer_tool = _response_format_tool(body.get("response_format"))
    if answer_tool is not None:
        _apply_response_format(out, answer_tool, raw_choice)
    thinking = _thinking(body.get("reasoning_effort"), out["max_tokens"])
    if thinking is not None and _mid_tool_loop(messages):
        # Anthropic wants the thinking block that preceded a tool call sent back with it; an
        # OpenAI caller never saw it, so this turn (tool results going back) runs without
        # thinking, and thinking resumes with the next user turn.
        thinking = None
    if thinking is not None:
        forced = out.get("tool_choice", {}).get("type") in ("any", "tool")
        if forced:
            raise WireError("reasoning_effort cannot be combined with a forced tool or "
                            "response_format for an Anthropic target (thinking requires "
                            "tool_choice auto)")
        if out.get("temperature") not in (None, 1.0):
            raise WireError("reasoning_effort with a temperature other than 1 cannot be sent "
                            "to an Anthropic target (thinking requires temperature 1)")
        out["thinking"] = thinking
    tier = body.get("service_tier")
    if tier is not None:
        if tier not in _SERVICE_TIER_TO_ANTHROPIC:
            raise WireError(f"service_tier {tier!r} has no Anthropic equivalent; use auto or "
                            "default", code="unsupported_field")
        out["service_tier"] = _SERVICE_TIER_TO_ANTHROPIC[tier]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream"):
        out["stream"] = True
    return out


def _mid_tool_loop(messages: list[Json]) -> bool:
    """Whether the latest assistant turn called a tool (its results are being sent back)."""
    for msg in reversed(messages):
        if msg["role"] == "assistant":
            return any(b.get("type") == "tool_use" for b in msg["content"])
    return False


def _strip_final_assistant(messages: list[Json]) -> None:
    # Anthropic refuses a final (prefill) assistant turn that ends with whitespace.
    last = messages[-1]
    if last["role"] != "assistant":
        return
    blocks = last["content"]
    if blocks and blocks[-1]["type"] == "text":
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {**blocks[-1], "text": text}
        else:
            blocks.pop()
            if not blocks:
                messages.pop()


def _collapse(msg: Json) -> Json:
    # A turn holding a single plain text block reads (and round-trips) best as a string.
    content = msg["content"]
    if len(content) == 1 and content[0]["type"] == "text" and len(content[0]) == 2:
        return {"role": msg["role"], "content": content[0]["text"]}
    return msg


# ---------------------------------------------------------------- Anthropic request -> OpenAI


def _openai_image_part(block: Json, where: str) -> Json:
    source = _require_dict(block.get("source"), f"{where}.source")
    stype = source.get("type")
    url: object
    if stype == "base64":
        media_type = media_type_for("image", source.get("media_type"), f"{where}.source")
        url = f"data:{media_type};base64,{source.get('data')}"
    elif stype == "url":
        url = source.get("url")
        if not isinstance(url, str):
            raise WireError(f"{where}.source.url must be a string")
    else:
        raise WireError(f"{where}: image source type {stype!r} cannot be sent to an OpenAI model")
    return {"type": "image_url", "image_url": {"url": url}}


def _openai_document_part(block: Json, where: str) -> Json:
    source = _require_dict(block.get("source"), f"{where}.source")
    stype = source.get("type")
    if stype == "text":  # a plain-text document is text to an OpenAI model
        data = source.get("data")
        if not isinstance(data, str):
            raise WireError(f"{where}.source.data must be a string")
        title = block.get("title")
        return {"type": "text", "text": f"{title}\n\n{data}" if title else data}
    if stype != "base64":
        raise WireError(f"{where}: only base64 and text documents can be sent to an OpenAI model")
    media_type = media_type_for("document", source.get("media_type"), f"{where}.source")
    data_url = f"data:{media_type};base64,{source.get('data')}"
    name = block.get("title") or "document.pdf"
    return {"type": "file", "file": {"filename": name, "file_data": data_url}}


def _openai_parts(blocks: list[Any], where: str, *, text_only: bool = False) -> list[Json]:
    parts: list[Json] = []
    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        block = _require_dict(block, at)
        btype = block.get("type")
        if btype == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise WireError(f"{at}.text must be a string")
            parts.append({"type": "text", "text": text})
        elif btype in ("thinking", "redacted_thinking"):
            continue  # the OpenAI side cannot accept another model's reasoning
        elif text_only:
            raise WireError(f"{at}: block type {btype!r} is not allowed here")
        elif btype == "image":
            parts.append(_openai_image_part(block, at))
        elif btype == "document":
            parts.append(_openai_document_part(block, at))
        else:
            raise WireError(f"{at}: block type {btype!r} cannot be sent to an OpenAI model")
    return parts


def _simple_content(parts: list[Json]) -> str | list[Json]:
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) <= 1 else parts
    return parts


TOOL_ERROR_PREFIX = "[tool error] "


def _tool_message(block: Json, where: str, spill: list[Json]) -> Json:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise WireError(f"{where}.tool_use_id must be a non-empty string")
    content = block.get("content")
    if content is None:
        text: str | list[Json] = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = _openai_parts(_require_list(content, f"{where}.content"), f"{where}.content")
        # OpenAI tool messages carry text only: images go to the user turn that follows.
        spill.extend(p for p in parts if p["type"] != "text")
        texts = [p for p in parts if p["type"] == "text"]
        text = texts[0]["text"] if len(texts) == 1 else texts
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise WireError(f"{where}.is_error must be true or false")
    if is_error:
        # OpenAI tool messages have no error flag: the model reads it in the content.
        if isinstance(text, str):
            text = TOOL_ERROR_PREFIX + text
        else:
            text = [{"type": "text", "text": TOOL_ERROR_PREFIX.strip()}, *text]
    return {
        "role": "tool",
        "tool_call_id": openai_tool_id(call_id, call_id),
        "content": text,
    }


def _openai_user_messages(msg: Json, where: str, out: list[Json]) -> None:
    content = msg.get("content")
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    blocks = _require_list(content, f"{where}.content")
    rest: list[Any] = []
    spill: list[Json] = []
    for i, block in enumerate(blocks):
        if isinstance(block, dict) and block.get("type") == "tool_result":
            out.append(_tool_message(block, f"{where}.content[{i}]", spill))
        else:
            rest.append(block)
    parts = spill + _openai_parts(rest, f"{where}.content")
    if parts:
        out.append({"role": "user", "content": _simple_content(parts)})


def _openai_assistant_message(msg: Json, where: str) -> Json | None:
    content = msg.get("content")
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[Json] = []
    for i, block in enumerate(_require_list(content, f"{where}.content")):
        at = f"{where}.content[{i}]"
        block = _require_dict(block, at)
        btype = block.get("type")
        if btype == "text":
            texts.append(str(block.get("text", "")))
        elif btype == "tool_use":
            name = block.get("name")
            if not isinstance(name, str) or not name:
                raise WireError(f"{at}.name must be a non-empty string")
            calls.append(
                {
                    "id": openai_tool_id(block.get("id"), f"call_{name}"),
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif btype in ("thinking", "redacted_thinking"):
            continue
        else:
            raise WireError(
                f"{at}: assistant block type {btype!r} cannot be sent to an OpenAI model"
            )
    if not texts and not calls:
        return None
    out: Json = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _openai_tools(tools: object) -> list[Json]:
    out: list[Json] = []
    for i, tool in enumerate(_require_list(tools, "tools")):
        tool = _require_dict(tool, f"tools[{i}]")
        ttype = tool.get("type")
        if ttype not in (None, "custom"):
            raise WireError(f"tools[{i}]: server tool {ttype!r} cannot be sent to an OpenAI model")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise WireError(f"tools[{i}].name must be a non-empty string")
        if len(name) > OPENAI_MAX_TOOL_NAME:
            raise WireError(f"tools[{i}].name is {len(name)} characters; an OpenAI target "
                            f"accepts at most {OPENAI_MAX_TOOL_NAME}")
        fn: Json = {"name": name}
        if tool.get("description"):
            fn["description"] = tool["description"]
        schema = tool.get("input_schema")
        fn["parameters"] = (
            schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        )
        out.append({"type": "function", "function": fn})
    return out


def _openai_tool_choice(choice: object) -> tuple[object, bool]:
    """(OpenAI tool_choice, whether parallel calls are disabled)."""
    if choice is None:
        return None, False
    choice = _require_dict(choice, "tool_choice")
    ctype = choice.get("type")
    no_parallel = bool(choice.get("disable_parallel_tool_use"))
    if ctype == "auto":
        return "auto", no_parallel
    if ctype == "any":
        return "required", no_parallel
    if ctype == "none":
        return "none", False
    if ctype == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise WireError("tool_choice.name must be a non-empty string")
        return {"type": "function", "function": {"name": name}}, no_parallel
    raise WireError("tool_choice.type must be one of auto, any, tool, none")


def _system_text(system: object) -> str | list[Json] | None:
    if system is None or system == "":
        return None
    if isinstance(system, str):
        return system
    parts = _openai_parts(_require_list(system, "system"), "system", text_only=True)
    if not parts:
        return None
    return parts[0]["text"] if len(parts) == 1 else parts


def _response_format_from_anthropic(body: Json) -> Json | None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        fmt = body.get("output_format")
    if fmt is None:
        return None
    fmt = _require_dict(fmt, "output_config.format")
    if fmt.get("type") != "json_schema":
        raise WireError("output_config.format.type must be json_schema")
    schema = _require_dict(fmt.get("schema"), "output_config.format.schema")
    return {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }


_SERVICE_TIER_TO_OPENAI = {"auto": "auto", "standard_only": "default"}


def anthropic_request_to_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic messages request as an OpenAI chat completions request for `model`."""
    body = _require_dict(body, "request body")
    admit(body, ANTHROPIC_TO_OPENAI, "OpenAI")
    messages: list[Json] = []
    system = _system_text(body.get("system"))
    if system is not None:
        messages.append({"role": "system", "content": system})
    for i, msg in enumerate(_require_list(body.get("messages"), "messages")):
        where = f"messages[{i}]"
        msg = _require_dict(msg, where)
        role = msg.get("role")
        if role == "user":
            _openai_user_messages(msg, where, messages)
        elif role == "assistant":
            converted = _openai_assistant_message(msg, where)
            if converted is not None:
                messages.append(converted)
        elif role == "system":
            # A mid-conversation system message (beta mid-conversation-system-*): in position.
            text = _system_text(msg.get("content"))
            if text is not None:
                messages.append({"role": "system", "content": text})
        else:
            raise WireError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    out: Json = {"model": model, "messages": messages}
    limit = body.get("max_tokens")
    if limit is not None:
        out["max_completion_tokens"] = _positive_int(limit, "max_tokens")
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stops = _stop_sequences(body.get("stop_sequences"), "stop_sequences")
    if stops:
        if len(stops) > OPENAI_MAX_STOP:
            raise WireError(f"stop_sequences has {len(stops)} entries; an OpenAI target accepts "
                            f"at most {OPENAI_MAX_STOP}")
        out["stop"] = stops
    if body.get("tools"):
        out["tools"] = _openai_tools(body["tools"])
        choice, no_parallel = _openai_tool_choice(body.get("tool_choice"))
        if choice is not None:
            out["tool_choice"] = choice
        if no_parallel:
            out["parallel_tool_calls"] = False
    response_format = _response_format_from_anthropic(body)
    if response_format is not None:
        out["response_format"] = response_format
    tier = body.get("service_tier")
    if tier is not None:
        if tier not in _SERVICE_TIER_TO_OPENAI:
            raise WireError("service_tier must be auto or standard_only")
        out["service_tier"] = _SERVICE_TIER_TO_OPENAI[tier]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# ---------------------------------------------------------------- responses


def anthropic_response_to_openai(
    resp: dict[str, Any], *, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat completion."""
    resp = _require_dict(resp, "response")
    texts: list[str] = []
    calls: list[Json] = []
    for block in _list(resp.get("content")):
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        if btype == "text":
            texts.append(str(block.get("text", "")))
        elif btype == "tool_use" and block.get("name") == RESPONSE_FORMAT_TOOL:
            texts = [orjson.dumps(block.get("input") or {}).decode()]  # the structured answer
        elif btype == "tool_use":
            calls.append(
                {
                    "id": openai_tool_id(block.get("id"), f"call_{len(calls)}"),
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: Json = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    finish = finish_from_anthropic(resp.get("stop_reason")) or "stop"
    if calls:
        message["tool_calls"] = calls
    elif finish == "tool_calls":
        finish = "stop"  # only the response-format tool was used: a plain answer
    return {
        "id": openai_completion_id(resp.get("id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": resp.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": openai_usage_dict(usage_of_anthropic(resp.get("usage"))),
    }


def _tool_input(arguments: object) -> Json:
    # Model output, not caller input: keep what the model said even when it is not an object.
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def openai_response_to_anthropic(resp: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion (first choice) as an Anthropic message."""
    resp = _require_dict(resp, "response")
    choices = resp.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content: list[Json] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    elif message.get("refusal"):
        content.append({"type": "text", "text": str(message["refusal"])})
    for call in _list(message.get("tool_calls")):
        if not isinstance(call, dict):
            continue
        fn = obj(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": anthropic_tool_id(call.get("id"), f"toolu_{len(content)}"),
                "name": fn.get("name") or "",
                "input": _tool_input(fn.get("arguments")),
            }
        )
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return {
        "id": anthropic_message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": resp.get("model") or "",
        "content": content,
        "stop_reason": stop_from_openai(finish) or "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage_dict(usage_of_openai(resp.get("usage"))),
    }
